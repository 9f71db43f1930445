"""Shape extracted text into training documents of a useful size.

Sources yield either whole units (a chapter, a source file, a help page) or many small items
(a fortune, a dictionary entry, a dialogue). Small items are packed into groups, long units are
split at paragraph, then line, then word boundaries, so most documents land between ~1 and 16 KB.
"""

from __future__ import annotations

from typing import Iterable

MAX_DOCUMENT_BYTES = 16 * 1024
PACK_TARGET_BYTES = 4 * 1024
# Shorter texts (empty __init__.py files, stray headings) carry no useful signal.
MIN_DOCUMENT_BYTES = 100
SPLIT_SEPARATORS = ("\n\n", "\n", " ")


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def as_text(data: bytes) -> str:
    """Decode file contents: UTF-8 when valid, else Latin-1 (older Debian files), never failing."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").removeprefix("\ufeff")


def pack(pieces: Iterable[str], target_bytes: int = PACK_TARGET_BYTES, separator: str = "\n\n") -> list[str]:
    """Join consecutive small pieces into groups of up to `target_bytes` (a larger piece stays alone)."""
    return _join_greedily((piece.strip() for piece in pieces if piece.strip()), target_bytes, separator)


def split_long(text: str, max_bytes: int = MAX_DOCUMENT_BYTES, separators=SPLIT_SEPARATORS) -> list[str]:
    """Cut `text` into chunks of at most `max_bytes`, at the coarsest boundary that makes them fit.

    Each chunk is a run of whole parts rejoined with the separator that stood between them, so
    concatenating the chunks with those separators gives back the original text.
    """
    if utf8_size(text) <= max_bytes:
        return [text]
    if not separators:
        return _cut_bytes(text, max_bytes)
    separator, finer = separators[0], separators[1:]
    pieces = (piece for part in text.split(separator) for piece in split_long(part, max_bytes, finer))
    return _join_greedily(pieces, max_bytes, separator)


def _join_greedily(pieces: Iterable[str], limit: int, separator: str) -> list[str]:
    """Join consecutive pieces while the result stays within `limit` bytes; start a new group when not."""
    groups, current, size = [], [], 0
    for piece in pieces:
        added = utf8_size(piece) + (len(separator) if current else 0)
        if current and size + added > limit:
            groups.append(separator.join(current))
            current, size, added = [], 0, utf8_size(piece)
        current.append(piece)
        size += added
    if current:
        groups.append(separator.join(current))
    return groups


def _cut_bytes(text: str, max_bytes: int) -> list[str]:
    """Last resort for a single enormous word: cut at character boundaries."""
    chunks = []
    while text:
        prefix = text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore") or text[0]
        chunks.append(prefix)
        text = text[len(prefix) :]
    return chunks


def finish(
    documents: Iterable[str], max_bytes: int = MAX_DOCUMENT_BYTES, min_bytes: int = MIN_DOCUMENT_BYTES
) -> list[str]:
    """Split long documents, drop ones under `min_bytes` and exact duplicates (first occurrence kept)."""
    seen, finished = set(), []
    for document in documents:
        for chunk in split_long(document.strip(), max_bytes):
            chunk = chunk.strip()
            if utf8_size(chunk) >= min_bytes and chunk not in seen:
                seen.add(chunk)
                finished.append(chunk)
    return finished
