"""ODM, online data mixing (Albalak et al. 2023, arXiv 2312.02406): an EXP3-style bandit whose arms
are the domains and whose reward is the training loss (a domain the model still finds hard pays more).

After t updates (t >= 1), with K domains and exploration `e_t = min(1/K, sqrt(ln K / (K t)))`:

- default (docs/DESIGN.md): for each domain sampled in the step, `R_i <- a R_i + (1 - a) exp(L_i)`,
  with `R_i = 1` at the start (exp of a score of 0, as the paper starts); `pi_i = (1 - K e_t) R_i / sum_j R_j + e_t`.
  R is kept as log R and updated with logaddexp, so no loss overflows it.
- `importance_weighting` (the paper's Algorithm 1): the reward estimate is the loss divided by the
  probability the domain was sampled with, smoothed: `R_i <- a R_i + (1 - a) L_i / pi_i`, with `R_i = 0`
  at the start, and `pi_i = (1 - K e_t) softmax(e_{t-1} R)_i + e_t` with `e_0 = 1/K`. The
  exponent needs the paper's step size e_{t-1}: exp(L / pi) itself would overflow. Here
  `pi_i` is the probability the step's batch drew domain i with: the mixture the blender followed
  (this mixer's weights, or with --min-samples-per-domain those with every domain's minimum share).

Before the first update, and for `warmup_steps` steps, the mixer returns its initial weights
(`--mixing-prior`, uniform by default as EXP3 starts); the updates made meanwhile still accumulate
rewards and count towards t.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Optional, Sequence

import numpy

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.base import DOMAIN_LOSSES, Mixer, StepSignals
from megatron_acodm.mixing.weighting import mixing_prior


class ODMMixer(Mixer):
    """The ODM bandit; see the module's docstring for the exact rules."""

    needs = frozenset({DOMAIN_LOSSES})
    reads = frozenset({"mixing_prior"})

    def __init__(
        self,
        names: Sequence[str],
        initial_weights: Sequence[float],
        *,
        smoothing: float = 0.5,
        warmup_steps: int = 0,
        importance_weighting: bool = False,
        floor: float = 0.0,
    ):
        super().__init__(names, initial_weights, floor)
        if not 0.0 <= smoothing < 1.0:
            raise UserError(f"--odm-smoothing must be in [0, 1), got {smoothing}")
        if warmup_steps < 0:
            raise UserError(f"--odm-warmup-steps must be >= 0, got {warmup_steps}")
        self.smoothing = smoothing
        self.warmup_steps = warmup_steps
        self.importance_weighting = importance_weighting
        # log R (default) or the paper's R (importance weighting): zero is the start of both.
        self.scores = numpy.zeros(self.num_domains)
        self.updates = 0

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument(
            "--odm-smoothing",
            type=float,
            default=0.5,
            help="ODM: smoothing a of the reward, R <- a R + (1 - a) reward; in [0, 1)",
        )
        group.add_argument(
            "--odm-warmup-steps",
            type=int,
            default=0,
            help="ODM: keep the initial weights for this many steps while the rewards accumulate",
        )
        group.add_argument(
            "--odm-importance-weighting",
            action="store_true",
            help="ODM: the paper's reward estimate, loss / sampling probability, under EXP3's exponential weights",
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
            mixing_prior(args, names, initial_weights, domain_tokens),
            smoothing=args.odm_smoothing,
            warmup_steps=args.odm_warmup_steps,
            importance_weighting=args.odm_importance_weighting,
            floor=args.mixing_floor,
        )

    def _exploration(self, updates: int) -> float:
        """e_t; e_0 = 1/K."""
        if updates == 0:
            return 1.0 / self.num_domains
        return min(1.0 / self.num_domains, math.sqrt(math.log(self.num_domains) / (self.num_domains * updates)))

    def _policy(self) -> numpy.ndarray:
        if self.updates < max(1, self.warmup_steps):
            return self.initial_weights
        logits = self.scores * self._exploration(self.updates - 1) if self.importance_weighting else self.scores
        preference = numpy.exp(logits - logits.max())
        epsilon = self._exploration(self.updates)
        return (1.0 - self.num_domains * epsilon) * preference / preference.sum() + epsilon

    def _update(self, signals: StepSignals) -> None:
        sampled = (signals.realised_counts > 0) & (signals.domain_tokens > 0)
        loss = signals.domain_loss[sampled]
        a = self.smoothing
        if self.importance_weighting:
            probability = signals.followed_weights[sampled]
            self.scores[sampled] = a * self.scores[sampled] + (1.0 - a) * loss / probability
        else:
            with numpy.errstate(divide="ignore"):  # a = 0 gives log 0 = -inf: no memory, as meant
                log_a = numpy.log(a)
            self.scores[sampled] = numpy.logaddexp(log_a + self.scores[sampled], math.log1p(-a) + loss)
        self.updates += 1

    def _state(self) -> dict[str, Any]:
        return {
            "scores": self.scores.tolist(),
            "updates": self.updates,
            "importance_weighting": self.importance_weighting,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if state["importance_weighting"] != self.importance_weighting:
            raise UserError(
                f"the ODM state was saved with --odm-importance-weighting={state['importance_weighting']}, "
                f"this run has {self.importance_weighting}; its rewards mean something else"
            )
        self.scores = numpy.array(state["scores"], dtype=numpy.float64)
        self.updates = int(state["updates"])
