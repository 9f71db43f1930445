"""One global step: Megatron's schedule over this rank's micro-batches, one all-reduce, the update.

The loss function returns each micro-batch's per-domain `[K, 2]` sums; the last pipeline stage adds
them up, and a single all-reduce over the whole world (where only the last stage's first
tensor-parallel rank contributes) gives every rank the global per-domain sums, so every rank's
mixer sees the same signals and decides the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy
import torch

from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_acodm.training.loss import domain_loss_func


@dataclass
class StepOutcome:
    domain_sums: numpy.ndarray  # [K, 2]: loss sum and tokens per domain, over the global batch
    grad_norm: Optional[float] = None
    update_successful: bool = True

    @property
    def tokens(self) -> float:
        return float(self.domain_sums[:, 1].sum())

    @property
    def lm_loss(self) -> float:
        return float(self.domain_sums[:, 0].sum() / max(self.tokens, 1.0))


def _forward_step(num_domains: int, device: torch.device, data_iterator, model):
    batch = {name: tensor.to(device, non_blocking=True) for name, tensor in next(data_iterator).items()}
    token_losses = model(
        batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"]
    )
    return token_losses, partial(domain_loss_func, batch["loss_mask"], batch["domain_ids"], num_domains)


def _global_domain_sums(losses_reduced: list, num_domains: int, device: torch.device) -> numpy.ndarray:
    contributes = parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0
    total = torch.zeros(num_domains, 2, dtype=torch.float64, device=device)
    if contributes:
        for reduced in losses_reduced:
            total += reduced["domain_sums"].to(device, torch.float64)
    torch.distributed.all_reduce(total)
    return total.cpu().numpy()


def run_step(model, micro_batch_list: list[dict], args, num_domains: int, device: torch.device, optimizer=None, scheduler=None) -> StepOutcome:
    """Forward (and, with an optimizer, backward and update) over the micro-batches of one global step."""
    forward_only = optimizer is None
    if not forward_only:
        for chunk in model:
            chunk.zero_grad_buffer()
        optimizer.zero_grad()
    losses_reduced = get_forward_backward_func()(
        forward_step_func=partial(_forward_step, num_domains, device),
        data_iterator=iter(micro_batch_list),
        model=model,
        num_microbatches=len(micro_batch_list),
        seq_length=args.seq_length,
        micro_batch_size=args.micro_batch_size,
        forward_only=forward_only,
    )
    outcome = StepOutcome(_global_domain_sums(losses_reduced, num_domains, device))
    if not forward_only:
        outcome.update_successful, grad_norm, _ = optimizer.step()
        outcome.grad_norm = None if grad_norm is None else float(grad_norm)
        if outcome.update_successful:
            scheduler.step(increment=1)
    return outcome
