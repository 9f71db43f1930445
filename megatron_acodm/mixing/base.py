"""The mixer protocol: what a step tells a mixer, and what a mixer answers.

Every global step the trainer calls `weights()` for the mixture of the step it is about to plan,
asks `signals_wanted(step)` what the step must measure (a subset of `needs`, which the trainer
reads once to build its hooks), trains it, then calls `observe(signals)` with what the step
produced. `weights()` depends only on the mixer's state, so `observe` is the only call that
changes it. Before the first step the trainer says where the run starts (`resume_at`); when the run
ends it calls `end_of_run` on one rank.

A mixer's `state_dict()` holds plain Python values, and, for mixers with learned networks (AC-ODM),
torch tensors: the trainer keeps it in the checkpoint's common state, which torch.save writes and
torch.load reads back with `weights_only=True`, so nothing beyond tensors and plain values.
"""

from __future__ import annotations

import abc
import argparse
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy

from megatron_acodm.data.manifest import validate_weights
from megatron_acodm.errors import UserError

# Signals a mixer may declare in `needs`, so the step computes only what some mixer reads.
# Realised counts and the mixture followed come with every step: they cost nothing.
DOMAIN_LOSSES = "domain_losses"
GRADIENT_GRAM = "gradient_gram"  # StepSignals.half_gram and half_tokens
# The target set's two rows in half_gram and half_tokens, after the domains' (`--target-data-path`,
# `sketch.segments`): measured on the steps whose `signals_wanted` names it (the target pass).
TARGET_GRADIENT = "target_gradient"
LAYER_NORMS = "layer_weight_norms"  # StepSignals.layer_weight_norms, at the mixer's `norm_layer_depths`
LAYER_DRIFTS = "layer_weight_drifts"  # StepSignals.layer_weight_drifts, at the same depths


@dataclass
class StepSignals:
    """What one trained global step showed, per domain, already reduced over data-parallel ranks."""

    step: int  # the step just trained, 0-based
    domain_loss_sum: numpy.ndarray  # [K] sum of the LM loss over the step's loss-mask tokens
    domain_tokens: numpy.ndarray  # [K] loss-mask token counts
    realised_counts: numpy.ndarray  # [K] samples per domain in the step's global batch
    # [K] the mixture the blender followed: the mixer's weights, or with --min-samples-per-domain
    # those weights with every domain's minimum share (`data.blender.StepPlan.weights`)
    followed_weights: numpy.ndarray
    # [2K, 2K] sketch estimate of <G_a, G_b> over the domains' halves (row 2k + h: half h of domain k,
    # see sketch.segments), G the gradient summed over the half's tokens; an empty half: zero row/column.
    # [2K + 2, 2K + 2] for a mixer that reads the target (TARGET_GRADIENT): rows 2K and 2K + 1 are its halves.
    half_gram: Optional[numpy.ndarray] = None
    half_tokens: Optional[numpy.ndarray] = None  # [2K] (or [2K + 2]) loss-mask tokens of each half
    layer_weight_norms: Optional[numpy.ndarray] = None  # [L] linear_fc2 weight norms at the mixer's depths
    # [L] ||W - W_0|| of the same weights, W_0 as the run's first step found them (kept in the checkpoint)
    layer_weight_drifts: Optional[numpy.ndarray] = None

    def __post_init__(self) -> None:
        self.domain_loss_sum = numpy.asarray(self.domain_loss_sum, dtype=numpy.float64)
        self.domain_tokens = numpy.asarray(self.domain_tokens, dtype=numpy.float64)
        self.realised_counts = numpy.asarray(self.realised_counts, dtype=numpy.int64)
        self.followed_weights = numpy.asarray(self.followed_weights, dtype=numpy.float64)

    @property
    def domain_loss(self) -> numpy.ndarray:
        """Mean loss per token of each domain; NaN where the step gave a domain no tokens."""
        loss = numpy.full(self.domain_loss_sum.shape, numpy.nan)
        seen = self.domain_tokens > 0
        loss[seen] = self.domain_loss_sum[seen] / self.domain_tokens[seen]
        return loss


def run_length(args: argparse.Namespace, mixer: str, why: str) -> int:
    """--train-iters, for a mixer that plans over the whole run (`why` it needs it)."""
    if getattr(args, "train_iters", None) is None:
        raise UserError(f"--mixer {mixer} needs --train-iters: {why}")
    return args.train_iters


