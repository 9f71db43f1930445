"""The sketch math in plain torch: the definition the Triton kernels are tested against.

For a linear layer `y = W x` a token's weight gradient is `delta_t x_t^T`; a rank-one probe
`u_j v_j^T` reads it as `(u_j . delta_t)(v_j . x_t)`. Summed over a domain's tokens that is
`s_j = u_j^T G v_j`, and `<s_a, s_b> / k` estimates `<G_a, G_b>` without bias.
"""

from __future__ import annotations

import torch


def project_and_segment_sum(
    x: torch.Tensor,
    delta: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    token_domain: torch.Tensor,
    num_domains: int,
) -> torch.Tensor:
    """`[num_domains, k]` fp32: per domain, `sum_t (u_j . delta_t)(v_j . x_t)` over its tokens.

    x `[T, n]` (layer input), delta `[T, m]` (output gradient), u `[k, m]`, v `[k, n]`,
    token_domain `[T]` int64 in `[0, num_domains)`. Computed in fp32 whatever the input dtype.
    """
    x_projected = x.float() @ v.float().T
    delta_projected = delta.float() @ u.float().T
    sketch = torch.zeros(num_domains, u.shape[0], dtype=torch.float32, device=x.device)
    return sketch.index_add_(0, token_domain.to(x.device), x_projected * delta_projected)


def gram(sketches: torch.Tensor) -> torch.Tensor:
    """The estimated Gram matrix `S S^T / k` `[K, K]`: entry (a, b) estimates `<G_a, G_b>`."""
    sketches = sketches.float()
    return sketches @ sketches.T / sketches.shape[1]
