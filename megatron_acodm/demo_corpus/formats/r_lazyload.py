"""Character vectors out of an R package's data lazy-load database (`Rdata.rdx` + `Rdata.rdb`).

`Rdata.rdx` is one gzip-compressed serialized R object, a named list whose `variables` entry
gives each object's (offset, length) in `Rdata.rdb`; each record there is a 4-byte big-endian
uncompressed size followed by a zlib stream of one serialized object (R's `makeLazyLoadDB`).
This module only undoes that framing; the serialized objects are read by the `rdata` package.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Optional

import numpy
import rdata

# What rdata raises on bytes it cannot read: NotImplementedError (a RuntimeError) for an unknown
# format, ValueError or IndexError for a truncated or inconsistent stream.
_UNREADABLE = (ValueError, LookupError, RuntimeError, EOFError, struct.error, zlib.error)


class RDataError(ValueError):
    """The bytes are not an R object, or not the lazy-load database, that this reader expects."""


def unserialize(data: bytes) -> Any:
    """One serialized R object (gzip-compressed or not) as Python values (rdata's conversion)."""
    try:
        return rdata.conversion.convert(rdata.parser.parse_data(data, extension=".rds"))
    except _UNREADABLE as error:
        raise RDataError(f"not a readable R serialization ({type(error).__name__}: {error})") from error


def read_lazyload_index(rdx: bytes) -> dict[str, tuple[int, int]]:
    """Object name -> (offset, length) in the matching .rdb, from a gzip-compressed .rdx."""
    index = unserialize(rdx)
    variables = index.get("variables") if isinstance(index, dict) else None
    if not isinstance(variables, dict):
        raise RDataError("not a lazy-load index (no 'variables' entry)")
    return {str(name): (int(entry[0]), int(entry[1])) for name, entry in variables.items()}


def read_lazyload_record(rdb: bytes, offset: int, length: int) -> Any:
    """One object from a .rdb: a big-endian uncompressed size, then a zlib stream."""
    record = rdb[offset : offset + length]
    try:
        expected = struct.unpack(">I", record[:4])[0]
        payload = zlib.decompress(record[4:])
    except (struct.error, zlib.error) as error:
        raise RDataError(f"R record at offset {offset} is not a zlib-compressed record ({error})") from error
    if len(payload) != expected:
        raise RDataError(f"R record at offset {offset} inflates to {len(payload)} bytes, expected {expected}")
    return unserialize(payload)


def character_vector(value: Any) -> Optional[list[Optional[str]]]:
    """`value` as a list of strings (None for NA) when it is an R character vector, else None."""
    if not isinstance(value, numpy.ndarray) or value.ndim != 1 or value.dtype.kind not in "UO":
        return None
    items = value.tolist()
    return items if all(item is None or isinstance(item, str) for item in items) else None


def read_character_vectors(rdx: bytes, rdb: bytes) -> dict[str, list[Optional[str]]]:
    """Every character-vector object of a lazy-load database, by name, in the index's order."""
    vectors = {}
    for name, (offset, length) in read_lazyload_index(rdx).items():
        strings = character_vector(read_lazyload_record(rdb, offset, length))
        if strings is not None:
            vectors[name] = strings
    return vectors
