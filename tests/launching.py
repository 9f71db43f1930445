"""Start Python programs the way users do: plainly, or under torchrun with N ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

from megatron_acodm.compat.distributed import free_port

# torchrun's variables: a test process started by an outer torchrun must not leak them.
DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def command(script: str, arguments: list[str], processes: Optional[int] = None) -> list[str]:
    launcher = [sys.executable]
    if processes is not None:
        launcher += ["-m", "torch.distributed.run", f"--nproc-per-node={processes}", f"--master-port={free_port()}"]
    return launcher + [script] + arguments


def environment() -> dict:
    env = {key: value for key, value in os.environ.items() if key not in DISTRIBUTED_ENV}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(script: str, arguments: list[str], cwd: str, processes: Optional[int] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(script, arguments, processes), cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout
    )
