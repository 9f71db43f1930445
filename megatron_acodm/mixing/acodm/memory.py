"""What AC-ODM remembers of domains a step did not sample: their last loss and Gram entries.

A domain absent from a step (no samples, or no loss tokens) has no fresh loss and a zero row and
column in the step's Gram matrix. The memory keeps the last value seen instead, with its age in
steps: losses are held as they were (the state reports their staleness beside them), Gram entries
are decayed by `decay ** age`, since an old gradient says less about the current model.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy
import torch

from megatron_acodm.errors import UserError


class SignalMemory:
    """Last seen loss per domain and Gram entry per pair of domains, with their ages in steps."""

    def __init__(self, num_domains: int, decay: float):
        if not 0.0 <= decay < 1.0:
            raise UserError(f"--acodm-stale-decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.initial_loss = numpy.full(num_domains, numpy.nan)  # first loss seen; NaN until then
        self.loss = numpy.full(num_domains, numpy.nan)
        self.age = numpy.full(num_domains, numpy.inf)  # steps since last sampled; inf: never
        self.gram = numpy.zeros((num_domains, num_domains))
        self.gram_age = numpy.full((num_domains, num_domains), numpy.inf)

    def update(self, present: numpy.ndarray, loss: numpy.ndarray, gram: Optional[numpy.ndarray]) -> None:
        """Take the fresh values of the domains `present` in this step; age everything else."""
        self.age += 1.0
        self.age[present] = 0.0
        self.loss[present] = loss[present]
        first = present & numpy.isnan(self.initial_loss)
        self.initial_loss[first] = loss[first]
        if gram is not None:
            pairs = numpy.outer(present, present)
            self.gram_age += 1.0
            self.gram_age[pairs] = 0.0
            self.gram[pairs] = gram[pairs]

    def staleness(self) -> numpy.ndarray:
        """Per domain, 1 - decay^age: 0 when sampled this step, towards 1 as it ages, 1 if never seen."""
        return 1.0 - self.decay**self.age

    def decayed_gram(self) -> numpy.ndarray:
        """The Gram matrix with every entry decayed by its age (0 for pairs never seen together)."""
        return self.gram * self.decay**self.gram_age

    def state_dict(self) -> dict[str, Any]:
        return {
            name: torch.from_numpy(getattr(self, name).copy())
            for name in ("initial_loss", "loss", "age", "gram", "gram_age")
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value.numpy().copy())
