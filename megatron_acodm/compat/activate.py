"""Switch megatron.core onto the CPU: once per process, and never where CUDA is available."""

from __future__ import annotations

import torch

from megatron_acodm.compat.cuda_stubs import install_cuda_stubs
from megatron_acodm.compat.device_mode import CudaToCpuMode

_active_mode: CudaToCpuMode | None = None


def activate_cpu_compat() -> bool:
    """Make megatron.core's training path run on CPU tensors; True when the adaptation is active.

    A no-op returning False when `torch.cuda.is_available()`: on a GPU megatron.core runs as it is.
    Idempotent. The device mode is entered on the calling thread (the one that builds and trains
    the model); call this before building the model.
    """
    global _active_mode
    if torch.cuda.is_available():
        return False
    if _active_mode is None:
        install_cuda_stubs()
        _active_mode = CudaToCpuMode()
        _active_mode.__enter__()
    return True


def cpu_compat_active() -> bool:
    """Whether `activate_cpu_compat()` has switched this process onto the CPU."""
    return _active_mode is not None
