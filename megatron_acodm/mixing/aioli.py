"""Aioli (Chen et al., ICLR 2025, arXiv 2411.05735): a linear mixing law whose interaction matrix A
is re-estimated during training from short sweeps of perturbed mixtures, and an exponentiated-gradient
step on the mixture.

The run is cut into `rounds` rounds of `round_steps = T // rounds` steps (the last one keeps the
remainder). Each round opens with a sweep: `sweeps` passes over the K domains, each pass in a random
order (from --seed, the round and the pass), `segment_steps` steps per domain i on the perturbed
mixture `p^i` (`one_hot_factor` on i, the rest spread evenly). The sweep's steps are training steps
of the run and count in its steps, as in the paper. Then, with mu the prior (`--mixing-prior`) and
o the objective (`--mixing-objective`):

- Law: over the sweep, a domain's loss falls linearly in what the model trained on,
  `L_j(s) = c_j - sum_m A_jm C_m(s)`, where C_m(s) sums domain m's realised share over the sweep's
  steps before step s (in steps of pure m).
- A: for each domain j, the weighted least-squares fit of that law (weights: the tokens) to the
  mean losses of j in the sweep's steps and the step after it, each measured before the step trained.
- Normalised as the paper's code does: the rows of the objective's domains, each times o_j, shifted
  by the minimum entry when it is negative, divided by their sum; smoothed over rounds,
  `Abar <- (1 - lambda) A + lambda Abar` (Abar = A in the first round).
- The mixture for the rest of the round: `p_m ~ mu_m exp(eta sum_j Abar_jm)`. Before the first
  sweep ends, p = mu. The step right after a sweep still trains on the previous p: its loss is the
  sweep's last measurement, and weights decided after a step apply from the next one.

What differs from the paper, and why (docs/DESIGN.md, "Aioli"): the paper evaluates every domain's
validation loss before the sweep and after each perturbed stretch, takes the differences and solves
the K x K system of the perturbed mixtures. Our mixer sees only each step's per-domain loss on fresh
samples, which in a single-pass run is an unbiased estimate of the held-out loss at that step; a
one-step estimate at each boundary would miss the domains the perturbed batch barely holds, so the
same linear law is fitted to every step of the sweep instead (both give the same A when the losses
follow the law exactly). The mixture follows the paper's runs (the exponential moving average of the
matrix, applied to the prior); its Algorithm 1 writes the cumulative form
`p^t ~ p^(t-1) exp(eta 1^T A^t)`, which the runs replaced by the average.

Defaults: the paper's 7-domain SlimPajama runs (2 sweeps, one-hot factor 0.75, eta 1, smoothing
0.1, a uniform prior), with the schedule sized for runs of hundreds of steps: 5 rounds and 2 steps
per segment (the paper: rounds of 200 of 40,000 steps, 10 steps per segment).

A resumed run must keep the schedule (--train-iters, --aioli-rounds, --aioli-sweeps,
--aioli-segment-steps): the state's place in a round would mean another step otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

import numpy

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.base import DOMAIN_LOSSES, Mixer, StepSignals, run_length
from megatron_acodm.mixing.weighting import domain_weighting, mixing_prior

# Chosen on the tuning corpus (bench/tune_mixers.py, bench/results/tuning.md); the paper's
# schedules are set for far longer runs.
DEFAULT_ROUNDS = 4
DEFAULT_SEGMENT_STEPS = 1


def fit_interactions(loss_sum: numpy.ndarray, tokens: numpy.ndarray, shares: numpy.ndarray) -> numpy.ndarray:
    """A [K, K] from the sweep's steps and the step after it ([S + 1, K] each; `shares` are the
    realised shares the steps trained on, the last row unused): see the module's docstring."""
    steps, domains = loss_sum.shape
    trained_before = numpy.vstack([numpy.zeros(domains), numpy.cumsum(shares[:-1], axis=0)])  # C(s)
    design = numpy.hstack([numpy.ones((steps, 1)), -trained_before])
    interactions = numpy.zeros((domains, domains))
    for j in range(domains):
        seen = tokens[:, j] > 0
        if not seen.any():
            continue
        root = numpy.sqrt(tokens[seen, j])
        solution = numpy.linalg.lstsq(design[seen] * root[:, None], loss_sum[seen, j] / tokens[seen, j] * root, rcond=None)[0]
        interactions[j] = solution[1:]
    return interactions


