"""A bounded mirror-descent step on the simplex: how a gradient-based mixer moves its weights.

A score that is linear in the weights (the alignment `sum_k w_k r_k`) has its optimum at a corner
of the simplex; followed without bounds it collapses the mixture onto one or two domains. Its
first-order model is only valid for a small step, so the step is bounded three ways:

    log w' = (1 - lambda) log w + lambda log p0 + clip(step, -max_step, max_step),  renormalised
    then, if KL(w' || p0) > eps, w' is pulled back along the geodesic towards p0 until KL = eps.

- `max_step` bounds each step's change of every log-weight;
- the pull `lambda` towards the prior p0 (`--mixing-prior`) makes the fixed point under a steady
  step a bounded tilt, `w* ~ p0 exp(step / lambda)`, and brings the weights back to p0 when the
  signal fades: a zero step leaves p0 where it is;
- the KL ball (`--mixing-kl-radius` eps) is a hard limit: the entropy of w' stays within eps of
  p0's cross-entropy, so under a uniform prior at least `K exp(-eps)` effective domains remain.
The geodesic `w_a ~ p0^(1 - a) w^a` raises KL(w_a || p0) monotonically in a (its derivative is
`a Var_wa(log w / p0) >= 0`), so a bisection finds the a on the ball. Everything is torch
float64 and differentiable in the step (the bisection's a is held constant), so an actor can be
trained through it.
"""

from __future__ import annotations

import torch

from megatron_acodm.errors import UserError

_BISECTIONS = 60
# The bounds our bounded AC-ODM runs with, chosen on the tuning corpus (bench/tune_mixers.py,
# bench/results/tuning.md) with its largest step (`acodm.mixer.DEFAULT_MAX_STEP`).
DEFAULT_PRIOR_PULL = 0.02
DEFAULT_KL_RADIUS = 0.25


def _log(weights: torch.Tensor) -> torch.Tensor:
    """log w in float64, finite where a weight underflowed to zero."""
    return weights.double().clamp_min(1e-300).log()


class BoundedMirrorStep:
    """See the module's docstring. `prior`: p0, a K-simplex with positive entries."""

    def __init__(self, prior, pull: float, kl_radius: float, max_step: float):
        checks = [
            (0.0 <= pull <= 1.0, f"--mixing-prior-pull must be in [0, 1], got {pull}"),
            (kl_radius >= 0.0, f"--mixing-kl-radius must be >= 0, got {kl_radius}"),
            (max_step >= 0.0, f"--acodm-max-step must be >= 0, got {max_step}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        self.log_prior = torch.as_tensor(prior, dtype=torch.float64).log()
        self.pull, self.kl_radius, self.max_step = pull, kl_radius, max_step

    def __call__(self, weights: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """The next weights `[..., K]` from the current `weights` and the proposed `step` (same shape)."""
        logits = (1.0 - self.pull) * _log(weights) + self.pull * self.log_prior
        proposed = torch.softmax(logits + step.double().clamp(-self.max_step, self.max_step), dim=-1)
        return self.into_ball(proposed)

    def kl_to_prior(self, weights: torch.Tensor) -> torch.Tensor:
        """KL(w || p0) `[...]`."""
        return (weights * (_log(weights) - self.log_prior)).sum(dim=-1)

    def into_ball(self, weights: torch.Tensor) -> torch.Tensor:
        """`weights` where KL(w || p0) <= eps, else the point of the geodesic to p0 on the ball."""
        log_ratio = _log(weights) - self.log_prior
        with torch.no_grad():
            outside = self.kl_to_prior(weights) > self.kl_radius
            if not outside.any():
                return weights
            low = torch.zeros(weights.shape[:-1], dtype=torch.float64)
            high = torch.ones_like(low)
            for _ in range(_BISECTIONS):
                middle = (low + high) / 2
                too_far = self.kl_to_prior(torch.softmax(self.log_prior + middle[..., None] * log_ratio, dim=-1)) > self.kl_radius
                high = torch.where(too_far, middle, high)
                low = torch.where(too_far, low, middle)
            along = torch.where(outside, low, torch.ones_like(low))
        return torch.softmax(self.log_prior + along[..., None] * log_ratio, dim=-1)
