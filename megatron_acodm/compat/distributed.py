"""torch.distributed start-up: torchrun's environment, or a single process without one."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def free_port() -> int:
    """A TCP port that is free on this machine now (a one-process group's rendezvous, tests, benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Initialise the default process group and return (rank, world_size).

    Under torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) it joins the job; without
    those variables it starts a single process (world size 1) on a free local port. The backend
    defaults to nccl where CUDA is available (binding the process to GPU LOCAL_RANK) and to gloo
    otherwise. When the default group already exists it only reports it.
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if "RANK" in os.environ:
        dist.init_process_group(backend=backend, init_method="env://")
    else:
        dist.init_process_group(
            backend=backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
        )
    return dist.get_rank(), dist.get_world_size()