def normalise(interactions: numpy.ndarray, objective: numpy.ndarray) -> numpy.ndarray:
    """The objective's rows of A, each times its weight, shifted to be >= 0 and divided by their sum;
    the other rows zero."""
    chosen = objective > 0
    rows = interactions[chosen] * objective[chosen, None]
    if rows.min() < 0:
        rows = rows - rows.min()
    total = rows.sum()
    normalised = numpy.zeros_like(interactions)
    normalised[chosen] = rows / total if total > 0 else rows
    return normalised


class AioliMixer(Mixer):
    """Aioli's sweeps and exponentiated-gradient mixture; see the module's docstring for the exact rules."""

    needs = frozenset({DOMAIN_LOSSES})
    reads = frozenset({"mixing_prior", "mixing_objective"})

    def __init__(
        self,
        names: Sequence[str],
        initial_weights: Sequence[float],
        *,
        total_steps: int,
        seed: int = 0,
        prior: Optional[Sequence[float]] = None,
        objective: Optional[Sequence[float]] = None,
        rounds: int = DEFAULT_ROUNDS,
        sweeps: int = 2,
        segment_steps: int = DEFAULT_SEGMENT_STEPS,
        one_hot_factor: float = 0.75,
        eta: float = 1.0,
        smoothing: float = 0.1,
        floor: float = 0.0,
    ):
        super().__init__(names, initial_weights, floor)
        domains = self.num_domains
        if domains < 2:
            raise UserError(f"--mixer aioli needs at least 2 domains in --data-path, got {domains}")
        if rounds < 1 or sweeps < 1 or segment_steps < 1:
            raise UserError(
                f"--aioli-rounds ({rounds}), --aioli-sweeps ({sweeps}) and --aioli-segment-steps ({segment_steps}) must be >= 1"
            )
        self.round_steps = total_steps // rounds
        self.sweep_steps = sweeps * domains * segment_steps
        if self.round_steps <= self.sweep_steps:
            raise UserError(
                f"--aioli-rounds {rounds} leaves {self.round_steps} steps per round of --train-iters {total_steps}, "
                f"not more than a sweep's {self.sweep_steps} (--aioli-sweeps x {domains} domains x "
                f"--aioli-segment-steps); use fewer rounds, sweeps or segment steps"
            )
        if not 1.0 / domains < one_hot_factor <= 1.0:
            raise UserError(
                f"--aioli-one-hot-factor must be in (1/K, 1] = ({1.0 / domains:.4g}, 1] for {domains} domains, "
                f"got {one_hot_factor}"
            )
        if eta < 0.0:
            raise UserError(f"--aioli-eta must be >= 0, got {eta}")
        if not 0.0 <= smoothing < 1.0:
            raise UserError(f"--aioli-smoothing must be in [0, 1), got {smoothing}")
        uniform = numpy.full(domains, 1.0 / domains)
        self.prior = uniform if prior is None else numpy.asarray(prior, dtype=numpy.float64)
        self.objective = uniform if objective is None else numpy.asarray(objective, dtype=numpy.float64)
        self.seed, self.rounds, self.sweeps, self.segment_steps = seed, rounds, sweeps, segment_steps
        self.one_hot_factor, self.eta, self.smoothing = one_hot_factor, eta, smoothing

        self.steps = 0  # steps observed: the next step's place in the schedule
        self.mixture = self.prior.copy()  # p, played outside the sweeps
        self.smoothed: Optional[numpy.ndarray] = None  # Abar
        self.sweep_rows: list[list[float]] = []  # per step of the sweep: loss sums, tokens, realised shares

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument(
            "--aioli-rounds",
            type=int,
            default=DEFAULT_ROUNDS,
            help="Aioli: rounds in --train-iters; each opens with a sweep of perturbed mixtures that re-estimates A",
        )
        group.add_argument(
            "--aioli-sweeps",
            type=int,
            default=2,
            help="Aioli: passes over the domains in each sweep, each in a random order",
        )
        group.add_argument(
            "--aioli-segment-steps",
            type=int,
            default=DEFAULT_SEGMENT_STEPS,
            help="Aioli: steps on each domain's perturbed mixture in a pass (a sweep: sweeps x K x these steps)",
        )
        group.add_argument(
            "--aioli-one-hot-factor",
            type=float,
            default=0.75,
            help="Aioli: a perturbed mixture gives its domain this weight and spreads the rest evenly; in (1/K, 1]",
        )
        group.add_argument(
            "--aioli-eta",
            type=float,
            default=1.0,
            help="Aioli: step size of p ~ prior x exp(eta x column sums of the normalised A); >= 0",
        )
        group.add_argument(
            "--aioli-smoothing",
            type=float,
            default=0.1,
            help="Aioli: weight of the earlier rounds' matrix in its moving average, Abar <- (1 - l) A + l Abar; in [0, 1)",
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
            total_steps=run_length(args, "aioli", "its rounds divide the run"),
            seed=args.seed,
            prior=mixing_prior(args, names, initial_weights, domain_tokens),
            objective=domain_weighting(args.mixing_objective, "--mixing-objective", names, initial_weights, domain_tokens, every_domain=False),
            rounds=args.aioli_rounds,
            sweeps=args.aioli_sweeps,
            segment_steps=args.aioli_segment_steps,
            one_hot_factor=args.aioli_one_hot_factor,
            eta=args.aioli_eta,
            smoothing=args.aioli_smoothing,
            floor=args.mixing_floor,
        )

    def _place(self, step: int) -> tuple[int, int]:
        """(round, steps into it) of a step; the last round keeps the remainder of the run."""
        round_index = min(step // self.round_steps, self.rounds - 1)
        return round_index, step - round_index * self.round_steps

    def perturbed_domain(self, step: int) -> Optional[int]:
        """The domain whose perturbed mixture the step trains on; None outside the sweeps."""
        round_index, offset = self._place(step)
        if offset >= self.sweep_steps:
            return None
        segment = offset // self.segment_steps
        sweep, position = divmod(segment, self.num_domains)
        order = numpy.random.default_rng([self.seed, round_index, sweep]).permutation(self.num_domains)
        return int(order[position])

    def _policy(self) -> numpy.ndarray:
        domain = self.perturbed_domain(self.steps)
        if domain is None:
            return self.mixture
        perturbed = numpy.full(self.num_domains, (1.0 - self.one_hot_factor) / (self.num_domains - 1))
        perturbed[domain] = self.one_hot_factor
        return perturbed

    def _update(self, signals: StepSignals) -> None:
        _, offset = self._place(self.steps)
        self.steps += 1
        if offset > self.sweep_steps:
            return
        shares = signals.realised_counts / signals.realised_counts.sum()
        self.sweep_rows.append(numpy.concatenate([signals.domain_loss_sum, signals.domain_tokens, shares]).tolist())
        if offset < self.sweep_steps:
            return
        rows = numpy.array(self.sweep_rows).reshape(len(self.sweep_rows), 3, self.num_domains)
        self.sweep_rows = []
        interactions = normalise(fit_interactions(rows[:, 0], rows[:, 1], rows[:, 2]), self.objective)
        if self.smoothed is None:
            self.smoothed = interactions
        else:
            self.smoothed = (1.0 - self.smoothing) * interactions + self.smoothing * self.smoothed
        logits = self.eta * self.smoothed.sum(axis=0)
        preference = self.prior * numpy.exp(logits - logits.max())
        self.mixture = preference / preference.sum()

    def _state(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "round_steps": self.round_steps,
            "sweep_steps": self.sweep_steps,
            "mixture": self.mixture.tolist(),
            "smoothed": None if self.smoothed is None else self.smoothed.tolist(),
            "sweep_rows": [list(row) for row in self.sweep_rows],
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if (state["round_steps"], state["sweep_steps"]) != (self.round_steps, self.sweep_steps):
            raise UserError(
                f"the Aioli state is for rounds of {state['round_steps']} steps opening with {state['sweep_steps']}-step "
                f"sweeps, this run has {self.round_steps} and {self.sweep_steps}; resume with the same --train-iters, "
                f"--aioli-rounds, --aioli-sweeps and --aioli-segment-steps"
            )
        self.steps = int(state["steps"])
        self.mixture = numpy.array(state["mixture"], dtype=numpy.float64)
        self.smoothed = None if state["smoothed"] is None else numpy.array(state["smoothed"], dtype=numpy.float64)
        self.sweep_rows = [[float(value) for value in row] for row in state["sweep_rows"]]
