"""Command-line arguments: Megatron-LM's names and meanings for what this trainer supports, plus mixing.

Unknown arguments and contradictions fail at start with argparse's `error:` message and exit code 2,
before any process group or dataset is touched.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from typing import Optional, Sequence

from megatron_acodm.errors import report_error
from megatron_acodm.mixing.registry import add_mixer_arguments, unread_option


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--num-layers", type=int, default=2)
    group.add_argument("--hidden-size", type=int, default=128)
    group.add_argument("--ffn-hidden-size", type=int, default=None, help="default 4h, or 8h/3 rounded to 64 with --swiglu")
    group.add_argument("--num-attention-heads", type=int, default=4)
    group.add_argument("--num-query-groups", type=int, default=None, help="grouped-query attention; default: one per head")
    group.add_argument("--seq-length", type=int, default=256)
    group.add_argument("--max-position-embeddings", type=int, default=None, help="default --seq-length")
    group.add_argument("--position-embedding-type", choices=["learned_absolute", "rope"], default="learned_absolute")
    group.add_argument("--rotary-base", type=int, default=10000)
    group.add_argument("--rotary-percent", type=float, default=1.0, help="share of each head's channels that rotate (Pythia: 0.25)")
    group.add_argument("--normalization", choices=["LayerNorm", "RMSNorm"], default="LayerNorm")
    group.add_argument("--swiglu", action="store_true")
    group.add_argument("--untie-embeddings-and-output-weights", action="store_true")
    group.add_argument("--init-method-std", type=float, default=0.02)
    group.add_argument("--hidden-dropout", type=float, default=0.1)
    group.add_argument("--attention-dropout", type=float, default=0.1)
    group.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    group.add_argument("--bf16", action="store_true")
    group.add_argument("--fp16", action="store_true")
    # What megatron.core's model also reads but this command line does not offer: Megatron-LM's
    # defaults, defined here like every other setting, so that every Namespace this parser makes is
    # complete for model/provider.py. No run can change them (so no checkpoint differs in them);
    # code that builds a model without a command line, e.g. a test, may on its Namespace.
    parser.set_defaults(
        norm_epsilon=1e-5,
        add_bias_linear=True,
        add_qkv_bias=False,
        qk_layernorm=False,
        kv_channels=None,
        use_cpu_initialization=False,
        fp16_lm_cross_entropy=False,
        virtual_pipeline_model_parallel_size=None,  # training.setup builds one model chunk per virtual stage
    )


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--micro-batch-size", type=int, default=4)
    group.add_argument("--global-batch-size", type=int, default=None, help="default: micro batch x data-parallel size")
    group.add_argument("--train-iters", type=int, required=True)
    group.add_argument("--lr", type=float, default=3e-4)
    group.add_argument("--min-lr", type=float, default=0.0)
    group.add_argument("--lr-decay-style", choices=["constant", "linear", "cosine", "inverse-square-root"], default="cosine")
    group.add_argument("--lr-decay-iters", type=int, default=None, help="default --train-iters")
    group.add_argument("--lr-warmup-iters", type=int, default=0)
    group.add_argument("--weight-decay", type=float, default=0.01)
    group.add_argument("--adam-beta1", type=float, default=0.9)
    group.add_argument("--adam-beta2", type=float, default=0.999)
    group.add_argument("--adam-eps", type=float, default=1e-8)
    group.add_argument("--clip-grad", type=float, default=1.0)
    group.add_argument("--seed", type=int, default=1234)
    schedule = group.add_mutually_exclusive_group()
    schedule.add_argument(
        "--override-opt_param-scheduler", action="store_true",
        help="on resume, take the LR and weight-decay schedule from these arguments, not the checkpoint",
    )
    schedule.add_argument(
        "--use-checkpoint-opt_param-scheduler", action="store_true",
        help="on resume, keep the checkpoint's LR and weight-decay schedule whatever these arguments say",
    )


def _add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("parallelism")
    group.add_argument("--tensor-model-parallel-size", type=int, default=1)
    group.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    group.add_argument("--use-distributed-optimizer", action="store_true")
    group.add_argument("--sequence-parallel", action="store_true")


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data-path", nargs="+", required=True, help="a domains.json, or [w1] prefix1 [w2] prefix2 ...")
    group.add_argument("--split", default="969,30,1", help="train,valid,test document shares per domain")
    group.add_argument(
        "--target-data-path",
        nargs="+",
        default=None,
        help="target sets (a domains.json or prefixes, as --data-path): a few examples of the task to specialise to; "
        "their held-out loss is reported at every evaluation, and --mixer dga, --mixer importance and "
        "--mixing-objective target read them",
    )
    group.add_argument(
        "--target-split",
        default="50,50",
        help="steering,held-out shares of each target set's documents (split once, by a fixed seed)",
    )
    group.add_argument(
        "--min-samples-per-domain", type=int, default=None,
        help="samples every domain gets in every global batch, whatever its weight; the rest follows the weights; "
        "default: what the mixer's published method trains on, one micro-batch for acodm (no more than half the "
        "global batch in all), none for the others",
    )
    group.add_argument("--data-cache-path", default=None)
    group.add_argument("--tokenizer-type", default="SentencePieceTokenizer")
    group.add_argument("--tokenizer-model", default=None)
    group.add_argument("--vocab-size", type=int, default=None, help="check the tokenizer's vocabulary has this size")
    group.add_argument("--reset-position-ids", action="store_true")
    group.add_argument("--reset-attention-mask", action="store_true")
    group.add_argument("--eod-mask-loss", action="store_true")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("checkpoints and logging")
    group.add_argument("--save", default=None, help="checkpoint folder")
    group.add_argument("--load", default=None, help="resume from this checkpoint folder (its latest checkpoint)")
    group.add_argument(
        "--pretrained-checkpoint", default=None,
        help="when --load holds no checkpoint, start from the model weights of this folder's latest checkpoint "
        "(Megatron-LM's finetuning start: iteration 0, a new optimizer, LR schedule, mixer and data order)",
    )
    group.add_argument("--save-interval", type=int, default=None)
    group.add_argument("--exit-interval", type=int, default=None, help="exit after the iteration divisible by this")
    group.add_argument(
        "--exit-signal-handler", action="store_true",
        help="on SIGTERM or SIGINT, finish the step, save a checkpoint and exit (needs --save)",
    )
    group.add_argument("--remap-domains", action="store_true", help="resume although the domain set differs: mixer and blender restart")
    group.add_argument("--eval-interval", type=int, default=1000)
    group.add_argument("--eval-iters", type=int, default=10, help="global batches of held-out samples per evaluation")
    group.add_argument(
        "--skip-train", action="store_true",
        help="train nothing: evaluate the model of --load (or the initial model) once with --eval-iters, log it and exit",
    )
    group.add_argument("--log-interval", type=int, default=100)
    group.add_argument("--tensorboard-dir", default=None)
    group.add_argument(
        "--wandb-project", default=None,
        help="log the TensorBoard scalars to this Weights & Biases project too (`pip install wandb`; "
        "WANDB_MODE=offline keeps the run under --wandb-save-dir)",
    )
    group.add_argument("--wandb-exp-name", default=None, help="the run's name in the W&B project (needed with --wandb-project)")
    group.add_argument("--wandb-save-dir", default=None, help="where wandb keeps the run's files; default <save>/wandb or runs/wandb")
    group.add_argument("--metrics-path", default=None, help="JSONL of every log record; default <save>/metrics.jsonl or runs/metrics.jsonl")


def _add_sketch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("per-domain gradient sketches (built only for a mixer that reads them)")
    group.add_argument("--sketch-layers", default="top3", help="'topN' or relative depths in (0, 1], e.g. 0.5,0.75,1.0")
    group.add_argument("--sketch-dim", type=int, default=256, help="random rank-one probes per layer (k)")


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but the error is one line (no usage screen), and under torchrun only rank 0's."""

    def error(self, message: str):
        sys.exit(report_error(f"{self.prog}: error: {message} (see --help)"))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="pretrain_acodm.py",
        description="Megatron-Core GPT pretraining whose data mixture is decided online.",
        allow_abbrev=False,
    )
    _add_model_arguments(parser)
    _add_training_arguments(parser)
    _add_parallel_arguments(parser)
    _add_data_arguments(parser)
    _add_run_arguments(parser)
    _add_sketch_arguments(parser)
    add_mixer_arguments(parser)
    return parser


