"""What must import: the wheels that megatron-core and this project need beyond a bare PyTorch image,
and the one-line error that names the missing ones with the `pip download` command that fetches them."""

from __future__ import annotations

import glob
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from typing import Callable

# The megatron-core release a bare image gets: the current one, which needs Python 3.12 (the GPU
# machines' Python); GPU_CHECK_MEGATRON_CORE=0.16.1 checks the last release for older Pythons instead.
# Where this variable is set, an installed megatron-core of another version counts as missing.
MEGATRON_CORE_VARIABLE = "GPU_CHECK_MEGATRON_CORE"
MEGATRON_CORE = os.environ.get(MEGATRON_CORE_VARIABLE, "0.19.2")
# What megatron-core and this project need that a bare PyTorch image (torch, Triton, numpy,
# sentencepiece, pytest) lacks, as the wheels to carry (the versions tested here) and the module
# that must import. psutil: megatron.core's checkpoint saver; tqdm: the trainer's logs.
WHEELS = (
    (f"megatron-core=={MEGATRON_CORE}", "megatron.core"),
    ("psutil==7.2.2", "psutil"),
    ("tqdm==4.70.1", "tqdm"),
)
PIP_DOWNLOAD = (
    "python3 -m pip download --no-deps --only-binary=:all: --python-version {python} --implementation cp "
    "--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d {folder} {names}"
)
WHEEL_SITE = "/tmp/site"  # where gpu_check.sh installs the wheels


def installed(module: str) -> None:
    """Raise ImportError unless `module` is installed, without running it (no torch import: fast)."""
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"No module named {module!r}")


def _other_megatron_core() -> str | None:
    """Why the installed megatron-core is not the one GPU_CHECK_MEGATRON_CORE asks for, or None."""
    if MEGATRON_CORE_VARIABLE not in os.environ:
        return None
    try:
        found = importlib.metadata.version("megatron-core")
    except importlib.metadata.PackageNotFoundError:
        return None  # then megatron.core does not import either, or is a source tree taken as it is
    return None if found == MEGATRON_CORE else f"{found} is installed, {MEGATRON_CORE_VARIABLE} asks for {MEGATRON_CORE}"


def missing_wheels(load: Callable[[str], object] = importlib.import_module) -> list[tuple[str, str]]:
    """(NAME==VERSION, why) of every wheel in WHEELS whose module `load` fails on, and megatron-core
    where another version than GPU_CHECK_MEGATRON_CORE asks for is installed."""
    missing = []
    for requirement, module in WHEELS:
        try:
            load(module)
        except ImportError as error:
            missing.append((requirement, str(error)))
            continue
        other = _other_megatron_core() if module == "megatron.core" else None
        if other:
            missing.append((requirement, other))
    return missing


def missing_wheels_message(missing: list[tuple[str, str]], wheel_dir: str) -> str:
    what = "; ".join(f"{requirement} ({why})" for requirement, why in missing)
    held = "has wheels, but not these" if glob.glob(os.path.join(wheel_dir, "*.whl")) else "has no wheels"
    names = " ".join(requirement for requirement, _ in missing)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    fetch = PIP_DOWNLOAD.format(python=python, folder=wheel_dir, names=names)
    return f"missing {what}, and the wheel folder {wheel_dir} {held}; fetch them where PyPI is reachable with: {fetch}"
