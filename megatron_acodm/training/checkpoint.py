"""Checkpoints with megatron.core's dist_checkpointing: model, optimizer and the run's own state.

Layout: `<save>/iter_0000100/` (written as `iter_0000100.tmp/` and renamed when every rank has
finished) and `<save>/latest_checkpointed_iteration.txt` (replaced atomically afterwards), so a
reader never takes a half-written checkpoint for the latest. The model is stored as sharded
tensors, which megatron.core reshards on load: a checkpoint written at one TP/PP layout loads at
another. The run state (iteration, LR schedule, mixer, blender, arguments) is common to all ranks;
RNG states are per rank and restored only at the layout they were saved at.
"""

from __future__ import annotations

import os
import random
import shutil
from typing import Optional

import numpy
import torch

from megatron.core import dist_checkpointing, parallel_state, tensor_parallel

from megatron_acodm.data.errors import DataError

TRACKER = "latest_checkpointed_iteration.txt"


def checkpoint_path(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def latest_iteration(root: str) -> Optional[int]:
    tracker = os.path.join(root, TRACKER)
    if not os.path.isfile(tracker):
        return None
    with open(tracker) as stream:
        text = stream.read().strip()
    if not text.isdigit():
        raise DataError(f"{tracker}: expected an iteration number, found {text!r}; fix or delete it")
    return int(text)


def _layout() -> dict:
    return {
        "tensor_model_parallel_size": parallel_state.get_tensor_model_parallel_world_size(),
        "pipeline_model_parallel_size": parallel_state.get_pipeline_model_parallel_world_size(),
        "data_parallel_size": parallel_state.get_data_parallel_world_size(),
    }


def _sharded_state(model, optimizer, is_loading: bool, distributed_optimizer: bool) -> dict:
    # With megatron's DDP the module's own sharded_state_dict carries the right keys.
    model_state = model[0].module.sharded_state_dict()
    # The distributed optimizer resumes exactly only with its dp_reshardable layout.
    metadata = {"distrib_optim_sharding_type": "dp_reshardable"} if distributed_optimizer else None
    return {
        "model": model_state,
        "optimizer": optimizer.sharded_state_dict(model_state, is_loading=is_loading, metadata=metadata),
    }


def _rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": numpy.random.get_state(),
        "torch": torch.get_rng_state(),
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def save_checkpoint(root: str, iteration: int, model, optimizer, run_state: dict, distributed_optimizer: bool) -> str:
    """Write the checkpoint of `iteration` on every rank; return its folder."""
    rank = torch.distributed.get_rank()
    final = checkpoint_path(root, iteration)
    staging = f"{final}.tmp"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
        os.makedirs(staging)
    torch.distributed.barrier()
    state = _sharded_state(model, optimizer, is_loading=False, distributed_optimizer=distributed_optimizer)
    state["run"] = dict(run_state, layout=_layout())
    dist_checkpointing.save(state, staging)
    os.makedirs(os.path.join(staging, "rng"), exist_ok=True)
    torch.save(_rng_state(), os.path.join(staging, "rng", f"rank_{rank:05d}.pt"))
    torch.distributed.barrier()
    if rank == 0:
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(staging, final)
        _write_atomically(os.path.join(root, TRACKER), f"{iteration}\n")
    torch.distributed.barrier()
    return final


def read_run_state(root: str) -> Optional[dict]:
    """The run state of the latest checkpoint under `root` (None when there is none)."""
    iteration = latest_iteration(root)
    if iteration is None:
        return None
    return dist_checkpointing.load_common_state_dict(checkpoint_path(root, iteration))["run"]


def load_checkpoint(root: str, model, optimizer, distributed_optimizer: bool) -> dict:
    """Load model and optimizer from the latest checkpoint under `root`; return its run state."""
    iteration = latest_iteration(root)
    path = checkpoint_path(root, iteration)
    if not os.path.isdir(path):
        raise DataError(
            f"{os.path.join(root, TRACKER)} names iteration {iteration} but {path} is missing; point it at a "
            f"checkpoint that exists (the iter_* folders under {root}) or remove it to start afresh"
        )
    run_state = dist_checkpointing.load_common_state_dict(path)["run"]
    saved, current = run_state["layout"], _layout()
    same_layout = saved == current
    same_model_layout = all(saved[key] == current[key] for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size"))
    if distributed_optimizer and not same_model_layout:
        raise ValueError(
            f"{path}: saved at layout {saved}, this run is {current}; the distributed "
            f"optimizer's state reshards only across data-parallel sizes. Resume at the saved layout"
        )
    state = dist_checkpointing.load(
        _sharded_state(model, optimizer, is_loading=True, distributed_optimizer=distributed_optimizer), path
    )
    model[0].module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng_file = os.path.join(path, "rng", f"rank_{torch.distributed.get_rank():05d}.pt")
    if same_layout and os.path.isfile(rng_file):
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return run_state