@functools.lru_cache(maxsize=None)
def _defaults() -> dict:
    """Every option's default, by name (what an option left out of the command line holds)."""
    parser = build_parser()
    return vars(parser.parse_args(["--data-path", "-", "--train-iters", "1"]))


def _fill_defaults(args: argparse.Namespace, world_size: int) -> None:
    args.world_size = world_size
    model_parallel = args.tensor_model_parallel_size * args.pipeline_model_parallel_size
    args.data_parallel_size = world_size // model_parallel if model_parallel > 0 and world_size % model_parallel == 0 else 0
    if args.ffn_hidden_size is None:
        args.ffn_hidden_size = int(4 * args.hidden_size * 2 / 3 / 64) * 64 if args.swiglu else 4 * args.hidden_size
    if args.num_query_groups is None:
        args.num_query_groups = args.num_attention_heads
    if args.max_position_embeddings is None:
        args.max_position_embeddings = args.seq_length
    if args.global_batch_size is None:
        args.global_batch_size = args.micro_batch_size * max(args.data_parallel_size, 1)
    if args.lr_decay_iters is None:
        args.lr_decay_iters = args.train_iters
    if args.metrics_path is None:
        args.metrics_path = os.path.join(args.save or "runs", "metrics.jsonl")
    if args.wandb_project and args.wandb_save_dir is None:
        args.wandb_save_dir = os.path.join(args.save or "runs", "wandb")


