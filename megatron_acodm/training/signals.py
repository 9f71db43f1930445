"""What a step measures for its mixer beyond the losses, as this rank's share of a world-wide sum.

Each function returns the local contribution to a tensor that one all-reduce over the whole world
turns into the global value: data-parallel replicas hold identical weights, so only the first
replica counts them; tensor-parallel shards and pipeline stages each add their own part.
"""

from __future__ import annotations

from typing import Sequence

import torch

from megatron.core import parallel_state

from megatron_acodm.model import mlp_output_projections


def layer_weight_norm_squares(model_chunks, layer_indices: Sequence[int], device: torch.device) -> torch.Tensor:
    """This rank's part of the squared Frobenius norms of the `linear_fc2` weights of `layer_indices`."""
    squares = torch.zeros(len(layer_indices), dtype=torch.float64, device=device)
    if parallel_state.get_data_parallel_rank() != 0:
        return squares
    local = mlp_output_projections(model_chunks)
    for position, index in enumerate(layer_indices):
        if index in local:
            # The norm reduces in the weight's own storage; only the scalar goes to fp64.
            squares[position] = torch.linalg.vector_norm(local[index].weight.detach(), dtype=torch.float32).double().square()
    return squares
