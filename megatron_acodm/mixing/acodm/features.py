"""AC-ODM's state: what the agent sees after each step.

Every feature is scale-free (a z-score, a ratio, a share, a fraction), so an actor trained on a
small proxy model reads a large target's state the same way. Layout, K domains and L layers,
dimension 6K + 2L + 1:

    [0, K)          loss_zscore     each domain's last mean loss, z-scored across the domains seen so far
    [K, 2K)         loss_log_ratio  log(L_k / L_k,0), L_k,0 the first loss seen for k (a log rather than
                                    L_k / L_k,0 - 1: halving and doubling weigh the same)
    [2K, 3K)        weight          the mixture the mixer chose for the step (before --mixing-floor)
    [3K, 4K)        staleness       1 - decay^age, age in steps since the domain was last sampled (1: never)
    [4K, 5K)        direction       the alignment signal's proposed step (`AlignmentSignal.direction`), in [-1, 1]
    [5K, 6K)        score_snr       snr / (1 + snr), snr = |smoothed score| / its standard error
    [6K, 6K+L)      norm_zscore     Frobenius norms of the `linear_fc2` weights at the spec's relative depths,
                                    z-scored across those L layers
    [6K+L, 6K+2L)   norm_drift      ||W_l|| / ||W_l||_0 - 1, relative to the first step the mixer saw
    [6K+2L]         progress        (step + 1) / T, clipped to [0, 1]

The actor's action is computed from the `weight` and `direction` blocks (see `mixer.py`), so a
replayed state holds everything the action needs.

A domain absent from a step keeps its last loss (see `memory.py`); one never seen counts as average
(z-score 0, log-ratio 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy
import torch

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.acodm.memory import SignalMemory

DEFAULT_LAYER_DEPTHS = (0.25, 0.5, 0.75, 1.0)
DEFAULT_STALE_DECAY = 0.9


@dataclass(frozen=True)
class FeatureSpec:
    """What an actor's input means: enough for another run to build the same features."""

    num_domains: int
    layer_depths: tuple[float, ...]
    stale_decay: float = DEFAULT_STALE_DECAY

    def __post_init__(self) -> None:
        if not self.layer_depths or not all(0.0 < depth <= 1.0 for depth in self.layer_depths):
            raise UserError(f"--acodm-feature-depths must be relative depths in (0, 1], got {list(self.layer_depths)}")

    @property
    def num_layers(self) -> int:
        return len(self.layer_depths)

    @property
    def blocks(self) -> list[tuple[str, int]]:
        """The state's blocks in order, each with its size."""
        k, layers = self.num_domains, self.num_layers
        return [
            ("loss_zscore", k),
            ("loss_log_ratio", k),
            ("weight", k),
            ("staleness", k),
            ("direction", k),
            ("score_snr", k),
            ("norm_zscore", layers),
            ("norm_drift", layers),
            ("progress", 1),
        ]

    def block(self, name: str) -> slice:
        """Where block `name` lies in the state vector."""
        start = 0
        for block, size in self.blocks:
            if block == name:
                return slice(start, start + size)
            start += size
        raise KeyError(name)

    @property
    def state_dim(self) -> int:
        return 6 * self.num_domains + 2 * self.num_layers + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_domains": self.num_domains,
            "num_layers": self.num_layers,
            "layer_depths": list(self.layer_depths),
            "stale_decay": self.stale_decay,
            "state_dim": self.state_dim,
            "blocks": [list(block) for block in self.blocks],
            "normalisation": {
                "loss_zscore": "(L_k - mean) / std across domains seen; 0 when all equal",
                "loss_log_ratio": "log(L_k / L_k,0), L_k,0 the first loss seen",
                "weight": "the mixture chosen for the step, before --mixing-floor",
                "staleness": "1 - stale_decay ** steps since sampled",
                "direction": "alignment score less the mixture's mean, shrunk by its standard error, clipped to [-1, 1]",
                "score_snr": "snr / (1 + snr), snr = |smoothed alignment score| / its standard error",
                "norm_zscore": "(n_l - mean) / std across the L layers; 0 when all equal",
                "norm_drift": "n_l / n_l,0 - 1",
                "progress": "(step + 1) / train_iters",
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """The spec `to_dict` wrote; raises ValueError where its derived fields disagree with it."""
        spec = cls(int(data["num_domains"]), tuple(float(d) for d in data["layer_depths"]), float(data["stale_decay"]))
        if spec.to_dict() != data:
            raise ValueError(f"inconsistent feature spec {data}; expected {spec.to_dict()}")
        return spec


def _zscore(values: numpy.ndarray) -> numpy.ndarray:
    centred = values - values.mean()
    spread = math.sqrt(float(numpy.mean(centred**2)))
    if not spread > 1e-12 * float(numpy.mean(numpy.abs(values))):  # all equal, up to rounding
        return numpy.zeros_like(values)
    return centred / spread


class StateBuilder:
    """Turns a step's signals, with what `SignalMemory` holds, into the state vector of the spec."""

    def __init__(self, spec: FeatureSpec, total_steps: int):
        if total_steps < 1:
            raise UserError(f"AC-ODM needs the run's length (--train-iters) >= 1, got {total_steps}")
        self.spec = spec
        self.total_steps = total_steps
        self.initial_norms: Optional[numpy.ndarray] = None

    def state(
        self,
        memory: SignalMemory,
        weights: numpy.ndarray,
        direction: numpy.ndarray,
        snr: numpy.ndarray,
        layer_norms: numpy.ndarray,
        step: int,
    ) -> numpy.ndarray:
        """float64 [state_dim]; `memory` must already hold this step's losses, `layer_norms` is [L]."""
        if self.initial_norms is None:
            self.initial_norms = layer_norms.copy()
        seen = ~numpy.isnan(memory.loss)
        loss_zscore = numpy.zeros(self.spec.num_domains)
        loss_log_ratio = numpy.zeros(self.spec.num_domains)
        if seen.any():
            tiny = numpy.finfo(numpy.float64).tiny  # a loss of exactly 0 stays finite in the log
            loss, initial = numpy.maximum(memory.loss[seen], tiny), numpy.maximum(memory.initial_loss[seen], tiny)
            loss_zscore[seen] = _zscore(memory.loss[seen])
            loss_log_ratio[seen] = numpy.log(loss / initial)
        drift = (
            numpy.divide(
                layer_norms, self.initial_norms, out=numpy.ones_like(layer_norms), where=self.initial_norms > 0
            )
            - 1.0
        )
        progress = min(1.0, (step + 1) / self.total_steps)
        return numpy.concatenate(
            [
                loss_zscore,
                loss_log_ratio,
                weights,
                memory.staleness(),
                direction,
                snr / (1.0 + snr),
                _zscore(layer_norms),
                drift,
                [progress],
            ]
        )

    def state_dict(self) -> dict[str, Any]:
        return {"initial_norms": None if self.initial_norms is None else torch.from_numpy(self.initial_norms.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        norms = state["initial_norms"]
        self.initial_norms = None if norms is None else norms.numpy().copy()
