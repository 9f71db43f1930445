"""What a step measures for its mixer beyond the losses, as this rank's share of a world-wide sum.

Each returns the local contribution to a tensor that one all-reduce over the whole world turns into
the global value: data-parallel replicas hold identical weights, so only the first replica counts
them; tensor-parallel shards and pipeline stages each add their own part. The signals, each for the
`linear_fc2` weights of chosen layers:
- `layer_weight_norm_squares`: their squared Frobenius norms ||W||^2;
- `WeightDrift.squares`: their squared distances ||W - W_0||^2 from W_0, the weights as the run's
  first step found them (the initial model, or those of --pretrained-checkpoint); the checkpoint
  keeps W_0 (`training.checkpoint`), and a resumed run whose checkpoint has none takes the weights
  it resumes with. Each rank keeps its own shards of W_0.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from megatron.core import parallel_state

from megatron_acodm.model import mlp_output_projections


def _local_squares(
    model_chunks, layer_indices: Sequence[int], device: torch.device, of: Callable[[int, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """This rank's part of ||of(layer, W)||^2 for the `linear_fc2` weight W of each of `layer_indices`."""
    squares = torch.zeros(len(layer_indices), dtype=torch.float64, device=device)
    if parallel_state.get_data_parallel_rank() != 0:
        return squares
    local = mlp_output_projections(model_chunks)
    for position, index in enumerate(layer_indices):
        if index in local:
            # The norm reduces in the weight's own storage; only the scalar goes to fp64.
            squares[position] = torch.linalg.vector_norm(of(index, local[index].weight.detach()), dtype=torch.float32).double().square()
    return squares


def layer_weight_norm_squares(model_chunks, layer_indices: Sequence[int], device: torch.device) -> torch.Tensor:
    """This rank's part of the squared Frobenius norms of the `linear_fc2` weights of `layer_indices`."""
    return _local_squares(model_chunks, layer_indices, device, lambda index, weight: weight)


class WeightDrift:
    """How far the `linear_fc2` weights of `layer_indices` (0-based, as `layers_at_depths` gives them)
    have moved from W_0, this rank's copy of its shards of them, by layer (`start`)."""

    def __init__(self, layer_indices: Sequence[int]):
        self.layer_indices = list(layer_indices)
        self.start: dict[int, torch.Tensor] = {}  # filled by `take_start` or from a checkpoint

    def take_start(self, model_chunks) -> None:
        """Keep the current weights as W_0 of the chosen layers on this rank that have none yet."""
        for index, fc2 in mlp_output_projections(model_chunks).items():
            if index in self.layer_indices and index not in self.start:
                self.start[index] = fc2.weight.detach().clone()

    def squares(self, model_chunks, device: torch.device) -> torch.Tensor:
        """This rank's part of ||W - W_0||^2 of each chosen layer (`take_start` has run: W_0 is there)."""
        return _local_squares(model_chunks, self.layer_indices, device, lambda index, weight: weight - self.start[index])
