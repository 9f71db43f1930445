"""Write output files atomically (`megatron_acodm.atomic_files`), so an interrupted build never
leaves a torn file that looks whole."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from megatron_acodm.atomic_files import atomic_write


def jsonl_bytes(texts: Iterable[str]) -> bytes:
    """One `{"text": ...}` object per line; no timestamps or ids, so equal texts give equal bytes."""
    return b"".join(json.dumps({"text": text}, ensure_ascii=False).encode("utf-8") + b"\n" for text in texts)


def write_bytes(destination: Path, data: bytes) -> str:
    """Write `data` atomically and return its sha256."""
    with atomic_write(destination, "wb") as stream:
        stream.write(data)
    return hashlib.sha256(data).hexdigest()


def write_json(destination: Path, document: dict) -> None:
    write_bytes(destination, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
