"""The LM loss of one micro-batch, with its per-domain loss sums and token counts packed alongside.

Megatron's schedule calls the loss function once per micro-batch on the last pipeline stage and
keeps what it returns third; the per-domain `[K, COLUMNS]` sums (loss, tokens, the sequences'
moments) ride there, so the step reduces everything with one all-reduce.
"""

from __future__ import annotations

import torch


# The columns of the per-domain sums. Beyond the loss sum and tokens, the moments of the
# sequences' own sums (s_i, n_i) give an evaluation's standard error (`evaluation.part_standard_errors`).
LOSS, TOKENS, SEQUENCES, LOSS_SQUARED, LOSS_TIMES_TOKENS, TOKENS_SQUARED = range(6)
COLUMNS = 6


def per_domain_sums(token_losses: torch.Tensor, loss_mask: torch.Tensor, domain_ids: torch.Tensor, num_domains: int) -> torch.Tensor:
    """`[K, COLUMNS]`: per domain, the masked sum of token losses, the number of masked-in tokens, and
    over its sequences with tokens: their count and the sums of s_i^2, s_i n_i and n_i^2."""
    mask = loss_mask.double()  # float64: the squared sums must survive the variance's subtraction
    loss, tokens = (token_losses.double() * mask).sum(dim=1), mask.sum(dim=1)
    per_sequence = torch.stack([loss, tokens, (tokens > 0).double(), loss * loss, loss * tokens, tokens * tokens], dim=1)
    packed = torch.zeros(num_domains, COLUMNS, dtype=torch.float64, device=token_losses.device)
    return packed.index_add_(0, domain_ids.to(token_losses.device), per_sequence)


def domain_loss_func(loss_mask: torch.Tensor, domain_ids: torch.Tensor, num_domains: int, token_losses: torch.Tensor):
    """Megatron's three-value loss contract: (loss sum, tokens, reduced) with per-domain sums."""
    packed = per_domain_sums(token_losses, loss_mask, domain_ids, num_domains)
    loss_sum, tokens = packed[:, LOSS].sum(), packed[:, TOKENS].sum()
    # Megatron's schedule divides the returned loss in place: hand it its own tensor.
    return loss_sum.clone(), tokens.to(torch.int), {"domain_sums": packed.detach()}
