"""Fixed mixtures, the Megatron-equivalent baselines: the `--data-path` blend, uniform, and temperature.

All three are a `StaticMixer`; the other two only choose the weights it keeps.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

import numpy

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.base import Mixer


class StaticMixer(Mixer):
    """Keeps the weights it was built with (the `--data-path` or manifest blend) for the whole run."""

    @classmethod
    def from_args(
        cls, *, names: Sequence[str], initial_weights: Sequence[float], args: argparse.Namespace, **_: Any
    ) -> Mixer:
        return cls(names, initial_weights, floor=args.mixing_floor)

    def _policy(self) -> numpy.ndarray:
        return self.initial_weights


class UniformMixer(StaticMixer):
    """Every domain the same weight, whatever its size."""

    def __init__(self, names: Sequence[str], floor: float = 0.0):
        super().__init__(names, [1.0] * len(names), floor)

    @classmethod
    def from_args(cls, *, names: Sequence[str], args: argparse.Namespace, **_: Any) -> Mixer:
        return cls(names, floor=args.mixing_floor)


class TemperatureMixer(StaticMixer):
    """`w_k ~ tokens_k^(1/T)`: T = 1 is proportional to size, large T tends to uniform."""

    def __init__(
        self, names: Sequence[str], domain_tokens: Sequence[float], temperature: float = 1.0, floor: float = 0.0
    ):
        super().__init__(names, temperature_weights(domain_tokens, temperature), floor)

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument(
            "--mixing-temperature",
            type=float,
            default=1.0,
            help="temperature mixer: w_k ~ tokens_k^(1/T); 1 is proportional to tokens, larger T is flatter",
        )

    @classmethod
    def from_args(
        cls, *, names: Sequence[str], domain_tokens: Optional[Sequence[float]], args: argparse.Namespace, **_: Any
    ) -> Mixer:
        if domain_tokens is None:
            raise UserError("--mixer temperature needs each domain's token count; give a domains.json manifest")
        return cls(names, domain_tokens, args.mixing_temperature, floor=args.mixing_floor)


def temperature_weights(tokens: Sequence[float], temperature: float) -> list[float]:
    """`tokens^(1/T)`, unnormalised, computed in log space so that no T over- or underflows."""
    if not temperature > 0:
        raise UserError(f"--mixing-temperature must be positive, got {temperature}")
    counts = numpy.asarray(tokens, dtype=numpy.float64)
    if not (numpy.all(numpy.isfinite(counts)) and numpy.all(counts >= 0) and numpy.any(counts > 0)):
        raise UserError(f"domain token counts must be finite, >= 0 and not all zero, got {counts.tolist()}")
    with numpy.errstate(divide="ignore"):  # an empty domain has log 0 = -inf, hence weight 0
        logits = numpy.log(counts) / temperature
    return numpy.exp(logits - logits.max()).tolist()
