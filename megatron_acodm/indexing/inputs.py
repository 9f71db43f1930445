"""A corpus's inputs: each domain's JSONL files, found by folder or by name, and their documents.

Plain, gzip (`.gz`) and zstd (`.zst`) files are read alike, line by line; a file that ends early
(a cut download, a copy still running) is an error naming it, never a shorter domain.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import json
import os
import re
from dataclasses import dataclass
from typing import IO, Iterable, Iterator, Optional, Sequence

from megatron_acodm.data.manifest import INPUT_SUFFIXES, check_unique_names
from megatron_acodm.errors import UserError

BATCH_LINES = 128  # lines per task sent to a worker: amortises inter-process overhead
# Domain names become file names and manifest keys: no separators, no hidden files.
_DOMAIN_NAME = re.compile(r"^\w[\w.+-]*$")


@dataclass(frozen=True)
class DomainInput:
    """One domain's input files, read in this order."""

    name: str
    source: str  # the file or folder the user named, for messages
    files: tuple[str, ...]


def _strip_input_suffix(filename: str) -> Optional[str]:
    for suffix in INPUT_SUFFIXES:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)]
    return None


def _folder_files(folder: str) -> tuple[str, ...]:
    files = tuple(
        os.path.join(folder, name)
        for name in sorted(os.listdir(folder))
        if not name.startswith(".")
        and _strip_input_suffix(name) is not None
        and os.path.isfile(os.path.join(folder, name))
    )
    if not files:
        raise UserError(
            f"{folder}: holds no {', '.join(INPUT_SUFFIXES)} files; add the domain's documents there or remove the folder"
        )
    return files


def _domain_from_path(name: str, path: str) -> DomainInput:
    if not _DOMAIN_NAME.match(name):
        raise UserError(
            f"{path}: domain name {name!r} cannot name output files; use letters, digits, '_', '-', '.', '+' "
            f"(not first) only"
        )
    if os.path.isdir(path):
        return DomainInput(name, path, _folder_files(path))
    if os.path.isfile(path):
        return DomainInput(name, path, (path,))
    raise UserError(f"{path}: no such file or folder (domain {name!r}); fix the path")


def discover_inputs(input_dir: Optional[str] = None, domain_specs: Sequence[str] = ()) -> list[DomainInput]:
    """Domains from `--input DIR` (`<domain>.jsonl[.gz|.zst]` files and `<domain>/` folders) and `--domain NAME=PATH`."""
    domains = []
    if input_dir is not None:
        if not os.path.isdir(input_dir):
            raise UserError(f"--input {input_dir}: not a folder; give a folder of <domain>.jsonl files or <domain>/ folders")
        for entry in sorted(os.listdir(input_dir)):
            path = os.path.join(input_dir, entry)
            if entry.startswith("."):
                continue
            if os.path.isdir(path):
                domains.append(_domain_from_path(entry, path))
            elif _strip_input_suffix(entry) is not None:
                domains.append(_domain_from_path(_strip_input_suffix(entry), path))
        if not domains:
            raise UserError(
                f"--input {input_dir}: no domains found; put one <domain>.jsonl (or .jsonl.gz, .jsonl.zst) file "
                f"or one <domain>/ folder of them per domain there"
            )
    for spec in domain_specs:
        name, separator, path = spec.partition("=")
        if not separator or not name or not path:
            raise UserError(f"--domain {spec!r}: expected NAME=PATH, e.g. --domain books=/data/books.jsonl")
        domains.append(_domain_from_path(name, path))
    if input_dir is None and not domain_specs:
        raise UserError("no input: give --input DIR or --domain NAME=PATH")
    check_unique_names([domain.name for domain in domains], source="--input/--domain")
    return domains


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a zstd file of one or more frames (parallel compressors write many).

    zstandard's own stream reader returns whatever a truncated file holds, so a cut file would read
    as a shorter one; here a file that ends inside a frame raises EOFError, as gzip does."""

    _CHUNK = 1 << 20

    def __init__(self, raw: IO[bytes], zstandard):
        self._raw, self._zstandard = raw, zstandard
        self._frame = None  # the decompressor of the current frame
        self._pending, self._position = b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._position == len(self._pending):
            compressed = self._raw.read(self._CHUNK)
            if not compressed:
                if self._frame is not None and not self._frame.eof:
                    raise EOFError("the file ends inside a compressed frame")
                return 0
            self._pending, self._position = self._decompress(compressed), 0
        count = min(len(buffer), len(self._pending) - self._position)
        buffer[:count] = self._pending[self._position : self._position + count]
        self._position += count
        return count

    def _decompress(self, compressed: bytes) -> bytes:
        parts = []
        while compressed:
            if self._frame is None or self._frame.eof:
                self._frame = self._zstandard.ZstdDecompressor().decompressobj()
            parts.append(self._frame.decompress(compressed))
            compressed = self._frame.unused_data if self._frame.eof else b""
        return b"".join(parts)

    def close(self) -> None:
        self._raw.close()
        super().close()


@contextlib.contextmanager
def _open_binary(path: str) -> Iterator[IO[bytes]]:
    """Open `path`, decompressing by suffix; read errors in the block become a UserError naming it."""
    read_errors: tuple[type[BaseException], ...] = (OSError, EOFError)
    if path.endswith(".gz"):
        stream = gzip.open(path, "rb")
    elif path.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise UserError(
                f"{path}: reading .zst files needs the zstandard module; `pip install zstandard` "
                f"or decompress the file"
            ) from None
        read_errors += (zstandard.ZstdError,)
        stream = io.BufferedReader(_ZstdFrames(open(path, "rb"), zstandard))
    else:
        stream = open(path, "rb")
    with stream:
        try:
            yield stream
        except read_errors as error:  # truncated or corrupt compressed data
            raise UserError(f"{path}: cannot be read ({error}); check the file is complete") from None


def _parse_line(line: bytes, key: str, path: str, number: int) -> str:
    try:
        record = json.loads(line)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise UserError(f"{path}:{number}: not valid JSON ({error}); each line must be one JSON object") from None
    if not isinstance(record, dict) or key not in record:
        raise UserError(
            f"{path}:{number}: no {key!r} field; give every line one, or name the field holding the text with --json-keys"
        )
    text = record[key]
    if not isinstance(text, str):
        raise UserError(
            f"{path}:{number}: field {key!r} is a {type(text).__name__}, not a string; store the document's text as a string"
        )
    return text


@dataclass(frozen=True)
class LineBatch:
    """Consecutive raw lines of one input file, the unit of work sent to a tokenizer process."""

    path: str
    first_line: int  # 1-based number of lines[0], for error messages
    lines: list[bytes]
    key: str  # the JSON field holding the text


def read_line_batches(files: Iterable[str], key: str, batch_lines: int = BATCH_LINES) -> Iterator[LineBatch]:
    """Every line of `files` in order, in batches; JSON parsing happens in the workers, off the writer's path."""
    for path in files:
        with _open_binary(path) as stream:
            number = 1
            while lines := list(itertools.islice(stream, batch_lines)):
                yield LineBatch(path, number, lines, key)
                number += len(lines)


def read_documents(batch: LineBatch) -> Iterator[str]:
    """The texts of a batch's non-blank lines."""
    for offset, line in enumerate(batch.lines):
        if line.strip():
            yield _parse_line(line, batch.key, batch.path, batch.first_line + offset)
