"""A torch function mode that turns megatron.core's CUDA tensor placements into CPU ones.

megatron.core (0.16.1 as 0.19.2) creates bookkeeping tensors with `device="cuda"` (the schedules' token
counters, grad clipping's norm buffers, the optimizer's loss scale, dist_checkpointing's failure
flags) or `.cuda()` (the tied output layer of the last pipeline stage, the grad scaler's state),
and its optimizers sort and check parameters by `param.type() == 'torch.cuda.FloatTensor'`. The
mode answers exactly those calls on the CPU and passes everything else through unchanged, so the
numbers are the plain CPU ones.

Where it applies: on the thread that entered it, and not inside a function torch has already
handed to it. Backward passes started with `Tensor.backward()`, `torch.autograd.backward` or
`torch.autograd.grad` are such functions, so their hooks and autograd Functions run without the
mode; megatron's schedules start backward through `custom_backward` (the engine directly) when
`deallocate_pipeline_outputs=True`, as the model provider sets it, and keep the mode there.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

_CPU = torch.device("cpu")


def _is_cuda_device(device: Any) -> bool:
    """True for the ways megatron.core names a GPU: "cuda", "cuda:1", torch.device("cuda", 0)."""
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, str) and device.startswith("cuda")


class CudaToCpuMode(TorchFunctionMode):
    """Creates `device="cuda"` tensors on the CPU, makes `.cuda()` a no-op, names CPU tensor types as CUDA ones."""

    def __torch_function__(
        self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            # As `.cuda()` on a tensor already on the GPU: the tensor itself.
            return args[0]
        if _is_cuda_device(kwargs.get("device")):
            kwargs = {**kwargs, "device": _CPU}
        result = func(*args, **kwargs)
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # 'torch.FloatTensor' -> 'torch.cuda.FloatTensor', what the optimizers and clip_grads expect.
            return result.replace("torch.", "torch.cuda.", 1)
        return result
