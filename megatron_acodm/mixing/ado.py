"""ADO, Adaptive Data Optimization (Jiang et al., ICLR 2025, arXiv 2410.11820): each domain's loss
follows a power law of the samples the model has seen, fitted online, and the mixture favours the
domains whose fitted law forecasts the fastest learning.

Per domain k, fitted on points (n, L): `L_k(n) = eps_k + beta_k n^-alpha_k`, where n counts every
sample the model has trained on (as the authors' code counts it, so that what one domain's samples
teach another is in every law); a step's n includes its own samples, as the cumulative sum of their
code does. After each step t (1-based), with mu the prior (`--mixing-prior`):

- credit: `h_k <- g1 c_k + (1 - g1) h_k`, with c the shares of the samples the step's batch drew
  from each domain (its realised counts, normalised, as the authors' code credits them), h = mu at
  the start; the credit enters as `h^s`, the authors' corrected rule (their commit "Fixing update
  rule to the correct version" replaced the first release's `(h (1 - h))^s`);
- once every domain has a law: forecast learning speed `v_k = -dL_k/dn = alpha_k (L_k(n) - eps_k) / n`,
  preference `rho_k ~ mu_k h_k^s v_k` (mu when every v_k is 0), then `rho <- max(rho, d_min) / sum`;
- the next mixture `pi = g2 rho + (1 - g2) pibar`, then `pibar <- (1 - 1/(t+1)) pibar + rho / (t+1)`,
  the running mean of rho, pibar = mu until the first law. Until then pi = mu.

What differs from the paper and its code, and why (docs/DESIGN.md, "ADO"):
- Points: the paper fits per-step training losses smoothed by a Savitzky-Golay filter and subsampled
  every 10 steps, refitting every 1000 of 60,000 steps. Here one point is a domain's token-weighted
  mean loss over `fit_interval` steps (default 7): the step losses, measured on samples the model has
  not trained on yet, are an unbiased estimate of the held-out loss, and their mean over the block
  is the smoothing. The point's n is the same token-weighted mean of each step's n, so that n and L
  are taken at the same steps. The laws are refitted at every point: a domain's fit costs about
  2 ms here (40 points). A domain with no tokens in a block has no point for it.
- Warm-up: the points of the first `warmup_fraction` of the run are left out (the paper starts
  after 500 of 60,000 steps, past the loss's first drop; at a few hundred steps that drop is the
  first tenth). A law needs `MIN_POINTS` points of its own.
- Fit: the paper minimises a Huber loss (delta 1e-3) of log L with L-BFGS from a grid of starts.
  Here, for each eps on a grid over [0, min L), alpha and log beta are the least-squares line of
  log(L - eps) against log n, alpha clipped to [0, 0.8] (the paper's bound), and the eps whose law
  has the smallest Huber loss of log L wins. The code's other bounds (on beta, on eps, a floor of
  0.05 under alpha in the forecast) are left out: they suit the Pile's losses, not every corpus.

Defaults: the paper's g1 = g2 = 0.1, s = 0.5, d_min = 0.01, and its prior, the corpus' natural
(token) distribution (`--mixing-prior` when given); the fit interval (7) and warm-up (0.0322), which
the paper sets for 60,000 steps, were chosen on the tuning corpus (bench/tune_mixers.py).

A resumed run may change any ADO option: each part of the state means the same under all of them.
A state of an earlier format (before the credit followed the realised counts and a point's n its
steps) is refused.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Optional, Sequence

import numpy

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.base import DOMAIN_LOSSES, Mixer, StepSignals, run_length
from megatron_acodm.mixing.weighting import mixing_prior

MIN_POINTS = 3  # a law has three parameters
MAX_EXPONENT = 0.8  # the paper's bound on alpha
HUBER_DELTA = 1e-3  # the paper's, on log-loss residuals
EPSILON_GRID = 64  # candidate irreducible losses, evenly over [0, min L)
# Chosen on the tuning corpus (bench/tune_mixers.py, bench/results/tuning.md).
DEFAULT_FIT_INTERVAL = 7
DEFAULT_WARMUP_FRACTION = 0.0322


def fit_power_law(samples: numpy.ndarray, losses: numpy.ndarray) -> tuple[float, float, float]:
    """(beta, eps, alpha) of `L = eps + beta n^-alpha` through the points; see the module's docstring."""
    log_n, log_loss = numpy.log(samples), numpy.log(losses)
    centred = log_n - log_n.mean()
    best: Optional[tuple[float, float, float, float]] = None
    for fraction in numpy.arange(EPSILON_GRID) / EPSILON_GRID:
        eps = fraction * losses.min()
        reducible = numpy.log(losses - eps)
        alpha = float(numpy.clip(-(centred @ reducible) / (centred @ centred), 0.0, MAX_EXPONENT))
        log_beta = float(numpy.mean(reducible + alpha * log_n))
        with numpy.errstate(divide="ignore"):  # eps = 0: log 0 = -inf, which logaddexp takes
            predicted = numpy.logaddexp(log_beta - alpha * log_n, numpy.log(eps))
        residual = numpy.abs(predicted - log_loss)
        huber = numpy.where(residual <= HUBER_DELTA, 0.5 * residual**2, HUBER_DELTA * (residual - 0.5 * HUBER_DELTA)).sum()
        if best is None or huber < best[0]:
            best = (float(huber), math.exp(log_beta), float(eps), alpha)
    assert best is not None
    return best[1:]


