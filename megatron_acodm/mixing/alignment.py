"""The alignment signal every gradient-based mixer reads: how much a step on each domain would
lower the objective, per unit of weight, smoothed over steps with its standard error.

From a step's sketch Gram matrix over the domains' halves (`StepSignals.half_gram`, rows `2k + h`)
and the halves' token counts:

- mean gradients, not sums: entry (a, b) divided by `n_a n_b`, so `M[k, j] ~ <g_k, g_j>` with g a
  domain's mean gradient per token; a sum would weigh domains by their share of the batch and make
  the score cubic in the weights;
- the diagonal from the two halves, `M[k, k] = <g_kA, g_kB>`, unbiased for `|g_k|^2`; the whole
  sketch's `<g_k, g_k>` adds `tr(Sigma_k) / n_k`, the per-sample variance, and so favours noisy domains;
- scale-free: divided by the objective's mean squared gradient norm `s = sum_j pi_j M[j, j]`, so
  the signal reads the same early and late in training and at any model size. With
  `smoothed_scale` (a target objective, DGA's and AC-ODM's) s is not one step's value but its bias-corrected moving average over the
  steps that measured it, floored at that average's standard error: one pair of halves of a few
  steering examples gives a noisy s, often near zero or negative, and a ratio over it has a
  heavy tail;
- smoothed: a bias-corrected exponential moving average of every entry over the steps that
  observed it (a domain absent from a step, or with one sample and so one half, leaves its
  entries as they were), with the standard error of that average.

The score of domain k is `r_k = sum_j pi_j M[k, j] = <g_k, g_obj>`, `g_obj` the gradient of the
objective `sum_j pi_j L_j` (`--mixing-objective`): the first-order decrease of the objective per
unit weight moved to domain k (DoGE's generalisation estimate). A step that trains on mixture w
decreases it by `eta sum_k w_k r_k`.

The objective may also be a row that is no domain: with a target set (`--mixing-objective target`,
DGA), the sketch has two more rows, the target's halves (`training.target_pass`), and pi puts all
its weight there, so `r_k = <g_k, g_target>`, divided by `|g_target|^2`. Such rows are measured
only on the steps that run the target pass; the others leave their entries as they were.

`--acodm-reward published` is AC-ODM's reward as its reference code computes it
(`published_rewards`): per domain, the off-diagonal row sum of the Gram of the domains' mean
gradients over the mean gradient norm, clipped, then z-scored across the domains. The signal then
smooths that reward, per domain present, in place of `r_k`.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy
import torch

from megatron_acodm.errors import UserError
from megatron_acodm.sketch.segments import HALVES

SCORES = ("alignment", "published")
TARGET = "target"  # --mixing-objective target: the target set's row
FULL_STEP_ERRORS = 4.0  # a score this many standard errors from the mixture's mean gets the full step
# The reference code's constants for AC-ODM's reward: the clip of the scores (its dw_min, dw_max), the
# bound of their z-scores, and the epsilons added to the mean norm and to the standard deviation.
PUBLISHED_CLIP = 999.0
PUBLISHED_BOUND = 3.0
PUBLISHED_NORM_EPSILON = 1e-6
PUBLISHED_SPREAD_EPSILON = 1e-8


class MovingAverage:
    """Bias-corrected exponential moving average of a noisy array, entry by entry, over the steps
    each entry was observed, with the standard error of that average."""

    def __init__(self, shape: tuple[int, ...], decay: float):
        if not 0.0 <= decay < 1.0:
            raise UserError(f"--mixing-score-ema must be in [0, 1), got {decay}")
        self.decay = decay
        self.first = numpy.zeros(shape)  # sum of weight * value
        self.second = numpy.zeros(shape)  # sum of weight * value^2
        self.weight = numpy.zeros(shape)  # sum of weights (1 - decay^n: the bias correction)
        self.weight_squared = numpy.zeros(shape)  # sum of squared weights (for the effective count)

    def update(self, value: numpy.ndarray, observed: numpy.ndarray) -> None:
        keep, new = self.decay, 1.0 - self.decay
        for total, term in ((self.first, value), (self.second, value**2)):
            total[observed] = keep * total[observed] + new * term[observed]
        self.weight[observed] = keep * self.weight[observed] + new
        self.weight_squared[observed] = keep**2 * self.weight_squared[observed] + new**2

    @property
    def mean(self) -> numpy.ndarray:
        """The average; 0 where nothing was observed yet."""
        return numpy.divide(self.first, self.weight, out=numpy.zeros_like(self.first), where=self.weight > 0)

    @property
    def standard_error(self) -> numpy.ndarray:
        """The standard error of `mean` (inf until an entry was observed twice)."""
        observed = self.weight > 0
        count = numpy.divide(self.weight**2, self.weight_squared, out=numpy.ones_like(self.weight), where=observed)
        spread = numpy.divide(self.second, self.weight, out=numpy.zeros_like(self.second), where=observed) - self.mean**2
        error = numpy.full(self.first.shape, numpy.inf)
        several = count > 1.0 + 1e-9
        error[several] = numpy.sqrt(numpy.maximum(spread[several], 0.0) / (count[several] - 1.0))
        return error

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(getattr(self, name).copy()) for name in ("first", "second", "weight", "weight_squared")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            setattr(self, name, value.numpy().copy())


def _domain_sums(half_gram: numpy.ndarray, half_tokens: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The Gram `[K, K]` of the domains' whole sketches (each the sum of its two halves) and the
    tokens `[K, 2]` of each domain's halves."""
    num_domains = len(half_tokens) // HALVES
    tokens = numpy.asarray(half_tokens, dtype=numpy.float64).reshape(num_domains, HALVES)
    return half_gram.reshape(num_domains, HALVES, num_domains, HALVES).sum(axis=(1, 3)), tokens


