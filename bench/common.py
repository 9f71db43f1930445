"""What every benchmark here shares: the repository, the machine it ran on, one child-process runner,
timing, progress, and the results writer.

Benchmarks run as scripts (`python bench/<name>.py`), so this folder is on `sys.path` and they
`import common`; everything else they use is the installed package, `megatron_acodm`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from tqdm import tqdm

from megatron_acodm.atomic_files import atomic_write, write_text_atomically

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MIB = 2**20
GIB = 2**30
# Variables that would make a child `pretrain_acodm.py` join a torchrun job instead of running alone.
DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
MIN_RUN_S = 0.2  # the least time spent in timed calls of one CPU measurement


# ---------------------------------------------------------------- results


def repo_relative(value: Any) -> Any:
    """`value` with every string that is a path under the repository rewritten relative to it
    (results are committed; the machine they ran on is not their business)."""
    if isinstance(value, str) and value.startswith(REPO + os.sep):
        return os.path.relpath(value, REPO)
    if isinstance(value, dict):
        return {key: repo_relative(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [repo_relative(item) for item in value]
    return value


def write_json(path: str, data: Any) -> None:
    """Strict JSON (no NaN or Infinity), repository paths made relative, replaced atomically."""
    with atomic_write(path) as stream:
        json.dump(repo_relative(data), stream, indent=1, allow_nan=False)
        stream.write("\n")


def write_text(path: str, text: str) -> None:
    write_text_atomically(path, text)


def save_figure(figure: Any, path: str, dpi: int) -> None:
    """A matplotlib figure as a PNG, replaced atomically like the figures beside it."""
    with atomic_write(path, "wb") as stream:
        figure.savefig(stream, format="png", dpi=dpi)


# ---------------------------------------------------------------- the machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _memory_bytes() -> int:
    import psutil

    return psutil.virtual_memory().total


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


FACTS: dict[str, Callable[[], Any]] = {
    "cpu_count": os.cpu_count,
    "cpus": os.cpu_count,
    "cpu_model": _cpu_model,
    "memory_bytes": _memory_bytes,
    "machine": platform.machine,
    "platform": platform.platform,
    "python": platform.python_version,
    "torch_threads": _torch_threads,
}


def describe_machine(keys: Sequence[str], **given: Any) -> dict[str, Any]:
    """The named facts about this machine, in this order: a value from `given`, else one of FACTS,
    else the installed version of the distribution of that name (`torch`, `megatron-core` or
    `megatron_core`, `triton`, ...)."""
    described = {}
    for key in keys:
        if key in given:
            described[key] = given[key]
        elif key in FACTS:
            described[key] = FACTS[key]()
        else:
            described[key] = importlib.metadata.version(key.replace("_", "-"))
    return described


# ---------------------------------------------------------------- child processes


def child_env(threads: int) -> dict[str, str]:
    """This environment for a child run: OMP_NUM_THREADS the one thread knob, unbuffered output,
    no torchrun variables."""
    env = {key: value for key, value in os.environ.items() if key not in DISTRIBUTED_ENV and key != "MKL_NUM_THREADS"}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


def tail(path: str, chars: int = 3000) -> str:
    with open(path, encoding="utf-8", errors="replace") as stream:
        return stream.read()[-chars:]


def run_process(
    argv: Sequence[str],
    *,
    cwd: str = REPO,
    env: Optional[Mapping[str, str]] = None,
    log: Optional[str] = None,
    error_log: Optional[str] = None,
    on_poll: Optional[Callable[[float], None]] = None,
    poll_s: float = 1.0,
    check: bool = False,
) -> dict[str, Any]:
    """Run `argv` to its end; returns its `returncode`, `wall_s` and `peak_rss_mib`.

    Output goes to the file `log` (None: this process's own stdout), errors to `error_log` (None:
    wherever the output goes). The child is reaped with `os.wait4`, whose rusage is that one child's:
    its kernel high-water RSS, exact, not sampled (`RUSAGE_CHILDREN` would give the largest child
    reaped so far). `on_poll(elapsed_s)` is called every `poll_s` while it runs. `check`: a non-zero
    exit raises RuntimeError with the end of its log.
    """
    import subprocess

    started = time.perf_counter()
    with contextlib.ExitStack() as files:
        stdout = files.enter_context(open(log, "w")) if log else None
        stderr = files.enter_context(open(error_log, "w")) if error_log else (subprocess.STDOUT if log else None)
        process = subprocess.Popen(list(argv), cwd=cwd, env=None if env is None else dict(env), stdout=stdout, stderr=stderr)
        while True:
            pid, status, usage = os.wait4(process.pid, 0 if on_poll is None else os.WNOHANG)
            if pid == process.pid:
                break
            on_poll(time.perf_counter() - started)
            time.sleep(poll_s)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    result = {
        "returncode": process.returncode,
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib": usage.ru_maxrss * 1024 / MIB,  # Linux reports ru_maxrss in KiB
    }
    if check and process.returncode != 0:
        where = f"; the end of {error_log or log}:\n{tail(error_log or log)}" if (error_log or log) else ""
        raise RuntimeError(f"{' '.join(argv)}\nexited with {process.returncode}{where}")
    return result


# ---------------------------------------------------------------- timing


def _timer(function: Callable[[], object]):
    import torch
    import torch.utils.benchmark

    # The Timer's own default is one thread; time at the thread count the process runs with.
    return torch.utils.benchmark.Timer(stmt="function()", globals={"function": function}, num_threads=torch.get_num_threads())


def time_cpu(function: Callable[[], object], repeats: int) -> dict[str, Any]:
    """Per-call milliseconds of `function` with `torch.utils.benchmark`: `median_ms` and `min_ms` over
    its timed blocks, `repeats` the calls timed (about `repeats` or more; fast calls run in blocks)."""
    timer = _timer(function)
    scale = timer.timeit(1).median  # warm-up calls, then one timed call: the size of a call
    measurement = timer.blocked_autorange(min_run_time=max(MIN_RUN_S, repeats * scale))
    return {
        "median_ms": measurement.median * 1e3,
        "min_ms": min(measurement.times) * 1e3,
        "repeats": len(measurement.times) * measurement.number_per_run,
    }


def time_gpu(function: Callable[[], object]) -> dict[str, Any]:
    """Per-call milliseconds of a GPU kernel with `triton.testing.do_bench` (CUDA events, the L2
    cache flushed before every call, warm-up and repeats set by its time budgets)."""
    import triton.testing

    times = triton.testing.do_bench(function, return_mode="all")
    return {"median_ms": statistics.median(times), "min_ms": min(times), "repeats": len(times)}


def calls_per_second(function: Callable[[], object], calls: int) -> float:
    """How many calls of `function` a second, over `calls` timed calls after a few warm-up calls
    (`torch.utils.benchmark`); for a stateful `function`, such as a step that advances."""
    return 1.0 / _timer(function).timeit(calls).mean


# ---------------------------------------------------------------- progress


def progress(total: float, description: str, unit: str) -> tqdm:
    """A progress bar on stderr; its ETA is the average rate so far. Redrawn every second on a
    terminal, every 30 s into a log file."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, smoothing=0, dynamic_ncols=True,
                mininterval=1.0 if interactive else 30.0, ascii=not interactive)


def say(message: str, stream: Optional[Any] = None) -> None:
    """One line on `stream` (default stderr) that leaves any progress bar intact."""
    tqdm.write(message, file=stream or sys.stderr)
