"""DGA, Dynamic Gradient Alignment (Fan, Grangier and Ablin 2024, arXiv 2410.02498): the mixture
whose training gradient aligns best with the gradient of a target task known from a few examples.

Every `--dga-interval` steps the trainer measures the target's gradient sketch on a batch of its
steering examples (`training.target_pass`); that step's sketch then holds the domains' rows and
the target's. From them, with the alignment signal every gradient mixer shares
(`mixing.alignment`, objective: the target row):

    a_k   = <g_k, g_target> / D                that pass's alignment (mean gradients per token)
    w_hat = softmax(log w + eta a)              the exponentiated-gradient step (--dga-step-size eta)
    w    <- (1 - beta) w + beta w_hat           the moving average the paper adds for stability
                                               (--dga-ema beta)

D estimates `|g_target|^2`: each pass gives one unbiased but noisy value, the product of the
target's two halves `<g_A, g_B>`; D is their bias-corrected moving average over the passes, this
one included (decay `--mixing-score-ema`), but no less than that average's standard error. The
first pass, with no error yet, moves nothing; a pass without the target's two halves neither.
Such passes are counted (`skipped_passes`, logged with the mixer's diagnostics). Dividing by
each pass's own product instead gives a heavy tail and drops the passes where it is not
positive, which are not random ones (docs/DESIGN.md, "DGA").

`a_k` is the first-order decrease of the target loss from a step on domain k, relative to the
same step on the target itself: 1 for a domain whose gradient is the target's. `eta` is therefore
the change of log-weight, per pass and before the moving average, of such a domain. The paper's
step multiplies the raw inner product `<grad l_k, grad l_target>` of the model's parameters; that
unit cannot be matched here: the sketch covers some layers only (`--sketch-layers`), through a
random projection, with the schedule's per-token factor, so its raw inner products are not the
model's. The ratio `a_k` does not depend on those (nor on the learning rate or the model's
size), and the paper's eta is ours divided by the full model's `|grad l_target|^2` at that step.

A domain absent from the pass's batch takes its smoothed alignment. The weights start at
`--mixing-prior`; the floor (`--mixing-floor`) applies as for every mixer. Steps without the target
pass leave the weights as they are, and measure nothing: `signals_wanted` asks those steps for no
signal, so the trainer sketches no gradient there. The trained model itself is the output: no
retraining on the found mixture.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

import numpy
import torch

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.alignment import AlignmentSignal, target_objective
from megatron_acodm.mixing.base import GRADIENT_GRAM, TARGET_GRADIENT, Mixer, StepSignals
from megatron_acodm.mixing.weighting import mixing_prior
from megatron_acodm.sketch import sketch_rows

# Chosen on the tuning corpus (bench/tune_mixers.py, bench/results/tuning.md): the largest of the
# range searched, 0.1 to 10, so a larger one may do better still.
DEFAULT_STEP_SIZE = 9.9


def check_target_interval(interval: int) -> int:
    """--dga-interval, as DGA and AC-ODM's target objective read it."""
    if interval < 1:
        raise UserError(f"--dga-interval ({interval}) must be >= 1")
    return interval


def exponentiated_gradient_step(weights: numpy.ndarray, alignment: numpy.ndarray, step_size: float, ema: float) -> numpy.ndarray:
    """`(1 - ema) w + ema softmax(log w + step_size a)`, float64."""
    logits = numpy.log(weights) + step_size * alignment
    proposal = numpy.exp(logits - logits.max())
    return (1.0 - ema) * weights + ema * proposal / proposal.sum()


