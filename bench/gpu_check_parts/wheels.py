"""What must import: the wheels that megatron-core and this project need beyond a bare PyTorch image,
and the one-line error that names the missing ones with the `pip download` command that fetches them."""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import sys
from typing import Callable

# What megatron-core 0.16.1 and this project need that a bare PyTorch image (torch, Triton, numpy,
# sentencepiece, pytest) lacks, as the wheels to carry (the versions tested here) and the module
# that must import. psutil: megatron.core's checkpoint saver; tqdm: the trainer's logs.
WHEELS = (
    ("megatron-core==0.16.1", "megatron.core"),
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


def missing_wheels(load: Callable[[str], object] = importlib.import_module) -> list[tuple[str, str]]:
    """(NAME==VERSION, why) of every wheel in WHEELS whose module `load` fails on."""
    missing = []
    for requirement, module in WHEELS:
        try:
            load(module)
        except ImportError as error:
            missing.append((requirement, str(error)))
    return missing


def missing_wheels_message(missing: list[tuple[str, str]], wheel_dir: str) -> str:
    what = "; ".join(f"{requirement} ({why})" for requirement, why in missing)
    held = "has wheels, but not these" if glob.glob(os.path.join(wheel_dir, "*.whl")) else "has no wheels"
    names = " ".join(requirement for requirement, _ in missing)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    fetch = PIP_DOWNLOAD.format(python=python, folder=wheel_dir, names=names)
    return f"missing {what}, and the wheel folder {wheel_dir} {held}; fetch them where PyPI is reachable with: {fetch}"
