"""Write output files atomically, so an interrupted build never leaves a torn file that looks whole."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator


@contextlib.contextmanager
def atomic_path(destination: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `destination` to write; it replaces `destination` only on success."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.tmp-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def jsonl_bytes(texts: Iterable[str]) -> bytes:
    """One `{"text": ...}` object per line; no timestamps or ids, so equal texts give equal bytes."""
    return b"".join(json.dumps({"text": text}, ensure_ascii=False).encode("utf-8") + b"\n" for text in texts)


def write_bytes(destination: Path, data: bytes) -> str:
    """Write `data` atomically and return its sha256."""
    with atomic_path(destination) as temporary:
        temporary.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def write_json(destination: Path, document: dict) -> None:
    write_bytes(destination, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
