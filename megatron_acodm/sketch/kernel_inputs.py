"""Seeded inputs on which the sketch kernels are checked against the torch reference, and how far
two results may differ: what the CPU tests (interpreted kernels), the GPU check and the kernel
benchmark share, so that all three look at the same cases."""

from __future__ import annotations

from typing import Optional

import torch

# A ragged case the interpreted tests and the GPU check share: 203 tokens (not a multiple of the
# 64-token tile), 40 probes (not a multiple of a probe tile), domain 0 about half of the tokens,
# domain 3 none.
RAGGED = dict(tokens=203, in_features=96, out_features=80, dim=40, num_domains=5)
RAGGED_DOMAIN_DRAW = (0, 0, 0, 1, 2, 4)
SEED = 1234


def inputs(
    tokens: int, in_features: int, out_features: int, dim: int, num_domains: int, dtype: torch.dtype, device: str,
    token_domain: Optional[torch.Tensor] = None,
):
    """x, delta, u, v, token_domain, num_domains for one layer's micro-batch; without a given
    `token_domain`, every domain but the last gets tokens at random."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(tokens, in_features, generator=generator).to(device, dtype)
    delta = torch.randn(tokens, out_features, generator=generator).to(device, dtype)
    u = (torch.randint(0, 2, (dim, out_features), generator=generator) * 2 - 1).to(device, dtype)
    v = (torch.randint(0, 2, (dim, in_features), generator=generator) * 2 - 1).to(device, dtype)
    if token_domain is None:
        token_domain = torch.randint(0, num_domains - 1, (tokens,), generator=generator)
    return x, delta, u, v, token_domain.to(device), num_domains


def ragged_inputs(dtype: torch.dtype, device: str):
    """`inputs` of the RAGGED case."""
    draw = torch.randint(0, len(RAGGED_DOMAIN_DRAW), (RAGGED["tokens"],), generator=torch.Generator().manual_seed(SEED))
    return inputs(**RAGGED, dtype=dtype, device=device, token_domain=torch.tensor(RAGGED_DOMAIN_DRAW)[draw])


def sketch_rows(count: int, columns: int, device: str) -> torch.Tensor:
    """`[count, columns]` random fp32 sketches, row 3 all zero (a domain half without tokens)."""
    sketches = torch.randn(count, columns, generator=torch.Generator().manual_seed(SEED))
    sketches[3] = 0.0
    return sketches.to(device)


def relative_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| over max |expected| (the plain difference where expected is all zero)."""
    difference = (got.float() - expected.float()).abs().max().item()
    scale = expected.float().abs().max().item()
    return difference / scale if scale > 0 else difference
