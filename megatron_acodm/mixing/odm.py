"""ODM, online data mixing (Albalak et al. 2023, arXiv 2312.02406): an EXP3-style bandit whose arms
are the domains and whose reward is the training loss (a domain the model still finds hard pays more),
one update per global step.

With K domains, t the global iteration (1-based: the step just trained is step t - 1) and the
exploration `e_t = min(1/K, sqrt(ln K / (K t)))`, each update first moves `e` on: `e' = e`, `e = e_t`
(`e = 1/K` before the first). L_i is domain i's mean loss in the step and pi_i the probability it
was drawn with (the mixture the blender followed: this mixer's weights, or with
--min-samples-per-domain those with every domain's minimum share). Then, by `--odm-update`, for each
domain sampled in the step:

- `exp3-smoothed` (default; the paper's Algorithm 1, EXP3 on the importance-weighted loss with a
  moving average for a reward that drifts as the model learns): `R_i <- a R_i + (1 - a) L_i / pi_i`,
  `R_i = 0` at the start, a = `--odm-smoothing` (0.9); the next mixture is
  `pi_i = (1 - K e) exp(e' R_i) / sum_j exp(e' R_j) + e`, computed with the largest exponent subtracted.
- `exp3` (the authors' code, github.com/alon-albalak/online-data-mixing, `Exp3WeightUpdater`):
  the same mixture from a cumulative reward, `R_i <- R_i + (L_i / 10) / pi_i`; the 1/10 is the
  code's fixed reward scale (its commit "scale down rewards to prevent overflow").
- `smoothed-mean` (the code's `SmoothedMeanWeightUpdater`, which its README calls the paper's
  implementation and its 1B and 3B training scripts select): `R_i <- a R_i + (1 - a) exp(L_i)`,
  `R_i = 0` at the start, and `pi_i = (1 - K e) R_i / sum_j R_j + e`. Every update adds a positive
  term to a sampled domain, so the sum is positive from the first on. R is kept as log R (log 0 =
  -inf at the start) and updated with logaddexp, so no loss overflows it.
The smoothing a = 0.9 is the code's default (its training scripts pass 0.5 to `smoothed-mean`).

Warm-up (all): for the first `ceil(warmup_fraction x total_steps)` iterations there is no update and
no reward is gathered (the code's `iteration > warmup_steps`; the paper's runs: 2000 of 100,000 steps,
so a default fraction of 0.02). Until the first update the mixture is the initial weights:
`--mixing-prior`, by default the natural (token) distribution the authors start from. A step
without a loss token in any domain has nothing to reward and makes no update.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Optional, Sequence

import numpy

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.base import DOMAIN_LOSSES, Mixer, StepSignals, run_length
from megatron_acodm.mixing.weighting import mixing_prior

UPDATES = ("exp3-smoothed", "exp3", "smoothed-mean")
SMOOTHED = ("exp3-smoothed", "smoothed-mean")  # the updates that read --odm-smoothing
EXPONENTIAL = ("exp3-smoothed", "exp3")  # the updates whose mixture is EXP3's exponential weights
REWARD_SCALE = 10.0  # exp3: each loss is divided by this before it is importance-weighted
DEFAULT_SMOOTHING = 0.9


def exploration(num_domains: int, iteration: int) -> float:
    """e_t of EXP3 at global iteration t (1-based)."""
    return min(1.0 / num_domains, math.sqrt(math.log(num_domains) / (num_domains * iteration)))


class ODMMixer(Mixer):
    """The ODM bandit; see the module's docstring for the exact rules."""

    needs = frozenset({DOMAIN_LOSSES})
    reads = frozenset({"mixing_prior"})
    state_format = 2
    state_change = "its rewards are the paper's and the reference code's, no longer a smoothed exp(L) or L / pi"

    def __init__(
        self,
        names: Sequence[str],
        initial_weights: Sequence[float],
        *,
        total_steps: int,
        update: str = "exp3-smoothed",
        smoothing: Optional[float] = None,
        warmup_fraction: float = 0.02,
        floor: float = 0.0,
    ):
        super().__init__(names, initial_weights, floor)
        if update not in UPDATES:
            raise UserError(f"--odm-update must be one of {', '.join(UPDATES)}, got {update!r}")
        if update not in SMOOTHED and smoothing is not None:
            raise UserError(f"--odm-smoothing is not read by --odm-update {update} (a cumulative reward); drop it")
        smoothing = DEFAULT_SMOOTHING if smoothing is None else smoothing
        if not 0.0 <= smoothing < 1.0:
            raise UserError(f"--odm-smoothing must be in [0, 1), got {smoothing}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise UserError(f"--odm-warmup-fraction must be in [0, 1), got {warmup_fraction}")
        self.update = update
        self.smoothing = smoothing
        self.warmup_steps = math.ceil(warmup_fraction * total_steps)
        # R for the exponential weights; log R (-inf: R = 0) for smoothed-mean.
        self.rewards = numpy.zeros(self.num_domains) if update in EXPONENTIAL else numpy.full(self.num_domains, -numpy.inf)
        self.exploration = 1.0 / self.num_domains  # e
        self.previous_exploration: Optional[float] = None  # e'; None until the first update

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument(
            "--odm-update",
            choices=UPDATES,
            default="exp3-smoothed",
            help="ODM: exp3-smoothed, the paper's EXP3 on a moving average of the importance-weighted loss; "
            "exp3, the authors' code's cumulative reward; smoothed-mean, the code's moving average of exp(loss), normalised",
        )
        group.add_argument(
            "--odm-smoothing",
            type=float,
            default=None,
            help=f"ODM with --odm-update exp3-smoothed or smoothed-mean: a of the reward's moving average "
            f"R <- a R + (1 - a) reward; in [0, 1), default {DEFAULT_SMOOTHING}",
        )
        group.add_argument(
            "--odm-warmup-fraction",
            type=float,
            default=0.02,
            help="ODM: the first fraction of --train-iters keeps the initial weights, with no update and no reward "
            "gathered; in [0, 1)",
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
            mixing_prior(args, names, initial_weights, domain_tokens, published="tokens"),
            total_steps=run_length(args, "odm", "its warm-up is a fraction of the run"),
            update=args.odm_update,
            smoothing=args.odm_smoothing,
            warmup_fraction=args.odm_warmup_fraction,
            floor=args.mixing_floor,
        )

    def _policy(self) -> numpy.ndarray:
        if self.previous_exploration is None:
            return self.initial_weights
        logits = self.previous_exploration * self.rewards if self.update in EXPONENTIAL else self.rewards
        preference = numpy.exp(logits - logits.max())
        e = self.exploration
        return (1.0 - self.num_domains * e) * preference / preference.sum() + e

    def _update(self, signals: StepSignals) -> None:
        iteration = signals.step + 1
        sampled = (signals.realised_counts > 0) & (signals.domain_tokens > 0)
        if iteration <= self.warmup_steps or not sampled.any():
            return
        self.previous_exploration, self.exploration = self.exploration, exploration(self.num_domains, iteration)
        loss = signals.domain_loss[sampled]
        probability = signals.followed_weights[sampled]
        if self.update == "exp3":
            self.rewards[sampled] += loss / REWARD_SCALE / probability
        elif self.update == "exp3-smoothed":
            self.rewards[sampled] = self.smoothing * self.rewards[sampled] + (1.0 - self.smoothing) * loss / probability
        else:
            with numpy.errstate(divide="ignore"):  # a = 0 gives log 0 = -inf: no memory, as meant
                log_a = numpy.log(self.smoothing)
            self.rewards[sampled] = numpy.logaddexp(log_a + self.rewards[sampled], math.log1p(-self.smoothing) + loss)

    def _state(self) -> dict[str, Any]:
        return {
            "update": self.update,
            "rewards": self.rewards.tolist(),
            "exploration": self.exploration,
            "previous_exploration": self.previous_exploration,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if state["update"] != self.update:
            raise UserError(
                f"the ODM state was saved with --odm-update {state['update']}, this run has {self.update}; "
                f"resume with --odm-update {state['update']}"
            )
        self.rewards = numpy.array(state["rewards"], dtype=numpy.float64)
        self.exploration = float(state["exploration"])
        previous = state["previous_exploration"]
        self.previous_exploration = None if previous is None else float(previous)
