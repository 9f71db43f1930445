"""The target pass: the steering examples' gradient sketch, measured without touching training.

On the steps a mixer asks for it (`Mixer.signals_wanted` names TARGET_GRADIENT), before the
step's own forward and backward, each rank runs its share of a batch of steering examples
(`TargetSets.steering_batch`) through the model and adds their sketch to the rows after the
domains' (the target's two halves, `sketch.segments`), so the step's one all-reduce carries it with
the domains' rows and every rank's mixer reads the same `<g_k, g_target>`. Training stays as it
would be without the pass:

- the gradient is taken with `torch.autograd.grad` with respect to the sketched layers' outputs
  only: autograd runs just the nodes between the loss and those outputs, so no parameter's
  gradient accumulator runs, and `.grad`, `main_grad`, DDP's bucket hooks and the optimizer never
  see it (fused weight-gradient accumulation, which writes `main_grad` inside the layers' own
  backward, is refused);
- the model runs in eval mode, so dropout draws no random numbers;
- the batch is a pure function of the step: the blender, its data order and its state are untouched.

The per-token scale is the training step's: Megatron's schedule divides each micro-batch's loss
sum by its tokens and by the number of micro-batches, and the loss scale multiplies it; a target
token's gradient gets the same factor, so the target's rows compare with the domains' like for like.
"""

from __future__ import annotations

import numpy
import torch

from megatron_acodm.data.targets import TargetSets
from megatron_acodm.errors import UserError
from megatron_acodm.sketch import HALVES, first_target_row
from megatron_acodm.training.batches import rank_micro_batches


def steering_batch_size(targets: TargetSets, global_batch_size: int, data_parallel_size: int) -> int:
    """Samples per target pass: a global batch, or every steering sample when there are fewer,
    rounded down so that each data-parallel rank gets as many; at least two (one per half)."""
    size = min(global_batch_size, targets.steering_samples) // data_parallel_size * data_parallel_size
    if size < max(HALVES, data_parallel_size):
        raise UserError(
            f"--target-data-path: the steering examples of {targets.names} make {targets.steering_samples} samples; "
            f"the target gradient needs at least {max(HALVES, data_parallel_size)} (two halves, one share per "
            f"data-parallel rank): give more examples, lower --seq-length, or steer with more (--target-split)"
        )
    return size


def check_target_pass_supported(config, pipeline_parallel_size: int, what: str) -> None:
    """Refuse, at start, the layouts under which the pass could not run or could touch training."""
    if pipeline_parallel_size > 1:
        raise UserError(
            f"{what} needs --pipeline-model-parallel-size 1: its target pass runs the model outside the "
            f"pipeline schedule; use tensor or data parallelism"
        )
    if getattr(config, "gradient_accumulation_fusion", False):
        raise UserError(
            f"{what} cannot run with fused weight-gradient accumulation: the layers' backward would add the "
            f"target's gradient to main_grad; turn gradient accumulation fusion off"
        )


def target_micro_batches(
    targets: TargetSets, pass_index: int, size: int, num_domains: int, dp_rank: int, dp_size: int, micro_batch_size: int
) -> list[dict]:
    """This rank's micro-batches of the `pass_index`-th target pass, each sequence tagged with its
    sketch row (the target's first row after the `num_domains` domains', plus its half)."""
    set_ids, sample_ids = targets.steering_batch(pass_index, size)
    rows = first_target_row(num_domains) + numpy.arange(size) % HALVES
    return rank_micro_batches(targets.steering_sample, set_ids, sample_ids, micro_batch_size, rank=dp_rank, size=dp_size, sketch_segments=rows)


def sketch_target_gradient(model, batches: list[dict], sketcher, training_micro_batches: int, micro_batch_size: int, device) -> None:
    """Add the target batches' gradient sketch to `sketcher`'s rows (see the module's docstring)."""
    (chunk,) = model  # one chunk: the pass is refused under pipeline parallelism
    chunk.eval()
    try:
        for batch in batches:
            batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
            sketcher.set_micro_batch_segments(batch["sketch_segments"])
            with sketcher.capturing_outputs() as outputs:
                token_losses = chunk(batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"])
            mask = batch["loss_mask"].float()
            # The schedule's factor for a full micro-batch of such sequences: 1 / (tokens * micro-batches).
            tokens_per_sequence = torch.clamp(mask.sum() / mask.shape[0], min=1.0)
            loss = (token_losses.float() * mask).sum() / (tokens_per_sequence * micro_batch_size * training_micro_batches)
            if chunk.config.grad_scale_func is not None:
                loss = chunk.config.grad_scale_func(loss)
            torch.autograd.grad(loss, outputs)
    finally:
        chunk.train()
