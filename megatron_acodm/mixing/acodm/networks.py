"""AC-ODM's networks: the actor mu(s) (one output per domain: the logits of the next weights, or
with `--acodm-action bounded` of how far to follow the alignment signal on each domain, see
`mixer.py`) and the critic Q(s, a), a the next weights: one value, or with `--acodm-reward
published` one per domain, as the reference's critic has (its reward is a vector).

Both are the reference's MLPs: `depth` hidden layers of width `hidden` (5 of 1024), each Linear ->
LayerNorm -> ReLU, every Linear initialised as PyTorch's default does (uniform within 1/sqrt(fan_in)).
The initialisation draws from a given generator, and from nothing else: every rank builds the same
networks, and building them leaves torch's global generator (the model's initialisation, the
dropout masks) where it was, so a run's model is the same whatever its mixer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import skip_init

from megatron_acodm.errors import UserError

@dataclass(frozen=True)
class NetworkConfig:
    state_dim: int
    num_domains: int
    hidden: int = 1024
    depth: int = 5

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.depth < 1:
            raise UserError(f"--acodm-hidden and --acodm-depth must be >= 1, got {self.hidden} and {self.depth}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mlp(inputs: int, outputs: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(depth):
        layers += [skip_init(nn.Linear, width, hidden), nn.LayerNorm(hidden), nn.ReLU()]
        width = hidden
    layers.append(skip_init(nn.Linear, width, outputs))  # left uninitialised: `_initialise` draws them
    return nn.Sequential(*layers)


def _initialise(network: nn.Sequential, generator: torch.Generator) -> None:
    """PyTorch's default distribution, uniform within 1/sqrt(fan_in), drawn from `generator`."""
    with torch.no_grad():
        for layer in (layer for layer in network if isinstance(layer, nn.Linear)):
            bound = 1.0 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)


class Actor(nn.Module):
    def __init__(self, config: NetworkConfig, generator: torch.Generator):
        super().__init__()
        self.network = _mlp(config.state_dim, config.num_domains, config.hidden, config.depth)
        _initialise(self.network, generator)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """Per-domain logits [..., K]."""
        return self.network(state)


class Critic(nn.Module):
    """Q(s, a) of a reward of shape `reward_shape`: () for a scalar, (K,) for one value per domain."""

    def __init__(self, config: NetworkConfig, generator: torch.Generator, reward_shape: tuple[int, ...] = ()):
        super().__init__()
        self.reward_shape = reward_shape
        self.network = _mlp(config.state_dim + config.num_domains, math.prod(reward_shape), config.hidden, config.depth)
        _initialise(self.network, generator)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q [..., *reward_shape]."""
        values = self.network(torch.cat([state, action], dim=-1))
        return values.reshape(*values.shape[:-1], *self.reward_shape)
