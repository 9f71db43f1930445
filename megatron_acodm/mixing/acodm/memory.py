"""What AC-ODM remembers of domains a step did not sample: their last loss, and how old it is.

A domain absent from a step (no samples, or no loss tokens) has no fresh loss; the memory keeps
the last one seen, and the state reports its staleness beside it. (Gradient signals of absent
domains are kept by the alignment signal's moving average.)
"""

from __future__ import annotations

from typing import Any

import numpy
import torch

from megatron_acodm.errors import UserError


class SignalMemory:
    """Last seen loss per domain, with its age in steps."""

    def __init__(self, num_domains: int, decay: float):
        if not 0.0 <= decay < 1.0:
            raise UserError(f"--acodm-stale-decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.initial_loss = numpy.full(num_domains, numpy.nan)  # first loss seen; NaN until then
        self.loss = numpy.full(num_domains, numpy.nan)
        self.age = numpy.full(num_domains, numpy.inf)  # steps since last sampled; inf: never

    def update(self, present: numpy.ndarray, loss: numpy.ndarray) -> None:
        """Take the fresh values of the domains `present` in this step; age everything else."""
        self.age += 1.0
        self.age[present] = 0.0
        self.loss[present] = loss[present]
        first = present & numpy.isnan(self.initial_loss)
        self.initial_loss[first] = loss[first]

    def staleness(self) -> numpy.ndarray:
        """Per domain, 1 - decay^age: 0 when sampled this step, towards 1 as it ages, 1 if never seen."""
        return 1.0 - self.decay**self.age

    def state_dict(self) -> dict[str, Any]:
        return {
            name: torch.from_numpy(getattr(self, name).copy())
            for name in ("initial_loss", "loss", "age")
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value.numpy().copy())
