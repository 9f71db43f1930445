"""Triton kernels or the torch reference, chosen per call from where the tensors live; logged once.

Triton when it imports and the tensors are on CUDA, or when `TRITON_INTERPRET=1` (Triton's CPU
interpreter: for tests, not for speed; it must be set before `kernels` is first imported).
The torch reference otherwise.
"""

from __future__ import annotations

import functools
import logging
import os
from types import ModuleType
from typing import Optional

import torch

from megatron_acodm.sketch import reference

_logger = logging.getLogger(__name__)
_announced: set[tuple[str, str]] = set()


@functools.cache
def _triton_kernels() -> tuple[Optional[ModuleType], str]:
    """The kernels module, or None and why it did not import."""
    try:
        from megatron_acodm.sketch import kernels
    except ImportError as error:
        return None, f"Triton did not import ({error})"
    return kernels, ""


def choose_backend(device: torch.device) -> tuple[str, str]:
    """("triton" | "reference", why) for tensors on `device`."""
    interpreted = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if device.type != "cuda" and not interpreted:
        return "reference", f"tensors on {device.type}, TRITON_INTERPRET unset"
    kernels, import_failure = _triton_kernels()
    if kernels is None:
        return "reference", import_failure
    if device.type == "cuda":
        return "triton", "CUDA tensors"
    return "triton", "TRITON_INTERPRET=1: Triton's CPU interpreter, for tests, not for speed"


def _implementation(device: torch.device) -> ModuleType:
    name, why = choose_backend(device)
    if (name, why) not in _announced:
        _announced.add((name, why))
        _logger.info("gradient sketches: %s backend (%s)", name, why)
    return _triton_kernels()[0] if name == "triton" else reference


def project_and_segment_sum(
    x: torch.Tensor,
    delta: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    token_domain: torch.Tensor,
    num_domains: int,
) -> torch.Tensor:
    """See `reference.project_and_segment_sum`."""
    return _implementation(x.device).project_and_segment_sum(x, delta, u, v, token_domain, num_domains)


def gram(sketches: torch.Tensor) -> torch.Tensor:
    """See `reference.gram`."""
    return _implementation(sketches.device).gram(sketches)
