"""The LM loss of one micro-batch, with its per-domain loss sums and token counts packed alongside.

Megatron's schedule calls the loss function once per micro-batch on the last pipeline stage and
keeps what it returns third; the per-domain `[K, 2]` (loss sum, tokens) rides there, so the step
reduces everything with one all-reduce.
"""

from __future__ import annotations

import torch


def per_domain_sums(token_losses: torch.Tensor, loss_mask: torch.Tensor, domain_ids: torch.Tensor, num_domains: int) -> torch.Tensor:
    """`[K, 2]`: per domain, the masked sum of token losses and the number of masked-in tokens."""
    mask = loss_mask.float()
    per_sequence = torch.stack([(token_losses.float() * mask).sum(dim=1), mask.sum(dim=1)], dim=1)
    packed = torch.zeros(num_domains, 2, dtype=torch.float32, device=token_losses.device)
    return packed.index_add_(0, domain_ids.to(token_losses.device), per_sequence)


def domain_loss_func(loss_mask: torch.Tensor, domain_ids: torch.Tensor, num_domains: int, token_losses: torch.Tensor):
    """Megatron's three-value loss contract: (loss sum, tokens, reduced) with per-domain sums."""
    packed = per_domain_sums(token_losses, loss_mask, domain_ids, num_domains)
    loss_sum, tokens = packed[:, 0].sum(), packed[:, 1].sum()
    # Megatron's schedule divides the returned loss in place: hand it its own tensor.
    return loss_sum.clone(), tokens.to(torch.int), {"domain_sums": packed.detach()}
