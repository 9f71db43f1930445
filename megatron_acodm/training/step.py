"""One global step: Megatron's schedule over this rank's micro-batches, one all-reduce, the update.

The loss function returns each micro-batch's per-domain sums (`loss.COLUMNS`); the last pipeline stage adds
them up. With the gradient sketch, the layer norms and the layer drifts (`training.signals`) a mixer
may ask for, they travel in a single all-reduce over the whole world, where every rank adds only its
own part (the losses: the last stage's first tensor-parallel rank), so every rank gets the same
global signals and its mixer decides the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional, Sequence

import numpy
import torch

from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_acodm.training.loss import COLUMNS, domain_loss_func
from megatron_acodm.training.signals import WeightDrift, layer_weight_norm_squares
from megatron_acodm.training.target_pass import sketch_target_gradient


@dataclass
class StepOutcome:
    domain_sums: numpy.ndarray  # [K, loss.COLUMNS]: loss sum, tokens and sequence moments per domain, over the global batch
    grad_norm: Optional[float] = None
    update_successful: bool = True
    sketch: Optional[torch.Tensor] = None  # [2K, k] gradient sketch of the domains' halves, summed over the world
    segment_tokens: Optional[numpy.ndarray] = None  # [2K] loss-mask tokens of each sketch row, over the global batch
    layer_norms: Optional[numpy.ndarray] = None  # [L] Frobenius norms of the chosen linear_fc2 weights
    layer_drifts: Optional[numpy.ndarray] = None  # [L] ||W - W_0|| of the drift's linear_fc2 weights


def _forward_step(num_domains: int, device: torch.device, sketcher, data_iterator, model):
    batch = {name: tensor.to(device, non_blocking=True) for name, tensor in next(data_iterator).items()}
    if sketcher is not None:
        sketcher.set_micro_batch_segments(batch["sketch_segments"])
    token_losses = model(batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"])
    return token_losses, partial(domain_loss_func, batch["loss_mask"], batch["domain_ids"], num_domains)


def _counts_here() -> bool:
    """Whether this rank adds its data-parallel replica's losses and token counts to the world's sum:
    one rank per replica, the last stage's first tensor-parallel rank (the one that has the losses)."""
    return parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0


def _local_domain_sums(losses_reduced: list, num_domains: int, device: torch.device) -> torch.Tensor:
    total = torch.zeros(num_domains, COLUMNS, dtype=torch.float64, device=device)
    if _counts_here():
        for reduced in losses_reduced:
            total += reduced["domain_sums"].to(device, torch.float64)
    return total


def _local_segment_tokens(micro_batch_list: list[dict], num_segments: int, device: torch.device) -> torch.Tensor:
    """This rank's part of the loss-mask tokens of each sketch row (a mean gradient divides by them)."""
    total = torch.zeros(num_segments, dtype=torch.float64)
    if _counts_here():
        for batch in micro_batch_list:
            total.index_add_(0, batch["sketch_segments"], batch["loss_mask"].sum(dim=-1).double())
    return total.to(device)


def _sum_over_world(parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """One all-reduce for every signal of the step: pack, sum, unpack."""
    packed = torch.cat([part.reshape(-1).to(torch.float64) for part in parts])
    torch.distributed.all_reduce(packed)
    return [chunk.reshape(part.shape) for chunk, part in zip(packed.split([part.numel() for part in parts]), parts)]


def run_step(
    model,
    micro_batch_list: list[dict],
    num_domains: int,
    device: torch.device,
    optimizer=None,
    scheduler=None,
    sketcher=None,
    norm_layers: Optional[Sequence[int]] = None,
    drift: Optional[WeightDrift] = None,
    target_batches: Optional[list[dict]] = None,
) -> StepOutcome:
    """Forward (and, with an optimizer, backward and update) over the micro-batches of one global
    step. `sketcher` adds the step's gradient sketch, `norm_layers` the weight norms of those layers,
    `drift` the distances of its layers' weights from its W_0, `target_batches` the target's rows of
    the sketch (`training.target_pass`), measured first."""
    forward_only = optimizer is None
    if not forward_only:
        for chunk in model:
            chunk.zero_grad_buffer()
        optimizer.zero_grad()
    # Norms and drifts describe the weights that produced this step's losses: read them before the update.
    norm_squares = None if norm_layers is None else layer_weight_norm_squares(model, norm_layers, device)
    drift_squares = None if drift is None else drift.squares(model, device)
    micro_batch_size, seq_length = micro_batch_list[0]["tokens"].shape
    if target_batches:
        sketch_target_gradient(model, target_batches, sketcher, len(micro_batch_list), micro_batch_size, device)
    losses_reduced = get_forward_backward_func()(
        forward_step_func=partial(_forward_step, num_domains, device, sketcher),
        # One iterator per model chunk (virtual pipeline stages), each over the same micro-batches.
        data_iterator=[iter(micro_batch_list) for _ in model],
        model=model,
        num_microbatches=len(micro_batch_list),
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
    )
    parts = [_local_domain_sums(losses_reduced, num_domains, device)]
    if sketcher is not None:
        sketched = micro_batch_list + (target_batches or [])
        parts += [sketcher.step_sketches(), _local_segment_tokens(sketched, sketcher.num_segments, device)]
    if norm_squares is not None:
        parts.append(norm_squares)
    if drift_squares is not None:
        parts.append(drift_squares)
    reduced = _sum_over_world(parts)
    outcome = StepOutcome(reduced.pop(0).cpu().numpy())
    if sketcher is not None:
        outcome.sketch = reduced.pop(0).float()
        outcome.segment_tokens = reduced.pop(0).cpu().numpy()
    if norm_squares is not None:
        outcome.layer_norms = reduced.pop(0).sqrt().cpu().numpy()
    if drift_squares is not None:
        outcome.layer_drifts = reduced.pop(0).sqrt().cpu().numpy()
    if not forward_only:
        outcome.update_successful, grad_norm, _ = optimizer.step()
        outcome.grad_norm = None if grad_norm is None else float(grad_norm)
        if outcome.update_successful:
            scheduler.step(increment=1)
    return outcome
