"""dictd dictionaries: a `.dict.dz` text body (gzip-compatible dictzip) and a tab-separated `.index`.

Each index line is `headword<TAB>offset<TAB>length` with offset and length written in dictd's
base-64 digits (A-Z, a-z, 0-9, +, / for 0..63, most significant first).
"""

from __future__ import annotations

import gzip

BASE64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DIGIT_VALUES = {digit: value for value, digit in enumerate(BASE64_DIGITS)}


def decode_number(digits: str) -> int:
    value = 0
    for digit in digits:
        value = value * 64 + _DIGIT_VALUES[digit]
    return value


def is_metadata(headword: str) -> bool:
    """dictfmt's bookkeeping entries (00-database-info, 00-database-url, 00databaseshort, ...)."""
    return headword.startswith(("00-", "00database"))


def read_entries(index: bytes, dict_dz: bytes) -> list[str]:
    """The dictionary's entries in file order, each once (several headwords may share one entry)."""
    body = gzip.decompress(dict_dz)
    spans = set()
    for line in index.decode("utf-8", errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and not is_metadata(fields[0]):
            spans.add((decode_number(fields[1]), decode_number(fields[2])))
    return [body[offset : offset + length].decode("utf-8", errors="replace") for offset, length in sorted(spans)]