class ADOMixer(Mixer):
    """ADO's online power laws and smoothed policy; see the module's docstring for the exact rules."""

    needs = frozenset({DOMAIN_LOSSES})
    reads = frozenset({"mixing_prior"})
    state_format = 2
    state_change = "its credit follows the realised counts and a fitted point's n its steps"

    def __init__(
        self,
        names: Sequence[str],
        initial_weights: Sequence[float],
        *,
        total_steps: int,
        prior: Optional[Sequence[float]] = None,
        warmup_fraction: float = DEFAULT_WARMUP_FRACTION,
        fit_interval: int = DEFAULT_FIT_INTERVAL,
        credit_smoothing: float = 0.1,
        credit_exponent: float = 0.5,
        policy_smoothing: float = 0.1,
        min_probability: float = 0.01,
        floor: float = 0.0,
    ):
        super().__init__(names, initial_weights, floor)
        if not 0.0 <= warmup_fraction < 1.0:
            raise UserError(f"--ado-warmup-fraction must be in [0, 1), got {warmup_fraction}")
        if fit_interval < 1:
            raise UserError(f"--ado-fit-interval must be >= 1 step, got {fit_interval}")
        if not 0.0 < credit_smoothing <= 1.0:
            raise UserError(f"--ado-credit-smoothing must be in (0, 1], got {credit_smoothing}")
        if credit_exponent < 0.0:
            raise UserError(f"--ado-credit-exponent must be >= 0, got {credit_exponent}")
        if not 0.0 <= policy_smoothing <= 1.0:
            raise UserError(f"--ado-policy-smoothing must be in [0, 1], got {policy_smoothing}")
        if not 0.0 <= min_probability <= 1.0 / self.num_domains:
            raise UserError(
                f"--ado-min-probability must be in [0, 1/K] = [0, {1.0 / self.num_domains:.4g}] for "
                f"{self.num_domains} domains, got {min_probability}"
            )
        self.prior = numpy.full(self.num_domains, 1.0 / self.num_domains) if prior is None else numpy.asarray(prior, float)
        self.warmup_steps = math.ceil(warmup_fraction * total_steps)
        self.fit_interval = fit_interval
        self.credit_smoothing = credit_smoothing
        self.credit_exponent = credit_exponent
        self.policy_smoothing = policy_smoothing
        self.min_probability = min_probability

        self.steps = 0
        self.samples = 0  # n: every sample trained on so far
        self.credit = self.prior.copy()  # h
        self.average = self.prior.copy()  # pibar
        self.mixture = self.prior.copy()  # pi, the next step's weights before the floor
        # The current block's sums over its steps, per domain: loss, tokens, and tokens x n.
        self.block_loss = numpy.zeros(self.num_domains)
        self.block_tokens = numpy.zeros(self.num_domains)
        self.block_samples = numpy.zeros(self.num_domains)
        self.block_steps = 0
        # Each point's per-domain n and mean loss (NaN: the domain had no tokens in the block).
        self.point_samples: list[list[float]] = []
        self.point_losses: list[list[float]] = []
        self.laws: Optional[numpy.ndarray] = None  # [K, 3]: beta, eps, alpha

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument(
            "--ado-warmup-fraction",
            type=float,
            default=DEFAULT_WARMUP_FRACTION,
            help="ADO: the first fraction of --train-iters, the loss's first drop, is left out of the power-law "
            "fits; in [0, 1)",
        )
        group.add_argument(
            "--ado-fit-interval",
            type=int,
            default=DEFAULT_FIT_INTERVAL,
            help="ADO: steps per fitted point (each domain's mean loss over them); the laws are refitted at each point",
        )
        group.add_argument(
            "--ado-credit-smoothing",
            type=float,
            default=0.1,
            help="ADO: gamma1, the weight of the last step's sample shares c in the credit h <- g1 c + (1 - g1) h; in (0, 1]",
        )
        group.add_argument(
            "--ado-credit-exponent",
            type=float,
            default=0.5,
            help="ADO: s, the preference follows prior x credit^s x forecast learning speed; >= 0",
        )
        group.add_argument(
            "--ado-policy-smoothing",
            type=float,
            default=0.1,
            help="ADO: gamma2, the weight of the new preference against its running mean in each step's mixture; in [0, 1]",
        )
        group.add_argument(
            "--ado-min-probability",
            type=float,
            default=0.01,
            help="ADO: delta_min, every domain's preference is at least this before normalising; in [0, 1/K]",
        )

    @classmethod
    def from_args(
        cls,
        *,
        names: Sequence[str],
        initial_weights: Sequence[float],
        domain_tokens: Optional[Sequence[float]],
        args: argparse.Namespace,
        **_: Any,
    ) -> Mixer:
        return cls(
            names,
            initial_weights,
            total_steps=run_length(args, "ado", "its warm-up is a fraction of the run"),
            prior=mixing_prior(args, names, initial_weights, domain_tokens, published="tokens"),
            warmup_fraction=args.ado_warmup_fraction,
            fit_interval=args.ado_fit_interval,
            credit_smoothing=args.ado_credit_smoothing,
            credit_exponent=args.ado_credit_exponent,
            policy_smoothing=args.ado_policy_smoothing,
            min_probability=args.ado_min_probability,
            floor=args.mixing_floor,
        )

    def _policy(self) -> numpy.ndarray:
        return self.mixture

    def _update(self, signals: StepSignals) -> None:
        drawn = signals.realised_counts.sum()
        self.credit = self.credit_smoothing * signals.realised_counts / drawn + (1.0 - self.credit_smoothing) * self.credit
        self.samples += int(drawn)
        self.steps += 1
        if self.steps > self.warmup_steps:
            self._add_to_block(signals)
        if self.laws is None:
            return
        preference = self._preference()
        self.mixture = self.policy_smoothing * preference + (1.0 - self.policy_smoothing) * self.average
        self.average = (1.0 - 1.0 / (self.steps + 1)) * self.average + preference / (self.steps + 1)

    def _add_to_block(self, signals: StepSignals) -> None:
        """Accumulate the step; a full block becomes a point, and the laws are refitted."""
        self.block_loss += signals.domain_loss_sum
        self.block_tokens += signals.domain_tokens
        self.block_samples += signals.domain_tokens * self.samples
        self.block_steps += 1
        if self.block_steps < self.fit_interval:
            return
        with numpy.errstate(invalid="ignore"):  # a domain without tokens: 0 / 0, no point
            seen = self.block_tokens > 0
            losses = numpy.where(seen, self.block_loss / self.block_tokens, numpy.nan)
            samples = numpy.where(seen, self.block_samples / self.block_tokens, numpy.nan)
        self.point_samples.append(samples.tolist())
        self.point_losses.append(losses.tolist())
        self.block_loss[:], self.block_tokens[:], self.block_samples[:], self.block_steps = 0.0, 0.0, 0.0, 0
        self._fit()

    def _fit(self) -> None:
        samples = numpy.array(self.point_samples, dtype=numpy.float64)
        losses = numpy.array(self.point_losses, dtype=numpy.float64)
        seen = numpy.isfinite(losses) & (losses > 0)
        if seen.sum(axis=0).min() < MIN_POINTS:
            return
        self.laws = numpy.array([fit_power_law(samples[seen[:, k], k], losses[seen[:, k], k]) for k in range(self.num_domains)])

    def learning_speed(self) -> numpy.ndarray:
        """-dL_k/dn at the samples seen so far, from each domain's law."""
        assert self.laws is not None
        beta, _, alpha = self.laws.T
        return alpha * beta * self.samples ** (-alpha) / self.samples

    def _preference(self) -> numpy.ndarray:
        """rho: prior x credit^s x forecast learning speed, normalised, at least delta_min before renormalising."""
        preference = self.prior * self.credit**self.credit_exponent * self.learning_speed()
        preference = preference / preference.sum() if preference.sum() > 0 else self.prior.copy()
        preference = numpy.maximum(preference, self.min_probability)
        return preference / preference.sum()

    def domain_diagnostics(self) -> dict[str, numpy.ndarray]:
        if self.laws is None:
            return {}
        return {"exponent": self.laws[:, 2], "irreducible_loss": self.laws[:, 1]}

    def _state(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "samples": self.samples,
            "credit": self.credit.tolist(),
            "average": self.average.tolist(),
            "mixture": self.mixture.tolist(),
            "block_loss": self.block_loss.tolist(),
            "block_tokens": self.block_tokens.tolist(),
            "block_samples": self.block_samples.tolist(),
            "block_steps": self.block_steps,
            "point_samples": [list(point) for point in self.point_samples],
            "point_losses": [list(point) for point in self.point_losses],
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.steps, self.samples, self.block_steps = int(state["steps"]), int(state["samples"]), int(state["block_steps"])
        for field in ("credit", "average", "mixture", "block_loss", "block_tokens", "block_samples"):
            setattr(self, field, numpy.array(state[field], dtype=numpy.float64))
        self.point_samples = [[float(samples) for samples in point] for point in state["point_samples"]]
        self.point_losses = [[float(loss) for loss in point] for point in state["point_losses"]]
        self.laws = None
        if self.point_samples:
            self._fit()  # the laws follow from the points: refitted, not stored