class Mixer(abc.ABC):
    """Decides the domain weights of each step from what the previous steps showed.

    Subclasses give `_policy()` (a K-simplex) and, when they learn, `_update`, `_state` and
    `_load_state`. The base class checks signals, keeps non-finite ones out of the update, applies
    the uniform floor, and guards `load_state_dict` against a state for other domains.
    """

    needs: frozenset[str] = frozenset()
    # The relative depths (in (0, 1]) of the layers whose `linear_fc2` weight norms (and drifts) a
    # mixer that needs LAYER_NORMS (LAYER_DRIFTS) reads, in this order (`megatron_acodm.model.layers_at_depths` maps them).
    norm_layer_depths: tuple[float, ...] = ()
    # For a mixer that needs TARGET_GRADIENT: the target pass runs on the steps divisible by this.
    target_interval: Optional[int] = None
    # The options shared between mixers that this one reads (`registry.SHARED_OPTIONS`, or another
    # mixer's own, e.g. --dga-interval): any other mixer's option given to this one is refused.
    reads: frozenset[str] = frozenset()
    # The layout and meaning of what `_state` saves: a checkpoint whose mixer state has another
    # format (none saved: 1) is refused, never misread. A mixer whose state changes meaning raises
    # it and says what changed (`state_change`); `older_state_formats` lists those it still reads.
    state_format: int = 1
    state_change: str = ""
    older_state_formats: tuple[int, ...] = ()

    @classmethod
    @abc.abstractmethod
    def from_args(
        cls,
        *,
        names: Sequence[str],
        initial_weights: Sequence[float],
        domain_tokens: Optional[Sequence[float]],
        args: argparse.Namespace,
    ) -> Mixer:
        """Build from the command line's options (see `add_arguments`)."""

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Add this mixer's own command-line options; most mixers have none."""

    @classmethod
    def samples_per_domain(cls, args: argparse.Namespace) -> int:
        """The samples every domain gets in every global batch when --min-samples-per-domain is not
        given: what the mixer's published method trains on (most: none)."""
        return 0

    def __init__(self, names: Sequence[str], initial_weights: Sequence[float], floor: float = 0.0):
        self.names = list(names)
        if len(initial_weights) != len(self.names):
            raise ValueError(f"{len(initial_weights)} initial weights for {len(self.names)} domains {self.names}")
        if not 0.0 <= floor <= 1.0 / len(self.names):
            raise UserError(
                f"--mixing-floor ({floor}) must be in [0, 1/K] = [0, {1.0 / len(self.names):.4g}] for the "
                f"{len(self.names)} domains of --data-path; lower it"
            )
        self.initial_weights = numpy.array(validate_weights(initial_weights, source="initial mixture weights"))
        self.floor = floor
        self._warned = False

    @property
    def num_domains(self) -> int:
        return len(self.names)

    def signals_wanted(self, step: int) -> frozenset[str]:
        """What global step `step` must measure for this mixer: all it `needs`, the target gradient
        on the target pass's steps only; a mixer that reads some signals on some steps only says so."""
        if TARGET_GRADIENT in self.needs and step % self.target_interval != 0:
            return self.needs - {TARGET_GRADIENT}
        return self.needs

    def weights(self) -> numpy.ndarray:
        """The weights of the next step to plan: float64, sums to one, each entry >= the floor."""
        return (1.0 - self.num_domains * self.floor) * self._policy() + self.floor

    def observe(self, signals: StepSignals) -> None:
        """Learn from one trained step; a step with a non-finite signal leaves the mixer unchanged."""
        for field in ("domain_loss_sum", "domain_tokens", "realised_counts", "followed_weights"):
            shape = getattr(signals, field).shape
            if shape != (self.num_domains,):
                raise ValueError(f"{field} has shape {shape}, expected ({self.num_domains},) for {self.names}")
        bad = self._non_finite_signals(signals)
        if bad:
            if not self._warned:
                warnings.warn(
                    f"{type(self).__name__}: step {signals.step} gave a non-finite {' and '.join(bad)}; "
                    f"keeping the last weights (this warning is shown once)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._warned = True
            return
        self._update(signals)

    def _non_finite_signals(self, signals: StepSignals) -> list[str]:
        """What this mixer reads and found NaN or infinite, each described for the warning."""
        bad = []
        if DOMAIN_LOSSES in self.needs:
            non_finite = (signals.domain_tokens > 0) & ~numpy.isfinite(signals.domain_loss)
            if non_finite.any():
                bad.append(f"loss for {[name for name, is_bad in zip(self.names, non_finite) if is_bad]}")
        for need, field in ((GRADIENT_GRAM, "half_gram"), (LAYER_NORMS, "layer_weight_norms"), (LAYER_DRIFTS, "layer_weight_drifts")):
            value = getattr(signals, field)
            if need in self.needs and value is not None and not numpy.all(numpy.isfinite(value)):
                bad.append(field)
        return bad

    def domain_diagnostics(self) -> dict[str, numpy.ndarray]:
        """What the mixer would show per domain beside loss, weight and share (e.g. AC-ODM's scores), each [K]."""
        return {}

    def scalar_diagnostics(self) -> dict[str, float]:
        """What the mixer would show as single numbers (e.g. how well AC-ODM's critic fits)."""
        return {}

    def resume_at(self, step: int, log: Callable[[str], None]) -> None:
        """The run continues at global step `step` (0 for a new run), after any checkpointed state was
        restored (a mixer new to a resumed run gets no state); `log` prints once for the job. A mixer
        whose weights follow the global step (a schedule) takes it from here."""

    def end_of_run(self, log: Callable[[str], None]) -> None:
        """What the mixer leaves behind when the run ends, finished or resumed already finished (e.g.
        AC-ODM's exported policy); called on one rank. Most mixers leave nothing."""

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values (and torch tensors, for mixers with networks: see the module's docstring)."""
        return {"mixer": type(self).__name__, "names": list(self.names), "format": self.state_format, **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = state.get("names")
        if names != self.names:
            raise UserError(
                f"the mixer state is for domains {names}, this run has {self.names}; resume with the same --data-path"
            )
        if state.get("mixer") != type(self).__name__:
            raise UserError(f"the mixer state is from {state.get('mixer')}, this run uses {type(self).__name__}")
        saved = state.get("format", 1)
        if saved != self.state_format and saved not in self.older_state_formats:
            change = f" ({self.state_change})" if self.state_change else ""
            raise UserError(
                f"the checkpoint's {type(self).__name__} state has format {saved}, this version reads "
                f"format {self.state_format}{change}; finish that run with the version that wrote it, or start a new one"
            )
        self._load_state(state)

    @abc.abstractmethod
    def _policy(self) -> numpy.ndarray:
        """The mixture before the floor: a K-simplex in float64."""

    def _update(self, signals: StepSignals) -> None:
        """Learn from finite signals; mixers that do not learn ignore them."""

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        """Restore what `_state` saved; `state` is already checked to be for these domains, of a format read."""
