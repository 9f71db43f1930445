"""Where a program will write, checked before it starts: a wrong path costs no training and no traceback."""

from __future__ import annotations

import os
import tempfile

from megatron_acodm.errors import UserError


def check_output_folder(path: str, option: str) -> None:
    """`path` is a folder this process can write in, or can be created as one."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{option} {path}: is a file, not a folder; give a folder (it is created when missing)")
    _check_writable(path, path, option)


def check_output_file(path: str, option: str, example: str) -> None:
    """`path` names a file this process can write (replacing it if it exists); `example` is a file name
    the message suggests when `path` is a folder."""
    if os.path.isdir(path):
        raise UserError(f"{option} {path}: is a folder; give a file name, e.g. {option} {os.path.join(path, example)}")
    _check_writable(os.path.dirname(os.path.abspath(path)), path, option)


def _check_writable(folder: str, path: str, option: str) -> None:
    """Create and remove a file in `folder`, or in its nearest existing ancestor if it is missing."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{option} {path}: {existing} is a file, so nothing can be created under it; give another path")
    try:
        descriptor, probe = tempfile.mkstemp(dir=existing, prefix=".write-check-")
    except OSError as error:
        raise UserError(f"{option} {path}: cannot write in {existing} ({error.strerror}); give a path this user can write") from None
    os.close(descriptor)
    os.remove(probe)
