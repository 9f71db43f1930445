"""Finding transformer layers by relative depth, on whichever pipeline stage holds them."""

from __future__ import annotations

import math
from typing import Sequence

import torch


def layers_at_depths(depths: Sequence[float], num_layers: int) -> list[int]:
    """0-based layers at relative depths in (0, 1]: depth d picks layer ceil(d N) - 1.

    A model of any depth gives one layer per depth (some repeat on shallow models), which is what
    lets a mixer's features, or a sketch's layer choice, carry over between model sizes.
    """
    return [min(num_layers, max(1, math.ceil(depth * num_layers))) - 1 for depth in depths]


def unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    """The GPTModel inside megatron's DDP and Float16Module wrappers."""
    while hasattr(chunk, "module"):
        chunk = chunk.module
    return chunk


def mlp_output_projections(model_chunks: Sequence[torch.nn.Module]) -> dict[int, torch.nn.Module]:
    """This rank's `mlp.linear_fc2` modules by global 0-based layer index."""
    found = {}
    for chunk in model_chunks:
        for layer in unwrap(chunk).decoder.layers:
            fc2 = getattr(layer.mlp, "linear_fc2", None)
            if fc2 is None:
                raise NotImplementedError(f"layer {layer.layer_number - 1} has no mlp.linear_fc2 (mixture of experts?)")
            found[layer.layer_number - 1] = fc2  # megatron numbers layers globally, from 1
    return found
