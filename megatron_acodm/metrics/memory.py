"""The GPU memory a training log line reports: Megatron-LM's `report_memory` quantities, allocated and
max allocated, in its units (its "MB" is 2**20 bytes)."""

from __future__ import annotations

MIB = 2**20


def cuda_memory_mib(device) -> dict[str, float]:
    """`TrainRecord`'s memory fields: torch's CUDA caching allocator now and at its peak since the
    process started, the largest over the ranks (pipeline stages hold different layers); empty off
    CUDA. Every rank calls it at the same iteration."""
    if device.type != "cuda":
        return {}
    import torch

    memory = [torch.cuda.memory_allocated(device) / MIB, torch.cuda.max_memory_allocated(device) / MIB]
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        largest = torch.tensor(memory, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(largest, op=torch.distributed.ReduceOp.MAX)
        memory = largest.tolist()
    allocated, peak = memory
    return {"memory_allocated_mib": allocated, "max_memory_allocated_mib": peak}
