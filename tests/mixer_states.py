"""What the mixers' tests share about state: a round trip as the trainer's checkpoint makes it, and a
restored mixer that must go on deciding exactly as the one it was saved from."""

from __future__ import annotations

import io
from typing import Callable, Iterable

import numpy
import torch


def through_checkpoint(state: dict) -> dict:
    """The state as the trainer's checkpoint gives it back: torch.save, then torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_decides_alike(original, restored, steps: Iterable[int], signals_at: Callable) -> None:
    """At every step the restored mixer gives the original's weights; both then observe the same
    `signals_at(step, weights)`."""
    for step in steps:
        assert numpy.array_equal(restored.weights(), original.weights())
        signals = signals_at(step, original.weights())
        original.observe(signals)
        restored.observe(signals)
    assert numpy.array_equal(restored.weights(), original.weights())
