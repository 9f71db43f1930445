"""Trains a tiny GPT for a few steps with the trainer's own setup at given parallel layouts; writes the numbers.

Launched by tests/e2e/test_parallel_gpt.py, as a single process (`python parallel_worker.py ...`) or
under `torchrun --nproc-per-node 2`. Each run in `--runs` (see `layout_args`) gets its arguments from
the trainer's `parse_args`, builds its model with `training.setup` (`initialize`, `build_model`),
loads the initial weights of its model family from a dist_checkpointing checkpoint saved by the
single process (`--save-checkpoints`), builds the optimizer and LR schedule (`build_optimizer`),
and then:

- evaluates the logits (gathered over tensor-parallel ranks) and the loss of a fixed global batch;
- takes STEPS optimizer steps with the trainer's `run_step` (its per-domain loss, over two domains);
- evaluates the loss of the fixed batch again after the last step.

Rank 0 writes `{run: {"losses", "grad_norms", "initial_eval_loss", "final_loss", "param_dtype"}}`
to `--out`; the last stage writes the logits to `<out>.<run>.logits.pt`.

Worker-local, because the trainer has nothing to measure them with: reading the initial weights
(the trainer's checkpoints also hold optimizer, mixer and data state) and the logits pass.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

from megatron_acodm.arguments import parse_args
from megatron_acodm.model import pad_vocab_size
from megatron_acodm.training import step
from megatron_acodm.training.batches import rank_micro_batches
from megatron_acodm.training.setup import build_model, build_optimizer, device, initialize

VOCAB = 512
STEPS = 3
NUM_DOMAINS = 2  # sequence i belongs to domain i % 2
# A run's command line, as a user would give it; 3 Adam steps, LR decaying (cosine) from 1e-3 to 1e-4, clipping at 0.5.
RUN_ARGV = [
    "--data-path", "unused", "--tokenizer-model", "unused", "--train-iters", str(STEPS),
    "--num-layers", "4", "--hidden-size", "64", "--ffn-hidden-size", "128", "--num-attention-heads", "4",
    "--seq-length", "32", "--hidden-dropout", "0", "--attention-dropout", "0",
    "--micro-batch-size", "2", "--global-batch-size", "8",
    "--lr", "1e-3", "--min-lr", "1e-4", "--weight-decay", "0.01", "--clip-grad", "0.5",
]
# Model families: (command line, settings the command line does not offer).
MODELS = {
    "llama": (
        ["--position-embedding-type", "rope", "--normalization", "RMSNorm", "--swiglu", "--num-query-groups", "2",
         "--untie-embeddings-and-output-weights"],
        {"add_bias_linear": False},
    ),
    "gpt": ([], {}),  # learned positions, LayerNorm, GeLU, biases, tied embeddings
}
LAYOUT_FLAGS = {"tp": "--tensor-model-parallel-size", "pp": "--pipeline-model-parallel-size",
                "distopt": "--use-distributed-optimizer", "bf16": "--bf16"}


def layout_args(spec: str) -> tuple[str, argparse.Namespace]:
    """The model family and the arguments of a run spec such as `tp=2`, `pp=2,vp=2`, `dp=2,distopt`,
    `model=gpt,pp=2` or `bf16` (`dp` is not an argument: the world size leaves it)."""
    items = dict(item.partition("=")[::2] for item in filter(None, spec.split(",")))
    unknown = set(items) - set(LAYOUT_FLAGS) - {"model", "vp", "dp"}
    if unknown:
        raise ValueError(f"unknown layout items {sorted(unknown)} in {spec!r}")
    family = items.get("model", "llama")
    model_argv, model_settings = MODELS[family]
    layout_argv = [part for key, value in items.items() if key in LAYOUT_FLAGS for part in (LAYOUT_FLAGS[key], value) if part]
    args = parse_args(RUN_ARGV + model_argv + layout_argv)
    assert args.data_parallel_size == int(items.get("dp", 1)), f"{spec}: the world leaves data-parallel size {args.data_parallel_size}"
    vars(args).update(model_settings, virtual_pipeline_model_parallel_size=int(items["vp"]) if "vp" in items else None)
    args.padded_vocab_size = pad_vocab_size(VOCAB, args.make_vocab_size_divisible_by, args.tensor_model_parallel_size)
    return family, args


def global_batches(args: argparse.Namespace, count: int) -> list[list[dict]]:
    """`count` global batches of samples as the blender gives them, the same on every rank."""
    generator = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(count):
        sequences = torch.randint(0, VOCAB, (args.global_batch_size, args.seq_length + 1), generator=generator)
        batches.append([
            {"tokens": sequence[:-1], "labels": sequence[1:], "position_ids": torch.arange(args.seq_length),
             # Leave labels divisible by 7 out of the loss, so that the mean really is a masked one.
             "loss_mask": (sequence[1:] % 7 != 0).float(), "domain_id": index % NUM_DOMAINS}
            for index, sequence in enumerate(sequences)
        ])
    return batches


def rank_batches(args: argparse.Namespace, samples: list[dict], dp_rank: int, dp_size: int) -> list[dict]:
    """This data-parallel rank's micro-batches of a global batch, as the trainer cuts and collates them."""
    domains = [sample["domain_id"] for sample in samples]
    return rank_micro_batches(lambda domain, index: samples[index], domains, list(range(len(samples))), args.micro_batch_size,
                              rank=dp_rank, size=dp_size)