# A --split as Megatron-LM writes it: up to three shares, train,valid,test (megatron.core keeps
# whatever numbers it finds in the text, so "90,abc" would silently mean 90,0,0).
_SPLIT = re.compile(r"^\s*\d+(\.\d*)?(\s*[,/]\s*\d+(\.\d*)?){0,2}\s*$")
# Sizes that must be whole numbers >= 1 before anything is divided by them.
_POSITIVE = (
    "tensor_model_parallel_size", "pipeline_model_parallel_size", "num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "ffn_hidden_size", "seq_length",
    "max_position_embeddings", "micro_batch_size", "global_batch_size", "train_iters",
)


def _split_problem(split: str) -> Optional[str]:
    if not _SPLIT.match(split) or not sum(float(share) for share in re.split(r"[,/]", split)) > 0:
        return f"--split {split!r}: give up to three shares train,valid,test with a positive sum, e.g. 969,30,1 (100 trains on everything)"
    return None


def _contradictions(args: argparse.Namespace) -> Optional[str]:
    """The first contradiction among the arguments, as a Megatron-style message, or None."""
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    too_small = next((name for name in _POSITIVE if getattr(args, name) < 1), None)
    if too_small:
        return f"--{too_small.replace('_', '-')} ({getattr(args, too_small)}) must be >= 1"
    checks = [
        (_split_problem(args.split) is not None, _split_problem(args.split)),
        (args.bf16 and args.fp16, "--bf16 and --fp16 are mutually exclusive"),
        (args.data_parallel_size == 0, f"world size ({args.world_size}) is not divisible by tensor ({tp}) x pipeline ({pp}) parallel size"),
        (args.num_layers % pp != 0, f"--num-layers ({args.num_layers}) must be divisible by --pipeline-model-parallel-size ({pp})"),
        (args.num_attention_heads % tp != 0, f"--num-attention-heads ({args.num_attention_heads}) must be divisible by --tensor-model-parallel-size ({tp})"),
        (args.num_query_groups % tp != 0, f"--num-query-groups ({args.num_query_groups}) must be divisible by --tensor-model-parallel-size ({tp})"),
        (args.num_attention_heads % args.num_query_groups != 0, f"--num-attention-heads ({args.num_attention_heads}) must be divisible by --num-query-groups ({args.num_query_groups})"),
        (args.hidden_size % args.num_attention_heads != 0, f"--hidden-size ({args.hidden_size}) must be divisible by --num-attention-heads ({args.num_attention_heads})"),
        (args.position_embedding_type == "learned_absolute" and args.seq_length > args.max_position_embeddings,
         f"--seq-length ({args.seq_length}) exceeds --max-position-embeddings ({args.max_position_embeddings})"),
        (args.global_batch_size % (args.micro_batch_size * max(args.data_parallel_size, 1)) != 0,
         f"--global-batch-size ({args.global_batch_size}) must be divisible by --micro-batch-size ({args.micro_batch_size}) "
         f"x data-parallel size ({args.data_parallel_size})"),
        (not args.lr > 0, f"--lr ({args.lr}) must be positive"),
        (args.min_lr < 0, f"--min-lr ({args.min_lr}) must be >= 0"),
        (0 < args.lr_decay_iters <= args.lr_warmup_iters, f"--lr-warmup-iters ({args.lr_warmup_iters}) must be below --lr-decay-iters ({args.lr_decay_iters})"),
        (args.min_lr > args.lr, f"--min-lr ({args.min_lr}) exceeds --lr ({args.lr})"),
        (args.save_interval is not None and args.save is None, "--save-interval needs --save"),
        (args.save_interval is not None and args.save_interval < 1, "--save-interval must be >= 1"),
        (args.eval_interval < 1 or args.log_interval < 1, "--eval-interval and --log-interval must be >= 1"),
        (args.min_samples_per_domain is not None and args.min_samples_per_domain < 0, f"--min-samples-per-domain ({args.min_samples_per_domain}) must be >= 0"),
        (args.eval_iters < 0, f"--eval-iters ({args.eval_iters}) must be >= 0 (0 turns evaluation off)"),
        (args.skip_train and args.eval_iters == 0, "--skip-train only evaluates: give --eval-iters > 0"),
        (args.exit_signal_handler and args.save is None, "--exit-signal-handler needs --save (where the checkpoint goes)"),
        (args.sequence_parallel and tp == 1, "--sequence-parallel needs --tensor-model-parallel-size > 1"),
        (args.sketch_dim < 1, "--sketch-dim must be >= 1"),
        (bool(args.wandb_project) and not args.wandb_exp_name, "--wandb-project needs --wandb-exp-name (the run's name in the project)"),
        (not args.wandb_project and args.wandb_exp_name is not None, "--wandb-exp-name names a W&B run: add --wandb-project, or drop it"),
        (not args.wandb_project and args.wandb_save_dir is not None, "--wandb-save-dir is for a W&B run: add --wandb-project, or drop it"),
        (args.tokenizer_model is None, "--tokenizer-model is required (the tokenizer the corpus was made with)"),
    ]
    message = next((message for failed, message in checks if failed), None) or unread_option(args, _defaults())
    if message is None and args.sequence_parallel:
        from megatron_acodm.model import norm_supports_sequence_parallel  # imports megatron.core: only when asked

        if not norm_supports_sequence_parallel():
            message = (
                "--sequence-parallel needs Transformer Engine or apex (megatron.core's plain torch LayerNorm "
                "cannot run sequence-parallel); install one of them or drop --sequence-parallel"
            )
    return message


def argument_names(group: str) -> list[str]:
    """The arguments of one group of the command line ("model", "parallelism", ...), by name."""
    titled = {entry.title: entry for entry in build_parser()._action_groups}
    return [action.dest for action in titled[group]._group_actions]


def command_line(values: dict) -> list[str]:
    """The options that give `values` (argument name -> value, e.g. a checkpoint's saved arguments):
    parse_args' inverse for the names it knows; a None value and a false flag are left out."""
    options = {action.dest: action for action in build_parser()._actions if action.option_strings}
    words = []
    for name, value in values.items():
        action = options[name]
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            words += [flag] if value else []
        elif value is not None:
            words += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return words


def parse_args(argv: Optional[Sequence[str]] = None, world_size: Optional[int] = None) -> argparse.Namespace:
    """Parse and check the arguments; `world_size` defaults to torchrun's WORLD_SIZE (1 without torchrun)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _fill_defaults(args, world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1")))
    message = _contradictions(args)
    if message:
        parser.error(message)
    return args
