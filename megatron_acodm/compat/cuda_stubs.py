"""CPU answers for the `torch.cuda` calls megatron.core makes on the training path.

On a CPU-only torch these calls raise "Torch not compiled with CUDA enabled", or, for
`_lazy_call`-based setters, queue work that never runs. Each patch names its callers.
"""

from __future__ import annotations

import logging

import torch

_CPU = torch.device("cpu")


def _current_device() -> torch.device:
    # Rotary embeddings, DDP grad buffers, p2p receive buffers, TP all-gathers and the distributed
    # optimizer allocate with `device=torch.cuda.current_device()`. Answering with the CPU device
    # (not an ordinal for the device mode to map) also places tensors made where the mode is not
    # active: other threads, and backward passes started by `torch.autograd.backward`.
    return _CPU


def _synchronize(device: object = None) -> None:
    # p2p_communication after batched isend/irecv, dist_checkpointing before its save finishes,
    # Timers: CPU kernels are already synchronous.
    return None


def _current_stream(device: object = None) -> torch.cpu.Stream:
    # megatron.core 0.19's grad sync (start_grad_sync) waits on the current stream for events that
    # CUDA-graph replays record; the CPU stream's waits are no-ops, as CPU kernels are synchronous.
    return torch.cpu.current_stream()


def _get_rng_state(device: object = "cuda") -> torch.Tensor:
    return torch.get_rng_state()


def _set_rng_state(new_state: torch.Tensor, device: object = "cuda") -> None:
    torch.set_rng_state(new_state)


def _manual_seed(seed: int) -> None:
    # torch.manual_seed would recurse into torch.cuda.manual_seed_all; seed the CPU generator only.
    torch.default_generator.manual_seed(int(seed))


def _megatron_get_rng_state(
    device: object = "cuda", clone: bool = False, graph_safe: bool = False
) -> torch.Tensor:
    return torch.get_rng_state()


def _megatron_set_rng_state(new_state: torch.Tensor, device: int = -1, graph_safe: bool = False) -> None:
    torch.set_rng_state(new_state)


class _SameGeneratorFilter(logging.Filter):
    """Drops the tracker's 'CPU RNG state changed within GPU RNG context' warning.

    On CPU the tracked "CUDA" generator *is* the CPU generator, so every dropout inside
    `get_cuda_rng_tracker().fork()` changes it by design (dozens of warnings per step otherwise).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "CPU RNG state changed within GPU RNG context" not in record.getMessage()


def install_cuda_stubs() -> None:
    """Replace the `torch.cuda` entry points megatron.core uses with CPU equivalents."""
    torch.cuda.current_device = _current_device
    torch.cuda.synchronize = _synchronize
    torch.cuda.current_stream = _current_stream
    # megatron's CudaRNGStatesTracker (model_parallel_cuda_manual_seed, the dropout forks in every
    # attention forward, activation recompute) seeds, saves and restores "the CUDA generator";
    # on CPU the ops it guards draw from the CPU generator, so that is the one it must handle.
    torch.cuda.get_rng_state = _get_rng_state
    torch.cuda.set_rng_state = _set_rng_state
    torch.cuda.manual_seed = _manual_seed
    from megatron.core.tensor_parallel import random as megatron_random

    # Its private helpers bypass the public functions: the getter reads torch.cuda's default
    # generators, the setter defers through torch.cuda._lazy_call (never run without CUDA).
    megatron_random._get_cuda_rng_state = _megatron_get_rng_state
    megatron_random._set_cuda_rng_state = _megatron_set_rng_state
    logging.getLogger(megatron_random.__name__).addFilter(_SameGeneratorFilter())
