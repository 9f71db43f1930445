"""Known traps of megatron.core on gloo/CPU, found on 0.16.1 (the tests pass on 0.19.2 with the same
precautions), and the code that avoids those it can.

1. Interleaved pipelining (virtual stages) computes wrong numbers on gloo, without an error, in
   either of megatron's p2p modes. Batched p2p (`batch_p2p_comm=True`, the default) is wrong at
   PP=2, where the previous and the next stage are the same rank (right at PP=4). Overlapped p2p
   (`overlap_p2p_comm=True`, Megatron-LM's choice) sends asynchronously, and with
   `deallocate_pipeline_outputs=True` the sent tensor is freed before gloo has sent it. Prevented
   here: `pipeline_p2p_flags` (used by the model provider) turns both off for interleaved
   schedules on gloo; blocking p2p is right at PP=2 and PP=4.
2. `sequence_parallel=True` needs Transformer Engine or apex: the local spec's torch norm
   (`WrappedTorchNorm`) asserts it is off. Keep it off on CPU.
3. The schedules divide the loss a loss function returns *in place* (by its token count and the
   number of micro-batches): report a `clone()` of the loss, never the returned tensor itself.
4. `dist_checkpointing.save` starts a process with the spawn method, which re-imports the
   launching script: entry scripts need an `if __name__ == "__main__":` guard (and psutil).
   With megatron's DDP, save `model.module.sharded_state_dict()`. Virtual pipeline stages must
   be loaded in one `dist_checkpointing.load` call (e.g. keys `model0`, `model1`): each chunk
   holds only some layers of the stacked per-layer tensors, and a chunk-by-chunk load fails the
   sharding validation.
5. Optimizer state loads only from `optimizer.sharded_state_dict(model_sharded_state_dict,
   is_loading=True)`; without `is_loading=True` the load silently restores nothing.
6. The distributed optimizer resumes exactly only when saved with
   `metadata={"distrib_optim_sharding_type": "dp_reshardable"}`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def pipeline_p2p_flags(
    virtual_pipeline_model_parallel_size: int | None, backend: str | None = None
) -> dict[str, bool]:
    """`overlap_p2p_comm` / `batch_p2p_comm` for a TransformerConfig (trap 1).

    `backend` defaults to the default process group's (or, before there is one, nccl where CUDA
    is available and gloo otherwise). On nccl these are Megatron-LM's defaults: overlapped,
    unbatched p2p for interleaved schedules, batched p2p for 1F1B. On gloo interleaved schedules
    get plain blocking p2p.
    """
    if backend is None:
        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
        else:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
    interleaved = (virtual_pipeline_model_parallel_size or 1) > 1
    if interleaved and backend == "gloo":
        return {"overlap_p2p_comm": False, "batch_p2p_comm": False}
    return {"overlap_p2p_comm": interleaved, "batch_p2p_comm": not interleaved}