def loss_of(outcome: step.StepOutcome) -> float:
    return float(outcome.domain_sums[:, 0].sum() / outcome.domain_sums[:, 1].sum())


def full_logits(model: list, args: argparse.Namespace, batches: list[dict]) -> torch.Tensor | None:
    """The full-vocabulary logits of every micro-batch at the last stage (None on other stages)."""

    def gathered(logits: torch.Tensor, non_loss_data: bool = True) -> torch.Tensor:  # the output is vocab-parallel
        return gather_from_tensor_model_parallel_region(logits).detach().clone()

    def logits_step(data_iterator, chunk):
        batch = next(data_iterator)
        return chunk(batch["tokens"], batch["position_ids"], None), gathered

    outputs = get_forward_backward_func()(
        forward_step_func=logits_step,
        data_iterator=[iter(batches) for _ in model],
        model=model,
        num_microbatches=len(batches),
        seq_length=args.seq_length,
        micro_batch_size=args.micro_batch_size,
        forward_only=True,
        collect_non_loss_data=True,
    )
    return torch.cat(outputs) if outputs else None


def load_initial_weights(model: list, checkpoint: str) -> None:
    # One load for all virtual stages: each sees only its own layers of the stacked tensors.
    sharded = {f"model{index}": chunk.module.sharded_state_dict() for index, chunk in enumerate(model)}
    state = dist_checkpointing.load(sharded, checkpoint)
    for index, chunk in enumerate(model):
        chunk.module.load_state_dict(state[f"model{index}"])


def run_layout(spec: str, checkpoints: str, out: str) -> dict:
    family, args = layout_args(spec)
    initialize(args)
    model = build_model(args)
    # Before the optimizer copies the weights into its fp32 main parameters.
    load_initial_weights(model, os.path.join(checkpoints, family))
    optimizer, scheduler = build_optimizer(args, model)
    dp_rank, dp_size = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    *train_batches, fixed = global_batches(args, STEPS + 1)
    fixed_batches = rank_batches(args, fixed, dp_rank, dp_size)
    logits = full_logits(model, args, rank_batches(args, fixed, 0, 1))  # every rank: the whole batch
    if logits is not None and parallel_state.get_tensor_model_parallel_rank() == 0 and dp_rank == 0:
        torch.save(logits.float(), f"{out}.{spec}.logits.pt")
    initial = step.run_step(model, fixed_batches, NUM_DOMAINS, device())
    outcomes = [
        step.run_step(model, rank_batches(args, samples, dp_rank, dp_size), NUM_DOMAINS, device(), optimizer, scheduler)
        for samples in train_batches
    ]
    final = step.run_step(model, fixed_batches, NUM_DOMAINS, device())
    assert all(outcome.update_successful for outcome in outcomes)
    parallel_state.destroy_model_parallel()
    return {
        "losses": [loss_of(outcome) for outcome in outcomes],
        "grad_norms": [outcome.grad_norm for outcome in outcomes],
        "initial_eval_loss": loss_of(initial),
        "final_loss": loss_of(final),
        "param_dtype": str(next(model[0].parameters()).dtype),
    }


def save_initial_checkpoints(checkpoints: str) -> None:
    """The initial weights of each model family, built in one process, for every layout to start from."""
    for family in MODELS:
        _, args = layout_args(f"model={family}")
        initialize(args)
        (model,) = build_model(args)
        folder = os.path.join(checkpoints, family)
        os.makedirs(folder)
        dist_checkpointing.save({"model0": model.module.sharded_state_dict()}, folder)
        parallel_state.destroy_model_parallel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", required=True, help="folder of one initial checkpoint per model family")
    parser.add_argument("--save-checkpoints", action="store_true", help="write them first (single process)")
    parser.add_argument("--runs", nargs="+", default=[])
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    if options.save_checkpoints:
        save_initial_checkpoints(options.checkpoints)
    results = {spec: run_layout(spec, options.checkpoints, options.out) for spec in options.runs}
    if dist.get_rank() == 0:
        with open(options.out, "w") as stream:
            json.dump(results, stream, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":  # dist_checkpointing's saver spawns a process that re-imports this file
    main()
