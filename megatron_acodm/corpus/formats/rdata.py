"""A reader for R's serialization format, enough to pull character vectors out of R data files.

R packages keep their data sets in a lazy-load database: `Rdata.rdx` (a gzip-compressed
serialized index) names each object and gives its (offset, length) in `Rdata.rdb`, whose records
are a 4-byte big-endian uncompressed size followed by a zlib stream of one serialized object.
Only the XDR (big-endian binary) flavour that R writes by default is supported; environments,
closures and byte code raise `RDataError` because data sets made of text never contain them.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

# SEXP type codes (R Internals, "Serialization formats").
NILSXP, SYMSXP, LISTSXP, LANGSXP, CHARSXP = 0, 1, 2, 6, 9
LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, VECSXP, EXPRSXP, RAWSXP = 10, 13, 14, 15, 16, 19, 20, 24
REFSXP, NILVALUE_SXP, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP = 255, 254, 242, 241, 253

NA_INTEGER = -(2**31)
# CHARSXP encoding bits kept in the "levels" part of the flags word.
LATIN1_MASK, UTF8_MASK = 1 << 2, 1 << 3


class RDataError(ValueError):
    """The bytes are not an R object this reader understands."""


@dataclass
class RObject:
    """An R value with attributes (names, class, ...); `value` is a Python list or scalar."""

    value: Any
    attributes: dict = field(default_factory=dict)

    @property
    def names(self) -> Optional[list]:
        names = self.attributes.get("names")
        return names.value if isinstance(names, RObject) else names


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.position = 0
        self.references: list = []  # symbols are written once, then referred to by index
        self.native_encoding = "utf-8"

    def take(self, size: int) -> bytes:
        end = self.position + size
        if end > len(self.data):
            raise RDataError("truncated R serialization")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def integer(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        length = self.integer()
        if length == -1:  # long vector: two more words, upper then lower 32 bits
            upper, lower = struct.unpack(">II", self.take(8))
            return (upper << 32) | lower
        return length

    def header(self) -> None:
        if self.take(2) != b"X\n":
            raise RDataError("not an XDR R serialization (expected 'X\\n' header)")
        version = self.integer()
        self.take(8)  # writer's R version, oldest R version that can read it
        if version == 3:
            self.native_encoding = self.take(self.integer()).decode("ascii").lower()
        elif version != 2:
            raise RDataError(f"unsupported R serialization version {version}")

    def item(self) -> Any:
        flags = self.integer()
        kind = flags & 0xFF
        has_attributes, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in (NILVALUE_SXP, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP):
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.integer()
            return self.references[index - 1]
        if kind == SYMSXP:
            symbol = self.item()
            self.references.append(symbol)
            return symbol
        if kind in (LISTSXP, LANGSXP):
            return self.pairlist(has_attributes, has_tag)
        if kind == CHARSXP:
            return self.string(flags >> 12)
        if kind in (LGLSXP, INTSXP):
            value = [None if number == NA_INTEGER else number for number in self.numbers("i", self.length())]
        elif kind == REALSXP:
            value = self.numbers("d", self.length())
        elif kind == CPLXSXP:
            pairs = self.numbers("d", 2 * self.length())
            value = [complex(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]
        elif kind == RAWSXP:
            value = self.take(self.length())
        elif kind in (STRSXP, VECSXP, EXPRSXP):
            value = [self.item() for _ in range(self.length())]
        else:
            raise RDataError(f"unsupported R object type {kind}")
        attributes = self.pairlist_as_dict(self.item()) if has_attributes else {}
        return RObject(value, attributes)

    def numbers(self, code: str, count: int) -> list:
        """`count` big-endian numbers of struct type `code` ("i" or "d")."""
        return list(struct.unpack(f">{count}{code}", self.take(struct.calcsize(code) * count)))

    def string(self, levels: int) -> Optional[str]:
        size = self.integer()
        if size == -1:
            return None  # NA_character_
        raw = self.take(size)
        if levels & UTF8_MASK:
            return raw.decode("utf-8")
        if levels & LATIN1_MASK:
            return raw.decode("latin-1")
        return raw.decode(self.native_encoding, errors="replace")

    def pairlist(self, has_attributes: bool, has_tag: bool) -> list:
        """A pairlist node as [(tag, value), ...] for this node and the rest of the chain."""
        if has_attributes:
            self.item()
        tag = self.item() if has_tag else None
        head = self.item()
        rest = self.item()
        return [(tag, head)] + (rest if isinstance(rest, list) else [])

    @staticmethod
    def pairlist_as_dict(pairs: Any) -> dict:
        return {tag: value for tag, value in pairs} if isinstance(pairs, list) else {}


def unserialize(data: bytes) -> Any:
    """Decode one serialized R object (already decompressed)."""
    reader = _Reader(data)
    reader.header()
    return reader.item()


def read_lazyload_index(rdx: bytes) -> dict[str, tuple[int, int]]:
    """Object name -> (offset, length) in the matching .rdb, from a gzip-compressed .rdx."""
    index = unserialize(gzip.decompress(rdx))
    if not isinstance(index, RObject) or index.names is None or "variables" not in index.names:
        raise RDataError("not a lazy-load index (no 'variables' entry)")
    variables = index.value[index.names.index("variables")]
    return {
        name: (entry.value[0], entry.value[1]) for name, entry in zip(variables.names, variables.value, strict=True)
    }


def read_lazyload_record(rdb: bytes, offset: int, length: int) -> Any:
    """One object from a .rdb: a big-endian uncompressed size, then a zlib stream."""
    record = rdb[offset : offset + length]
    expected = struct.unpack(">I", record[:4])[0]
    payload = zlib.decompress(record[4:])
    if len(payload) != expected:
        raise RDataError(f"R record at offset {offset} inflates to {len(payload)} bytes, expected {expected}")
    return unserialize(payload)


def read_character_vectors(rdx: bytes, rdb: bytes) -> dict[str, list[Optional[str]]]:
    """Every character-vector object of a lazy-load database, by name, in the index's order."""
    vectors = {}
    for name, (offset, length) in read_lazyload_index(rdx).items():
        value = read_lazyload_record(rdb, offset, length)
        if isinstance(value, RObject) and all(v is None or isinstance(v, str) for v in value.value):
            vectors[name] = value.value
    return vectors
