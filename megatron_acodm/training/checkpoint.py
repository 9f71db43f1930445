"""Checkpoints with megatron.core's dist_checkpointing: model, optimizer and the run's own state.

Layout: `<save>/iter_0000100/` (written as `iter_0000100.tmp/` and renamed when every rank has
finished) and `<save>/latest_checkpointed_iteration.txt` (replaced atomically afterwards), so a
reader never takes a half-written checkpoint for the latest. The model is stored as sharded
tensors, which megatron.core reshards on load: a checkpoint written at one TP/PP layout loads at
another. A run whose mixer reads layer drifts also stores W_0 of those layers
(`training.signals.WeightDrift`) as sharded tensors that mirror the weights' own, so they reshard
alike. The run state (iteration, LR schedule, mixer, blender, arguments) is common to all ranks;
RNG states are per rank and restored only at the layout they were saved at.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from dataclasses import replace
from typing import Optional, Sequence

import numpy
import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException

from megatron.core import dist_checkpointing, parallel_state, tensor_parallel

from megatron_acodm.atomic_files import write_text_atomically
from megatron_acodm.compat.megatron_versions import COMMON_STATE_ITEM_SINCE, SUPPORTED, installed_version, reads_common_state_item
from megatron_acodm.errors import UserError
from megatron_acodm.model import mlp_output_projections, unwrap
from megatron_acodm.training.signals import WeightDrift

TRACKER = "latest_checkpointed_iteration.txt"
COMMON_STATE = "common.pt"  # where megatron-core 0.16 to 0.18 keep the state every rank shares
COMMON_STATE_ITEM = "common_state/shard_0_1"  # where 0.19 keeps it: an item of the torch_dist files
DIST_CHECKPOINT_CONFIG = "metadata.json"  # dist_checkpointing's record of the checkpoint's format
# Every stored item is a torch.save zip archive: it starts with a local file header and, having
# no comment, ends with the 22-byte end-of-central-directory record.
_ZIP_START, _ZIP_END, _ZIP_END_RECORD = b"PK\x03\x04", b"PK\x05\x06", 22
_ITERATION_FOLDER = re.compile(r"iter_(\d{7})")
RUN_START = "run_start"  # the key prefix of the stored W_0 (`WeightDrift.start`)
RUN_START_LAYERS = "run_start_layers"  # the run state's list of the layers whose W_0 the checkpoint holds


def checkpoint_path(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def _latest_iteration(root: str) -> Optional[int]:
    """The iteration the tracker under `root` names (None when there is no tracker)."""
    tracker = os.path.join(root, TRACKER)
    if not os.path.isfile(tracker):
        return None
    with open(tracker, "rb") as stream:
        text = stream.read(64).decode("ascii", errors="backslashreplace").strip()
    if not text.isdigit():
        raise UserError(
            f"{tracker}: expected an iteration number, found {text[:24]!r}; "
            f"{_earlier_complete_checkpoint(root, None)}"
        )
    return int(text)


def _checkpoint_problem(path: str) -> Optional[str]:
    """What keeps the checkpoint at `path` from loading (a missing or truncated file), or None.

    Every tensor file is checked against the byte ranges that torch's checkpoint metadata promises,
    so a save cut short is found before megatron.core starts reading it on some ranks.
    """
    if not os.path.isdir(path):
        return "the folder is missing"
    for name in (".metadata", DIST_CHECKPOINT_CONFIG):
        if not os.path.isfile(os.path.join(path, name)):
            return f"{name} is missing"
    try:
        metadata = FileSystemReader(path).read_metadata()
    except Exception as error:  # any unpickling failure of a damaged file
        return f".metadata is unreadable ({type(error).__name__})"
    if not _has_common_state_file(path) and COMMON_STATE_ITEM not in metadata.state_dict_metadata:
        return f"{COMMON_STATE} is missing"
    storage = metadata.storage_data
    sizes: dict[str, int] = {}
    for item in storage.values():
        if item.relative_path not in sizes:
            file = os.path.join(path, item.relative_path)
            sizes[item.relative_path] = os.path.getsize(file) if os.path.isfile(file) else -1
        size = sizes[item.relative_path]
        if size < 0:
            return f"{item.relative_path} is missing"
        if size < item.offset + item.length:
            return f"{item.relative_path} is truncated ({size} bytes, its metadata needs {item.offset + item.length})"
    return _damaged_item(path, storage.values())


def _has_common_state_file(path: str) -> bool:
    return os.path.isfile(os.path.join(path, COMMON_STATE))


def _damaged_item(path: str, items) -> Optional[str]:
    """The first tensor file whose stored items do not begin and end as torch.save writes them (a
    zip archive): a file zeroed or overwritten at its full size, found before any rank reads it."""
    streams: dict[str, object] = {}
    try:
        for item in items:
            if getattr(item, "transform_descriptors", None):  # compressed or otherwise transformed: no zip to see
                continue
            stream = streams.get(item.relative_path) or streams.setdefault(item.relative_path, open(os.path.join(path, item.relative_path), "rb"))
            stream.seek(item.offset)
            head = stream.read(len(_ZIP_START))
            stream.seek(item.offset + item.length - _ZIP_END_RECORD)
            tail = stream.read(len(_ZIP_END))
            if head != _ZIP_START or tail != _ZIP_END:
                return f"{item.relative_path} is damaged (the item at byte {item.offset} is not what torch.save wrote)"
    finally:
        for stream in streams.values():
            stream.close()
    return None


def _earlier_complete_checkpoint(root: str, before: Optional[int]) -> str:
    """Where to resume from instead: the newest complete checkpoint (before `before`), as advice."""
    tracker = os.path.join(root, TRACKER)
    found = sorted(
        (int(match.group(1)) for match in map(_ITERATION_FOLDER.fullmatch, os.listdir(root)) if match),
        reverse=True,
    )
    for iteration in found:
        if (before is None or iteration < before) and _checkpoint_problem(checkpoint_path(root, iteration)) is None:
            return f"{checkpoint_path(root, iteration)} is complete: write {iteration} into {tracker} to resume from it"
    return f"no complete checkpoint is left under {root}: delete {tracker} to start afresh"


def saved_run_state(path: str) -> dict:
    """The run state (iteration, arguments, mixer, blender, ...) of the checkpoint folder `path`."""
    return dist_checkpointing.load_common_state_dict(path)["run"]


def open_checkpoint(root: str) -> Optional[tuple[str, dict]]:
    """The latest checkpoint under `root` and its run state, after checking that it is whole."""
    iteration = _latest_iteration(root)
    if iteration is None:
        return None
    path = checkpoint_path(root, iteration)
    if not os.path.isdir(path):
        raise UserError(
            f"{os.path.join(root, TRACKER)} names iteration {iteration} but {path} is missing; "
            f"{_earlier_complete_checkpoint(root, iteration)}"
        )
    problem = _checkpoint_problem(path)
    if problem is None and not _has_common_state_file(path) and not reads_common_state_item():
        raise UserError(
            f"{path}: written by megatron-core {COMMON_STATE_ITEM_SINCE} or newer (its common state is in the tensor "
            f"files, not in {COMMON_STATE}), which megatron-core {installed_version()} cannot read; resume it with "
            f"megatron-core>={COMMON_STATE_ITEM_SINCE} (this project supports megatron-core{SUPPORTED})"
        )
    if problem is None:
        try:
            return path, saved_run_state(path)
        except Exception as error:  # a damaged common.pt fails inside torch.load with many types
            problem = f"{COMMON_STATE} is unreadable ({type(error).__name__})"
    raise _broken(path, problem)


def _broken(path: str, problem: str) -> UserError:
    """The error for a checkpoint `path` (an iter_NNNNNNN folder) that cannot load, naming where to resume instead."""
    root, folder = os.path.split(os.path.abspath(path))
    iteration = int(_ITERATION_FOLDER.fullmatch(folder).group(1))
    return UserError(f"{path}: the checkpoint is broken, {problem}; {_earlier_complete_checkpoint(root, iteration)}")


def _layout() -> dict:
    return {
        "tensor_model_parallel_size": parallel_state.get_tensor_model_parallel_world_size(),
        "pipeline_model_parallel_size": parallel_state.get_pipeline_model_parallel_world_size(),
        "data_parallel_size": parallel_state.get_data_parallel_world_size(),
    }


def saved_run_start_layers(run_state: dict) -> list[int]:
    """The layers whose W_0 the checkpoint of `run_state` holds (none where its mixer read no drifts)."""
    return run_state.get(RUN_START_LAYERS, [])


def _run_start_state(model, model_state: dict, drift: WeightDrift, layers: Sequence[int], is_loading: bool) -> dict:
    """{layer: W_0 on this rank} of `layers` as sharded tensors that mirror the layer's own weight
    in `model_state` (its shard's offsets, its replica id), so they reshard across layouts as the
    weights do. megatron stacks every layer's weight into one tensor, whose saved shards must cover
    it whole; only some layers are kept here, so the layer axis moves into the key."""
    names = {module: name for name, module in unwrap(model[0]).named_modules()}
    shards = {}
    for index, fc2 in mlp_output_projections(model).items():
        if index in layers:
            weight = model_state[f"{names[fc2]}.weight"]
            stacked = weight.prepend_axis_num  # the layer axis of the stacked weights, absent from the shard
            shards[index] = replace(
                weight,
                key=f"{RUN_START}.decoder.layers.{index}.mlp.linear_fc2.weight",
                data=torch.empty_like(fc2.weight, requires_grad=False) if is_loading else drift.start[index],
                global_shape=weight.global_shape[stacked:],
                global_offset=weight.global_offset[stacked:],
                axis_fragmentations=weight.axis_fragmentations[stacked:],
                prepend_axis_num=0,
            )
    return shards


def _sharded_state(
    model, optimizer, is_loading: bool, distributed_optimizer: bool, drift: Optional[WeightDrift] = None, run_start_layers: Sequence[int] = ()
) -> dict:
    # With megatron's DDP the module's own sharded_state_dict carries the right keys.
    model_state = model[0].module.sharded_state_dict()
    # W_0 is not the optimizer's: its state is built from the model's alone.
    run_start = {} if drift is None else {RUN_START: _run_start_state(model, model_state, drift, run_start_layers, is_loading)}
    # The distributed optimizer resumes exactly only with its dp_reshardable layout.
    metadata = {"distrib_optim_sharding_type": "dp_reshardable"} if distributed_optimizer else None
    return {
        "model": model_state,
        "optimizer": optimizer.sharded_state_dict(model_state, is_loading=is_loading, metadata=metadata),
        **run_start,
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


def save_checkpoint(
    root: str, iteration: int, model, optimizer, run_state: dict, distributed_optimizer: bool, drift: Optional[WeightDrift] = None
) -> str:
    """Write the checkpoint of `iteration` on every rank, with `drift`'s W_0 where given; return its folder."""
    rank = torch.distributed.get_rank()
    final = checkpoint_path(root, iteration)
    staging = f"{final}.tmp"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
        os.makedirs(staging)
    torch.distributed.barrier()
    run_start_layers = [] if drift is None else sorted(set(drift.layer_indices))
    state = _sharded_state(model, optimizer, False, distributed_optimizer, drift, run_start_layers)
    state["run"] = dict(run_state, layout=_layout(), adam_steps=_torch_adam_steps(optimizer))
    state["run"][RUN_START_LAYERS] = run_start_layers
    dist_checkpointing.save(state, staging)
    os.makedirs(os.path.join(staging, "rng"), exist_ok=True)
    torch.save(_rng_state(), os.path.join(staging, "rng", f"rank_{rank:05d}.pt"))
    torch.distributed.barrier()
    if rank == 0:
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(staging, final)
        write_text_atomically(os.path.join(root, TRACKER), f"{iteration}\n")
    torch.distributed.barrier()
    return final


def _optimizer_parts(optimizer) -> list:
    return getattr(optimizer, "chained_optimizers", [optimizer])


def _torch_adam_steps(optimizer) -> list[Optional[float]]:
    """Each part's Adam step count, where torch's Adam keeps it per parameter (no Apex or TE)."""
    return [
        next((float(state["step"]) for state in part.optimizer.state.values() if "step" in state), None)
        for part in _optimizer_parts(optimizer)
    ]


def _prepare_distributed_optimizer_load(optimizer) -> None:
    """Give the inner torch Adam of a new distributed optimizer the state a checkpoint load fills.

    Without Apex or Transformer Engine, megatron.core 0.16 reads Adam's `step` from that state while
    preparing a load, and a new optimizer has none yet (`assert len(steps) == 1`).
    """
    for part in _optimizer_parts(optimizer):
        if not part.optimizer.state:
            part.init_state_fn(part.optimizer, part.config)
            for state in part.optimizer.state.values():
                state["step"] = torch.zeros((), dtype=torch.float32)


def _restore_torch_adam_steps(optimizer, steps: list[Optional[float]]) -> None:
    """Set each parameter's own Adam step: megatron.core 0.16's distributed-optimizer load leaves one
    tensor shared by all parameters, which torch's Adam then advances once per parameter."""
    for part, step in zip(_optimizer_parts(optimizer), steps):
        if step is not None:
            for state in part.optimizer.state.values():
                state["step"] = torch.tensor(step, dtype=torch.float32)


def load_model_state(path: str, model) -> dict:
    """This rank's shards of the model tensors saved at `path`, at this run's layout (megatron.core
    reshards: the checkpoint may have been written at another TP/PP layout)."""
    return dist_checkpointing.load({"model": model[0].module.sharded_state_dict()}, path)["model"]


def initialize_from_pretrained(path: str, model, optimizer) -> None:
    """Megatron-LM's finetuning start: the model's weights from `path`; optimizer state and RNG stay new."""
    model[0].module.load_state_dict(load_model_state(path, model))
    # A mixed-precision optimizer keeps the fp32 copies of the weights it made when it was built.
    optimizer.reload_model_params()


def load_checkpoint(
    path: str, run_state: dict, model, optimizer, distributed_optimizer: bool, drift: Optional[WeightDrift] = None
) -> None:
    """Load model, optimizer and (at the saved layout) RNG states from the checkpoint at `path`, and
    into `drift` the W_0 it holds of the drift's layers (those of `saved_run_start_layers`)."""
    saved, current = run_state["layout"], _layout()
    same_layout = saved == current
    same_model_layout = all(saved[key] == current[key] for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size"))
    if distributed_optimizer and not same_model_layout:
        raise UserError(
            f"{path}: saved at tensor x pipeline parallel {saved['tensor_model_parallel_size']} x "
            f"{saved['pipeline_model_parallel_size']}, this run is {current['tensor_model_parallel_size']} x "
            f"{current['pipeline_model_parallel_size']}; the distributed optimizer's state reshards only across "
            f"data-parallel sizes: resume at the saved --tensor-model-parallel-size and --pipeline-model-parallel-size"
        )
    if distributed_optimizer:
        _prepare_distributed_optimizer_load(optimizer)
    run_start_layers = [] if drift is None else sorted(set(drift.layer_indices) & set(saved_run_start_layers(run_state)))
    try:
        state = dist_checkpointing.load(_sharded_state(model, optimizer, True, distributed_optimizer, drift, run_start_layers), path)
    except CheckpointException as error:  # a tensor file damaged where the checks before loading cannot see
        # Each rank's failure comes as (exception, stack): name its kind; torch's own text runs long.
        kinds = sorted({type(failure[0] if isinstance(failure, tuple) else failure).__name__ for failure in error.failures.values()})
        raise _broken(path, f"a tensor file holds damaged data ({', '.join(kinds)} while reading it)") from error
    model[0].module.load_state_dict(state["model"])
    # megatron.core 0.16 copies the distributed optimizer's dp_reshardable state into fp32 main
    # params that are views of trainable weights, which autograd refuses outside no_grad.
    with torch.no_grad():
        optimizer.load_state_dict(state["optimizer"])
    if distributed_optimizer:
        _restore_torch_adam_steps(optimizer, run_state["adam_steps"])
    if drift is not None:
        drift.start.update(state.get(RUN_START, {}))  # dist_checkpointing leaves out an empty dict (none of the layers here)
    rng_file = os.path.join(path, "rng", f"rank_{torch.distributed.get_rank():05d}.pt")
    if same_layout and os.path.isfile(rng_file):
        _set_rng_state(torch.load(rng_file, weights_only=False))
