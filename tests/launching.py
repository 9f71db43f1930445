"""Start Python programs the way users do: plainly, or under torchrun with N ranks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from typing import Optional

from megatron_acodm.compat.distributed import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")

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


def load_script(path: str) -> types.ModuleType:
    """The module of a script (`tools/*.py`, `pretrain_acodm.py`) without running its `__main__` part,
    so a test can call its `main` in this process."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
