"""What a checkpoint holds besides tensors, and resuming from it: checked first, then restored.

Every argument that a checkpoint cannot follow (the model's shape, the batch the blender plans,
the optimizer's kind, the data behind a domain's name) is compared before any tensor is read, so a
mismatch is one message naming the argument, the checkpoint's value and the fix. The LR schedule
follows Megatron-LM: a change is refused unless `--override-opt_param-scheduler` (take the
arguments) or `--use-checkpoint-opt_param-scheduler` (keep the checkpoint's) says which wins.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Optional

from megatron_acodm.data import DynamicBlender
from megatron_acodm.errors import UserError

# Arguments that fix the model's tensors: (argument, flag, what a change breaks).
_MODEL_SHAPE = [
    ("num_layers", "--num-layers", "the model's shape"),
    ("hidden_size", "--hidden-size", "the model's shape"),
    ("ffn_hidden_size", "--ffn-hidden-size", "the model's shape"),
    ("num_attention_heads", "--num-attention-heads", "the model's shape"),
    ("num_query_groups", "--num-query-groups", "the model's shape"),
    ("max_position_embeddings", "--max-position-embeddings", "the model's shape"),
    ("position_embedding_type", "--position-embedding-type", "the model's shape"),
    ("normalization", "--normalization", "the model's shape"),
    ("swiglu", "--swiglu", "the model's shape"),
    ("untie_embeddings_and_output_weights", "--untie-embeddings-and-output-weights", "the model's shape"),
    ("padded_vocab_size", "the padded vocabulary (--tokenizer-model, --make-vocab-size-divisible-by, "
     "--tensor-model-parallel-size)", "the model's shape"),
]

# Arguments a checkpoint fixes for resuming: the model's shape, the planned samples, the optimizer state's layout.
_FIXED_ARGUMENTS = [
    ("seq_length", "--seq-length", "the samples the blender has planned"),
    ("global_batch_size", "--global-batch-size", "the samples the blender has planned"),
    ("seed", "--seed", "the order the blender draws samples in"),
    *_MODEL_SHAPE,
    ("use_distributed_optimizer", "--use-distributed-optimizer", "the optimizer state's layout"),
]

# The LR schedule's fields in megatron.core's OptimizerParamScheduler state, and their arguments.
_SCHEDULE_FIELDS = [
    ("max_lr", "--lr"),
    ("min_lr", "--min-lr"),
    ("lr_warmup_steps", "--lr-warmup-iters"),
    ("lr_decay_steps", "--lr-decay-iters (default --train-iters)"),
    ("lr_decay_style", "--lr-decay-style"),
    ("start_wd", "--weight-decay"),
]


def run_state(iteration: int, args: Namespace, scheduler, mixer, blender: DynamicBlender) -> dict:
    """Everything but tensors and RNG that resuming at `iteration` needs."""
    return {
        "iteration": iteration,
        "domains": list(blender.names),
        "domain_tokens": blender.domain_tokens.tolist(),
        "mixer_name": args.mixer,
        "mixer": mixer.state_dict(),
        "blender": blender.state_dict(),
        "scheduler": scheduler.state_dict(),
        "args": {key: value for key, value in vars(args).items() if isinstance(value, (int, float, str, bool, list, type(None)))},
    }


def _describe(flag: str, value) -> str:
    return flag if value is True else f"no {flag}" if value is False else f"{flag} {value}"


def _back_to(flag: str, saved, verb: str) -> str:
    return f"add {flag}" if saved is True else f"drop {flag}" if saved is False else f"{verb} with {flag} {saved}"


def _first_difference(path: str, saved_args: dict, args: Namespace, fixed, verb: str, advice: str = "") -> None:
    """Refuse the first argument of `fixed` (argument, flag, what) whose value differs from the checkpoint's."""
    for name, flag, what in fixed:
        saved, current = saved_args.get(name), getattr(args, name)
        if saved is not None and saved != current:
            raise UserError(
                f"{path}: saved with {_describe(flag, saved)}, this run has {_describe(flag, current)}, which "
                f"changes {what}; {_back_to(flag, saved, verb)}{advice}"
            )


def check_same_model_shape(path: str, saved_args: dict, args: Namespace) -> None:
    """Refuse a checkpoint (saved with `saved_args`) whose model tensors have another shape than `args` builds."""
    _first_difference(path, saved_args, args, _MODEL_SHAPE, "run")


def check_resumable(path: str, state: dict, args: Namespace, scheduler, blender: DynamicBlender) -> None:
    """Refuse, with one message naming argument and fix, a run that cannot continue `state`."""
    advice = f", or start a new run (another --save, without --load {args.load})"
    _first_difference(path, state["args"], args, _FIXED_ARGUMENTS, "resume", advice)
    change = _data_change(state, blender)
    if change and not args.remap_domains:
        raise UserError(
            f"{path}: {change}; resume on the data the run was trained on, or pass --remap-domains to "
            f"keep the model and optimizer and restart the mixer and blender on this data"
        )
    if args.override_opt_param_scheduler or args.use_checkpoint_opt_param_scheduler:
        return
    ours = scheduler.state_dict()
    for field, flag in _SCHEDULE_FIELDS:
        if state["scheduler"][field] != ours[field]:
            raise UserError(
                f"{path}: the checkpoint's LR schedule has {flag} {state['scheduler'][field]}, these arguments "
                f"give {ours[field]}; pass --override-opt_param-scheduler to follow the arguments or "
                f"--use-checkpoint-opt_param-scheduler to keep the checkpoint's schedule"
            )


def _data_change(state: dict, blender: DynamicBlender) -> Optional[str]:
    """How --data-path differs from the data the checkpoint was trained on, or None."""
    if state["domains"] != blender.names:
        return f"trained on domains {state['domains']}, this run has {blender.names}"
    # Checkpoints written before the token counts were recorded are compared by names alone.
    for name, saved, current in zip(blender.names, state.get("domain_tokens", []), blender.domain_tokens.tolist()):
        if saved != current:
            return (
                f"domain {name!r} held {saved} tokens when the checkpoint was written, --data-path now "
                f"gives it {current}: the same names hold other data"
            )
    return None


def restore(state: dict, args: Namespace, scheduler, mixer, blender: DynamicBlender, log) -> int:
    """Bring the scheduler, mixer and blender to the checkpoint's state; return its iteration."""
    scheduler.load_state_dict(state["scheduler"])
    if _data_change(state, blender):  # only with --remap-domains: check_resumable refuses it otherwise
        log(f"--remap-domains: the mixer and blender start afresh on {blender.names}")
        blender.next_step = state["iteration"]
        return state["iteration"]
    blender.load_state_dict(state["blender"])
    if state["mixer_name"] == args.mixer:
        mixer.load_state_dict(state["mixer"])
    else:
        log(f"the checkpoint's mixer was {state['mixer_name']}; --mixer {args.mixer} starts afresh")
    return state["iteration"]
