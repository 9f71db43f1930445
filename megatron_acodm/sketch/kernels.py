"""Triton kernels for the sketch math of `reference.py` (same signatures, same results up to fp32 order).

On a machine without a GPU they run only under `TRITON_INTERPRET=1`, which Triton reads when a
kernel is defined: set it before this module is imported.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Untuned starting points (no GPU was at hand to tune them); every tile edge is >= 16, as tl.dot needs.
_TOKENS_PER_TILE = 64
_FEATURES_PER_STEP = 64
_MAX_PROBES_PER_TILE = 64
_DOMAINS_PER_TILE = 16
_SKETCH_COLUMNS_PER_STEP = 64
# A global that a kernel reads must be a constexpr.
# The interpreter multiplies bf16 operands of tl.dot as their raw bits (triton-lang/triton#11584;
# its docs: cast bf16 to fp32 first). Upcasting there changes nothing: a product of two bf16 values
# is exact in fp32, and the GPU path accumulates in fp32 too.
_UPCAST_DOT_OPERANDS = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _project_tile(
    rows_ptr, probes_ptr, tokens, probes, token_ok, probe_ok, num_features,
    stride_row_token, stride_row_feature, stride_probe, stride_probe_feature,
    TOKENS: tl.constexpr, PROBES: tl.constexpr, FEATURES: tl.constexpr, UPCAST: tl.constexpr,
):
    """`[TOKENS, PROBES]` fp32: the tile's rows (x or delta) projected on the tile's probes (v or u)."""
    projected = tl.zeros((TOKENS, PROBES), dtype=tl.float32)
    for start in range(0, num_features, FEATURES):
        features = start + tl.arange(0, FEATURES)
        feature_ok = features < num_features
        rows = tl.load(
            rows_ptr + tokens[:, None] * stride_row_token + features[None, :] * stride_row_feature,
            mask=token_ok[:, None] & feature_ok[None, :],
            other=0.0,
        )
        probe_columns = tl.load(
            probes_ptr + features[:, None] * stride_probe_feature + probes[None, :] * stride_probe,
            mask=feature_ok[:, None] & probe_ok[None, :],
            other=0.0,
        )
        if UPCAST:
            rows = rows.to(tl.float32)
            probe_columns = probe_columns.to(tl.float32)
        # bf16/fp16 go to the tensor cores with fp32 accumulation; fp32 stays exact ("ieee", not tf32).
        projected = tl.dot(rows, probe_columns, projected, input_precision="ieee")
    return projected


@triton.jit
def _project_and_segment_sum_kernel(
    x_ptr, delta_ptr, u_ptr, v_ptr, domain_ptr, partial_ptr,
    num_tokens, in_features, out_features, num_probes, num_domains,
    stride_x_token, stride_x_feature, stride_delta_token, stride_delta_feature,
    stride_u_probe, stride_u_feature, stride_v_probe, stride_v_feature,
    TOKENS: tl.constexpr, PROBES: tl.constexpr, FEATURES: tl.constexpr, UPCAST: tl.constexpr,
):
    program = tl.program_id(0)
    probe_tiles = tl.cdiv(num_probes, PROBES)
    # The probe tiles of one token tile are neighbouring programs, so they run side by side and
    # their re-reads of the same x and delta rows should come from L2, leaving one pass over x and
    # delta in HBM (not measured: no GPU was at hand).
    token_tile = program // probe_tiles
    probe_tile = program % probe_tiles
    tokens = token_tile * TOKENS + tl.arange(0, TOKENS)
    probes = probe_tile * PROBES + tl.arange(0, PROBES)
    token_ok = tokens < num_tokens
    probe_ok = probes < num_probes
    token_rows = tokens.to(tl.int64)  # T * features can pass 2**31

    x_projected = _project_tile(
        x_ptr, v_ptr, token_rows, probes, token_ok, probe_ok, in_features,
        stride_x_token, stride_x_feature, stride_v_probe, stride_v_feature, TOKENS, PROBES, FEATURES, UPCAST,
    )
    delta_projected = _project_tile(
        delta_ptr, u_ptr, token_rows, probes, token_ok, probe_ok, out_features,
        stride_delta_token, stride_delta_feature, stride_u_probe, stride_u_feature, TOKENS, PROBES, FEATURES, UPCAST,
    )
    contributions = x_projected * delta_projected
    domains = tl.load(domain_ptr + tokens, mask=token_ok, other=-1)
    # One masked column sum per domain: K * TOKENS * PROBES adds, nothing next to the projections'
    # TOKENS * PROBES * (n + m) multiply-adds.
    partial_row = partial_ptr + token_tile.to(tl.int64) * num_domains * num_probes
    for domain in range(num_domains):
        domain_sum = tl.sum(tl.where(domains[:, None] == domain, contributions, 0.0), axis=0)
        tl.store(partial_row + domain * num_probes + probes, domain_sum, mask=probe_ok)


def project_and_segment_sum(
    x: torch.Tensor,
    delta: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    token_domain: torch.Tensor,
    num_domains: int,
) -> torch.Tensor:
    """As `reference.project_and_segment_sum`: `[num_domains, k]` fp32, one pass over x and delta.

    Each token tile writes its own `[K, k]` partial sums and a sum over tiles follows, rather than
    atomics into one `[K, k]`: with few domains every tile would hit the same K rows (contention),
    atomics would make the sketch differ from run to run, and the partials are small (T/64 * K * k
    fp32: 4 MiB at T=8k, K=32, k=256, next to x's 128 MiB).
    """
    num_tokens, in_features = x.shape
    out_features = delta.shape[1]
    num_probes = u.shape[0]
    # tl.dot multiplies operands of one dtype; +-1 probes are exact in every float dtype.
    u = u.to(delta.dtype)
    v = v.to(x.dtype)
    probes_per_tile = min(_MAX_PROBES_PER_TILE, max(16, triton.next_power_of_2(num_probes)))
    token_tiles = triton.cdiv(num_tokens, _TOKENS_PER_TILE)
    partials = torch.empty(token_tiles, num_domains, num_probes, dtype=torch.float32, device=x.device)
    grid = (token_tiles * triton.cdiv(num_probes, probes_per_tile),)
    _project_and_segment_sum_kernel[grid](
        x, delta, u, v, token_domain.to(device=x.device, dtype=torch.int64).contiguous(), partials,
        num_tokens, in_features, out_features, num_probes, num_domains,
        x.stride(0), x.stride(1), delta.stride(0), delta.stride(1),
        u.stride(0), u.stride(1), v.stride(0), v.stride(1),
        TOKENS=_TOKENS_PER_TILE, PROBES=probes_per_tile, FEATURES=_FEATURES_PER_STEP,
        UPCAST=_UPCAST_DOT_OPERANDS,
    )
    return partials.sum(dim=0)


@triton.jit
def _gram_kernel(
    sketch_ptr, gram_ptr, num_domains, num_columns, stride_domain, stride_column,
    DOMAINS: tl.constexpr, COLUMNS: tl.constexpr,
):
    program = tl.program_id(0)
    offsets = tl.arange(0, DOMAINS)
    columns_in_step = tl.arange(0, COLUMNS)
    rows = program * DOMAINS + offsets
    row_ok = rows < num_domains
    for first in range(0, num_domains, DOMAINS):
        cols = first + offsets
        col_ok = cols < num_domains
        products = tl.zeros((DOMAINS, DOMAINS), dtype=tl.float32)
        for start in range(0, num_columns, COLUMNS):
            columns = start + columns_in_step
            column_ok = columns < num_columns
            row_block = tl.load(
                sketch_ptr + rows[:, None] * stride_domain + columns[None, :] * stride_column,
                mask=row_ok[:, None] & column_ok[None, :],
                other=0.0,
            ).to(tl.float32)
            col_block = tl.load(
                sketch_ptr + cols[None, :] * stride_domain + columns[:, None] * stride_column,
                mask=col_ok[None, :] & column_ok[:, None],
                other=0.0,
            ).to(tl.float32)
            products = tl.dot(row_block, col_block, products, input_precision="ieee")
        tl.store(
            gram_ptr + rows[:, None] * num_domains + cols[None, :],
            products / num_columns,
            mask=row_ok[:, None] & col_ok[None, :],
        )


def gram(sketches: torch.Tensor) -> torch.Tensor:
    """As `reference.gram`: the estimated Gram matrix `[K, K]`, fp32; one program per block of 16 rows."""
    num_domains, num_columns = sketches.shape
    result = torch.empty(num_domains, num_domains, dtype=torch.float32, device=sketches.device)
    grid = (triton.cdiv(num_domains, _DOMAINS_PER_TILE),)
    _gram_kernel[grid](
        sketches, result, num_domains, num_columns, sketches.stride(0), sketches.stride(1),
        DOMAINS=_DOMAINS_PER_TILE, COLUMNS=_SKETCH_COLUMNS_PER_STEP,
    )
    return result
