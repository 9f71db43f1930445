"""What the mixers' tests share: a run's options from the trainer's own parser, a state's round trip
as the trainer's checkpoint makes it, and a restored mixer that must go on deciding exactly as the
one it was saved from."""

from __future__ import annotations

import argparse
import io
from typing import Callable, Iterable

import numpy
import torch

from megatron_acodm.arguments import parse_args


def mixer_args(*argv: str, train_iters: int = 200) -> argparse.Namespace:
    """The Namespace a run with these options gets (`argv`: `--mixer` and its options), every other
    setting at the trainer's default."""
    return parse_args(["--data-path", "unused.json", "--tokenizer-model", "unused", "--train-iters", str(train_iters), *argv])


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