class DGAMixer(Mixer):
    """DGA; see the module's docstring for the exact rule."""

    needs = frozenset({GRADIENT_GRAM, TARGET_GRADIENT})
    reads = frozenset({"mixing_prior", "mixing_score_ema", "sketch_layers", "sketch_dim"})
    state_format = 2
    state_change = "its alignment divides by a moving average of the target's norm over the passes"

    def __init__(
        self,
        names: Sequence[str],
        prior: Sequence[float],
        *,
        step_size: float = DEFAULT_STEP_SIZE,
        ema: float = 0.1,
        score_decay: float = 0.9,
        interval: int = 10,
        floor: float = 0.0,
    ):
        super().__init__(names, prior, floor)
        self.target_interval = check_target_interval(interval)
        if not step_size >= 0.0:
            raise UserError(f"--dga-step-size must be >= 0, got {step_size}")
        if not 0.0 < ema <= 1.0:
            raise UserError(f"--dga-ema must be in (0, 1], got {ema} (1 keeps no average)")
        if numpy.any(self.initial_weights <= 0):
            raise UserError("--mixer dga needs a positive prior weight on every domain (its step works with log w)")
        self.step_size, self.ema = step_size, ema
        self.signal = AlignmentSignal(target_objective(self.num_domains), score_decay, num_domains=self.num_domains, smoothed_scale=True)
        self.mixture = self.initial_weights.copy()
        self.updates = 0
        self.skipped_passes = 0  # target passes that moved nothing: no usable alignment

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument(
            "--dga-interval",
            type=int,
            default=10,
            help="DGA (and --mixing-objective target): measure the target's gradient every this many steps",
        )
        group.add_argument(
            "--dga-step-size",
            type=float,
            default=DEFAULT_STEP_SIZE,
            help="DGA: eta of the exponentiated-gradient step w_hat = softmax(log w + eta a), a the alignment "
            "<g_k, g_target> / |g_target|^2 (1: a domain whose gradient is the target's)",
        )
        group.add_argument(
            "--dga-ema",
            type=float,
            default=0.1,
            help="DGA: beta of the moving average w <- (1 - beta) w + beta w_hat; in (0, 1], 1 keeps no average",
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
        if not getattr(args, "target_data_path", None):
            raise UserError("--mixer dga needs --target-data-path: the target set whose gradient it aligns the mixture with")
        return cls(
            names,
            mixing_prior(args, names, initial_weights, domain_tokens),
            step_size=args.dga_step_size,
            ema=args.dga_ema,
            score_decay=args.mixing_score_ema,
            interval=args.dga_interval,
            floor=args.mixing_floor,
        )

    def signals_wanted(self, step: int) -> frozenset[str]:
        """Only the target pass's steps are measured: nothing else moves the weights."""
        return self.needs if step % self.target_interval == 0 else frozenset()

    def _policy(self) -> numpy.ndarray:
        return self.mixture

    def _update(self, signals: StepSignals) -> None:
        if signals.half_gram is None:  # a step without the target pass
            return
        rows = sketch_rows(self.num_domains, with_target=True)
        for field in ("half_gram", "half_tokens"):
            value = getattr(signals, field)
            if value is None or numpy.shape(value)[0] != rows:
                raise ValueError(f"DGA needs StepSignals.{field} over {rows} rows (the domains' and the target's halves)")
        alignment = self.signal.observe(numpy.asarray(signals.half_gram, dtype=numpy.float64), signals.half_tokens)
        if alignment is None:  # the first pass, or its target halves said nothing
            self.skipped_passes += 1
            return
        self.mixture = exponentiated_gradient_step(self.mixture, alignment, self.step_size, self.ema)
        self.updates += 1

    def domain_diagnostics(self) -> dict[str, numpy.ndarray]:
        return {"score": self.signal.scores(), "score_snr": self.signal.signal_to_noise()}

    def scalar_diagnostics(self) -> dict[str, float]:
        return {"skipped_passes": float(self.skipped_passes)}

    def _state(self) -> dict[str, Any]:
        return {
            "mixture": torch.from_numpy(self.mixture.copy()),
            "updates": self.updates,
            "skipped_passes": self.skipped_passes,
            "signal": self.signal.state_dict(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.signal.load_state_dict(state["signal"])
        self.mixture = state["mixture"].numpy().copy()
        self.updates = int(state["updates"])
        self.skipped_passes = int(state["skipped_passes"])
