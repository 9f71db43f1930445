"""Rank-one probes `u_j v_j^T`, regenerated from a seed wherever they are needed (never checkpointed).

The probes of a layer shard are a pure function of (seed, global layer index, tensor-parallel rank,
shape, k): data-parallel replicas, which hold the same parameters, draw the same probes, so their
sketches add up sample by sample; tensor-parallel shards and different layers (on any pipeline
stage) draw independent ones, so the cross terms of their summed sketches have zero mean.

Rademacher (+-1) entries: unit variance as the estimator needs, `E[u u^T] = I` exactly, and exact
in bf16/fp16, so casting them to the layer's dtype changes nothing.
"""

from __future__ import annotations

import hashlib

import torch


def probe_seed(seed: int, layer_index: int, tensor_parallel_rank: int, out_features: int, in_features: int, dim: int) -> int:
    """A 63-bit generator seed for one layer shard's probes, the same in every process."""
    key = f"{seed}/{layer_index}/{tensor_parallel_rank}/{out_features}x{in_features}/{dim}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def _rademacher(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, dtype=torch.int8).float().mul_(2).sub_(1)


def rank_one_probes(
    seed: int,
    layer_index: int,
    tensor_parallel_rank: int,
    weight_shape: tuple[int, int],
    dim: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(u [dim, out_features], v [dim, in_features])` for a weight of shape `(out_features, in_features)`.

    Drawn by a CPU `torch.Generator` (the same numbers on every machine), then moved to `device`/`dtype`.
    """
    out_features, in_features = weight_shape
    generator = torch.Generator(device="cpu")
    generator.manual_seed(probe_seed(seed, layer_index, tensor_parallel_rank, out_features, in_features, dim))
    u = _rademacher((dim, out_features), generator)
    v = _rademacher((dim, in_features), generator)
    return u.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype)