def mean_gradient_gram(half_gram: numpy.ndarray, half_tokens: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    """`M [K, K]` with `M[k, j] ~ <g_k, g_j>` of the domains' mean gradients (the diagonal from the
    halves), and which entries this step observed (both domains present; both halves for the diagonal)."""
    summed, tokens = _domain_sums(half_gram, half_tokens)
    domain_tokens = tokens.sum(axis=1)
    present, both_halves = domain_tokens > 0, numpy.all(tokens > 0, axis=1)
    observed = numpy.outer(present, present)
    numpy.fill_diagonal(observed, both_halves)
    counts = numpy.maximum(domain_tokens, 1)
    gram = numpy.where(observed, summed / numpy.outer(counts, counts), 0.0)
    diagonal = numpy.diagonal(half_gram[0::HALVES, 1::HALVES]) / numpy.maximum(tokens[:, 0] * tokens[:, 1], 1)
    numpy.fill_diagonal(gram, numpy.where(both_halves, diagonal, 0.0))
    return gram, observed


def published_rewards(half_gram: numpy.ndarray, half_tokens: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    """AC-ODM's reward as its reference code computes it, float64 [K], and the domains present.

    `G[k, j] = <g_k, g_j>`, g_k domain k's mean gradient per token, its two halves together (so the
    diagonal is the plain `<g_k, g_k>`); a domain absent from the step is a zero row. Then
    `score_k = sum_{j != k} G[k, j] / (mean over all K domains of sqrt(G[k, k]) + 1e-6)`, clipped to
    [-999, 999]; the reward is the scores' z-score across the K domains (`standardised`).

    The reference sums each domain's gradient over its micro-batches and divides by their count: a
    mean of per-micro-batch mean gradients. With samples of one length and full loss masks every
    micro-batch has as many tokens, and that is the mean gradient per token used here. The sketch's
    rows carry the training schedule's per-token factor and cover the sketched layers only, so the
    scores' scale is not the reference's: the z-score removes it, and the clip and the epsilons act
    at this scale, not at the reference's."""
    summed, tokens = _domain_sums(half_gram, half_tokens)
    counts = tokens.sum(axis=1)
    present = counts > 0
    inverse = numpy.divide(1.0, counts, out=numpy.zeros_like(counts), where=present)
    gram = summed * numpy.outer(inverse, inverse)
    norms = numpy.sqrt(numpy.maximum(numpy.diag(gram), 0.0))
    scores = (gram.sum(axis=1) - numpy.diag(gram)) / (norms.mean() + PUBLISHED_NORM_EPSILON)
    return standardised(numpy.clip(scores, -PUBLISHED_CLIP, PUBLISHED_CLIP)), present


def standardised(values: numpy.ndarray) -> numpy.ndarray:
    """`(v - mean) / (std + 1e-8)` with the unbiased std (torch's), clamped to [-3, 3], as the
    reference normalises its reward across the domains. Ten values or fewer never reach the clamp:
    an unbiased z-score of n values is at most `(n - 1) / sqrt(n)`."""
    spread = float(numpy.std(values, ddof=1))
    centred = values - values.mean()
    return numpy.clip(centred / (spread + PUBLISHED_SPREAD_EPSILON), -PUBLISHED_BOUND, PUBLISHED_BOUND)


def target_objective(num_domains: int) -> numpy.ndarray:
    """pi over the K domains' rows and the target's: all of it on the target."""
    objective = numpy.zeros(num_domains + 1)
    objective[-1] = 1.0
    return objective


class AlignmentSignal:
    """Per-domain scores `r_k = <g_k, g_obj>`, scale-free and smoothed; see the module's docstring.

    `objective`: pi over the signal's rows, a simplex: the K domains (`--mixing-objective`), then
    any rows that are no domain (`target_objective`); `num_domains` (K, default: every row) says
    where the domains end. `score`: "alignment" (this module's) or "published" (AC-ODM's reference
    reward, which reads no objective). `decay`: the moving averages' (`--mixing-score-ema`).
    `smoothed_scale`: divide by the moving average of the scale rather than by each step's own."""

    def __init__(
        self,
        objective: numpy.ndarray,
        decay: float,
        score: str = "alignment",
        num_domains: Optional[int] = None,
        smoothed_scale: bool = False,
    ):
        if score not in SCORES:
            raise UserError(f"--acodm-reward must be one of {', '.join(SCORES)}, got {score!r}")
        self.objective = numpy.asarray(objective, dtype=numpy.float64)
        self.score = score
        self.rows = len(self.objective)
        self.num_domains = self.rows if num_domains is None else num_domains
        if score == "published" and self.num_domains < 2:
            raise UserError("--acodm-reward published z-scores its reward across the domains: give --data-path two or more")
        self.average = MovingAverage((self.rows, self.rows) if score == "alignment" else (self.num_domains,), decay)
        self.scale = MovingAverage((1,), decay) if smoothed_scale else None

    def observe(self, half_gram: numpy.ndarray, half_tokens: numpy.ndarray) -> Optional[numpy.ndarray]:
        """Take one step's signal and return what it says, per domain: "alignment": that step's
        scores (entries it did not observe taken from the average), or None when the step says
        nothing (no objective domain with both halves, or no positive scale yet); "published": that
        step's reward, every domain's (an absent one's too, as the reference computes it)."""
        half_gram = numpy.where(numpy.isfinite(half_gram), half_gram, 0.0)
        if self.score == "published":
            reward, present = published_rewards(half_gram, half_tokens)
            self.average.update(reward, present)
            return reward
        gram, observed = mean_gradient_gram(half_gram, half_tokens)
        measured = numpy.diag(observed) & (self.objective > 0)  # objective domains with both halves
        if not measured.any():
            return None
        weights = self.objective[measured]
        scale = self._scale(float(weights @ numpy.diag(gram)[measured] / weights.sum()))
        if not (numpy.isfinite(scale) and scale > 0):
            return None
        value = gram / scale
        self.average.update(value, observed)
        return self._domains(numpy.where(observed, value, self.average.mean) @ self.objective)

    def _scale(self, step_scale: float) -> float:
        """The scale to divide this step's Gram by: its own, or with `smoothed_scale` the moving
        average over the steps that measured it, this one included, but no less than that average's
        standard error (infinite until two steps were measured, so the first one is not used)."""
        if self.scale is None:
            return step_scale
        self.scale.update(numpy.array([step_scale]), numpy.array([True]))
        return float(max(self.scale.mean[0], self.scale.standard_error[0]))

    def _domains(self, per_row: numpy.ndarray) -> numpy.ndarray:
        return per_row[: self.num_domains]

    def scores(self) -> numpy.ndarray:
        """The smoothed `r_k`, float64 [K] (0 for a domain never observed)."""
        mean = self.average.mean
        return self._domains(mean if self.score == "published" else mean @ self.objective)

    def standard_errors(self) -> numpy.ndarray:
        """The standard error of each smoothed score (inf until observed twice)."""
        error = self.average.standard_error
        if self.score == "published":
            return self._domains(error)
        weighted = numpy.where(self.objective > 0, error**2, 0.0)  # an entry the objective ignores adds nothing
        return self._domains(numpy.sqrt(weighted @ self.objective**2))

    def signal_to_noise(self) -> numpy.ndarray:
        """|score| / standard error per domain (0 while the error is infinite)."""
        with numpy.errstate(divide="ignore", invalid="ignore"):
            ratio = numpy.abs(self.scores()) / self.standard_errors()
        return numpy.nan_to_num(ratio, nan=0.0, posinf=numpy.finfo(numpy.float64).max)

    def direction(self, weights: numpy.ndarray) -> numpy.ndarray:
        """The step a mixer at `weights` should take, float64 [K] in [-1, 1], from how sure the
        signal is: each score less the mixture's mean score, in standard errors (t), is 0 within
        one error (so noise leaves the weights alone) and grows to +-1 at `FULL_STEP_ERRORS`:
        `sign(t) min(1, max(0, |t| - 1) / (FULL_STEP_ERRORS - 1))`. Scale-free by construction."""
        scores = self.scores()
        with numpy.errstate(divide="ignore", invalid="ignore"):
            t = numpy.nan_to_num((scores - float(weights @ scores)) / self.standard_errors(), nan=0.0, posinf=0.0, neginf=0.0)
        return numpy.sign(t) * numpy.clip((numpy.abs(t) - 1.0) / (FULL_STEP_ERRORS - 1.0), 0.0, 1.0)

    def state_dict(self) -> dict[str, Any]:
        state = {"score": self.score, "objective": torch.from_numpy(self.objective.copy()), "average": self.average.state_dict()}
        if self.scale is not None:
            state["scale"] = self.scale.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["objective"].numpy()
        if state["score"] != self.score or saved.shape != self.objective.shape or not numpy.allclose(saved, self.objective, rtol=0, atol=1e-12):
            raise UserError(
                f"the checkpoint's mixer scored {state['score']} against objective {state['objective'].tolist()}, "
                f"this run {self.score} against {self.objective.tolist()}; resume with the same --mixing-objective and --acodm-reward"
            )
        self.average.load_state_dict(state["average"])
        if self.scale is not None:
            self.scale.load_state_dict(state["scale"])
