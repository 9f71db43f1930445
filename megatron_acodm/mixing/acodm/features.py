"""AC-ODM's state: what the agent sees after each step, in one of two layouts.

`reference` (the default, `--acodm-action softmax`): the state of the AC-ODM reference code
(github.com/DANG-ai/AC-ODM). K domains and L layers, dimension 3K + 2L + 1; every block but the
last is normalised across its own entries as the reference does, `(x - mean) / (std + 1e-8)` with
the sample standard deviation, clipped to [-3, 3]:

    [0, K)              loss            each domain's mean loss in the step
    [K, 2K)             loss_change     L_k - L_k,0, L_k,0 the first loss seen for k (the reference's
                                        "last" loss is set once, at its first step, and never again)
    [2K, 3K)            samples         each domain's samples in the step's global batch
    [3K, 3K+L)          norm            Frobenius norms of the `linear_fc2` weights at the spec's relative depths
    [3K+L, 3K+2L)       norm_change     ||W_l - W_l,0||, W_l,0 the weight the run started from
    [3K+2L]             progress        100 (step + 1) / T, not normalised (the reference's `iter_coe` of 100)

`scale-free` (`--acodm-action bounded`, ours): every feature is scale-free (a z-score, a ratio, a
share, a fraction), so an actor trained on a small proxy model reads a large target's state the
same way, and the state holds the weights and the alignment signal's direction the bounded action
is computed from. Dimension 6K + 2L + 1:

    [0, K)          loss_zscore     each domain's last mean loss, z-scored across the domains seen so far
    [K, 2K)         loss_log_ratio  log(L_k / L_k,0) (a log rather than L_k / L_k,0 - 1: halving and
                                    doubling weigh the same)
    [2K, 3K)        weight          the mixture the mixer chose for the step (before --mixing-floor)
    [3K, 4K)        staleness       1 - decay^age, age in steps since the domain was last sampled (1: never)
    [4K, 5K)        direction       the alignment signal's proposed step (`AlignmentSignal.direction`), in [-1, 1]
    [5K, 6K)        score_snr       snr / (1 + snr), snr = |smoothed score| / its standard error
    [6K, 6K+L)      norm_zscore     the layer norms as above, z-scored across the L layers
    [6K+L, 6K+2L)   norm_drift      ||W_l|| / ||W_l||_0 - 1, relative to the first step the mixer saw
    [6K+2L]         progress        (step + 1) / T, clipped to [0, 1]

In both, a domain absent from a step keeps its last loss (see `memory.py`); one never seen counts as
average (z-score 0, change 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy
import torch

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.acodm.memory import SignalMemory

LAYOUTS = ("reference", "scale-free")
# The reference's 9 layers of its 16-layer 1B model (0, 1, 3, 5, ..., 15), as relative depths.
DEFAULT_LAYER_DEPTHS = (0.0625, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
DEFAULT_STALE_DECAY = 0.9
REFERENCE_CLIP = 3.0
PROGRESS_SCALE = 100.0

_BLOCKS = {
    "reference": (("loss", "K"), ("loss_change", "K"), ("samples", "K"), ("norm", "L"), ("norm_change", "L"), ("progress", 1)),
    "scale-free": (
        ("loss_zscore", "K"), ("loss_log_ratio", "K"), ("weight", "K"), ("staleness", "K"), ("direction", "K"),
        ("score_snr", "K"), ("norm_zscore", "L"), ("norm_drift", "L"), ("progress", 1),
    ),
}
_MEANINGS = {
    "reference": {
        "loss": "the step's mean loss per domain, normalised",
        "loss_change": "L_k - L_k,0, L_k,0 the first loss seen, normalised",
        "samples": "samples per domain in the global batch, normalised",
        "norm": "linear_fc2 weight norms, normalised",
        "norm_change": "||W_l - W_l,0||, W_l,0 the run's first step's, normalised",
        "progress": "100 (step + 1) / train_iters",
        "normalised": "(x - mean) / (sample std + 1e-8) across the block, clipped to [-3, 3]",
    },
    "scale-free": {
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


@dataclass(frozen=True)
class FeatureSpec:
    """What an actor's input means: enough for another run to build the same features."""

    num_domains: int
    layer_depths: tuple[float, ...]
    stale_decay: float = DEFAULT_STALE_DECAY
    layout: str = "reference"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown state layout {self.layout!r}; expected one of {LAYOUTS}")
        if not self.layer_depths or not all(0.0 < depth <= 1.0 for depth in self.layer_depths):
            raise UserError(f"--acodm-feature-depths must be relative depths in (0, 1], got {list(self.layer_depths)}")
        if self.layout == "reference" and len(self.layer_depths) < 2:
            raise UserError(
                f"--acodm-feature-depths {list(self.layer_depths)}: the reference state normalises the layer norms "
                f"across the layers; give two or more depths"
            )

    @property
    def num_layers(self) -> int:
        return len(self.layer_depths)

    @property
    def blocks(self) -> list[tuple[str, int]]:
        """The state's blocks in order, each with its size."""
        sizes = {"K": self.num_domains, "L": self.num_layers, 1: 1}
        return [(name, sizes[size]) for name, size in _BLOCKS[self.layout]]

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
        return sum(size for _, size in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "num_domains": self.num_domains,
            "num_layers": self.num_layers,
            "layer_depths": list(self.layer_depths),
            "stale_decay": self.stale_decay,
            "state_dim": self.state_dim,
            "blocks": [list(block) for block in self.blocks],
            "normalisation": dict(_MEANINGS[self.layout]),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """The spec `to_dict` wrote; raises ValueError where its derived fields disagree with it."""
        spec = cls(
            int(data["num_domains"]), tuple(float(d) for d in data["layer_depths"]), float(data["stale_decay"]), str(data["layout"])
        )
        if spec.to_dict() != data:
            raise ValueError(f"inconsistent feature spec {data}; expected {spec.to_dict()}")
        return spec


def _zscore(values: numpy.ndarray) -> numpy.ndarray:
    centred = values - values.mean()
    spread = math.sqrt(float(numpy.mean(centred**2)))
    if not spread > 1e-12 * float(numpy.mean(numpy.abs(values))):  # all equal, up to rounding
        return numpy.zeros_like(values)
    return centred / spread


def _reference_normalised(values: numpy.ndarray) -> numpy.ndarray:
    """The reference's normalisation of a block: sample standard deviation plus 1e-8, clipped."""
    centred = values - values.mean()
    return numpy.clip(centred / (values.std(ddof=1) + 1e-8), -REFERENCE_CLIP, REFERENCE_CLIP)


@dataclass
class StepView:
    """What one step showed the state builder: the memory already holds its losses."""

    memory: SignalMemory
    step: int
    layer_norms: numpy.ndarray  # [L]
    samples: numpy.ndarray  # [K] realised samples per domain
    layer_drifts: Optional[numpy.ndarray] = None  # [L] ||W - W_0||, for the reference layout
    weights: Optional[numpy.ndarray] = None  # [K] the step's mixture, for the scale-free layout
    direction: Optional[numpy.ndarray] = None  # [K] the alignment signal's proposed step, idem
    snr: Optional[numpy.ndarray] = None  # [K] the scores' signal-to-noise, idem


class StateBuilder:
    """Turns a step's signals, with what `SignalMemory` holds, into the state vector of the spec."""

    def __init__(self, spec: FeatureSpec, total_steps: int):
        if total_steps < 1:
            raise UserError(f"AC-ODM needs the run's length (--train-iters) >= 1, got {total_steps}")
        self.spec = spec
        self.total_steps = total_steps
        self.initial_norms: Optional[numpy.ndarray] = None  # the scale-free layout's reference for drift

    def state(self, view: StepView) -> numpy.ndarray:
        """float64 [state_dim]."""
        return self._reference(view) if self.spec.layout == "reference" else self._scale_free(view)

    @staticmethod
    def _losses(memory: SignalMemory) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """Last and first loss per domain, and which domains were seen."""
        seen = ~numpy.isnan(memory.loss)
        return memory.loss, memory.initial_loss, seen

    def _reference(self, view: StepView) -> numpy.ndarray:
        loss, initial, seen = self._losses(view.memory)
        # A domain never seen counts as average; its change as none.
        filled = numpy.where(seen, loss, loss[seen].mean() if seen.any() else 0.0)
        change = numpy.where(seen, loss - initial, 0.0)
        return numpy.concatenate(
            [
                _reference_normalised(filled),
                _reference_normalised(change),
                _reference_normalised(view.samples.astype(numpy.float64)),
                _reference_normalised(view.layer_norms),
                _reference_normalised(view.layer_drifts),
                [PROGRESS_SCALE * (view.step + 1) / self.total_steps],
            ]
        )

    def _scale_free(self, view: StepView) -> numpy.ndarray:
        if self.initial_norms is None:
            self.initial_norms = view.layer_norms.copy()
        loss, initial, seen = self._losses(view.memory)
        loss_zscore = numpy.zeros(self.spec.num_domains)
        loss_log_ratio = numpy.zeros(self.spec.num_domains)
        if seen.any():
            tiny = numpy.finfo(numpy.float64).tiny  # a loss of exactly 0 stays finite in the log
            loss_zscore[seen] = _zscore(loss[seen])
            loss_log_ratio[seen] = numpy.log(numpy.maximum(loss[seen], tiny) / numpy.maximum(initial[seen], tiny))
        drift = (
            numpy.divide(
                view.layer_norms, self.initial_norms, out=numpy.ones_like(view.layer_norms), where=self.initial_norms > 0
            )
            - 1.0
        )
        progress = min(1.0, (view.step + 1) / self.total_steps)
        return numpy.concatenate(
            [
                loss_zscore,
                loss_log_ratio,
                view.weights,
                view.memory.staleness(),
                view.direction,
                view.snr / (1.0 + view.snr),
                _zscore(view.layer_norms),
                drift,
                [progress],
            ]
        )

    def state_dict(self) -> dict[str, Any]:
        return {"initial_norms": None if self.initial_norms is None else torch.from_numpy(self.initial_norms.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        norms = state["initial_norms"]
        self.initial_norms = None if norms is None else norms.numpy().copy()
