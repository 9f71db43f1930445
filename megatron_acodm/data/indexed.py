"""Open a Megatron indexed dataset (`.bin/.idx`) after checking it, so bad files fail with a clear message.

megatron.core's reader asserts on a bad header and memory-maps whatever it finds; a truncated file
then surfaces much later as garbage tokens or an index error. Here the header, the index's size
and the data file's size are checked against each other before megatron.core opens them.
"""

from __future__ import annotations

import os
import struct

import numpy

from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, get_bin_path, get_idx_path

from megatron_acodm.errors import UserError

_HEADER = b"MMIDIDX\x00\x00"
_HEADER_BYTES = len(_HEADER) + 8 + 1 + 8 + 8  # magic, version, dtype code, sequences, documents
_FIX = "rebuild it with tools/preprocess_domains.py"
_SCAN_BLOCK = 1 << 24  # tokens per read when scanning for the largest id


def check_indexed_files(prefix: str) -> tuple[numpy.dtype, int, int]:
    """Validate `prefix.idx` and `prefix.bin`; return (token dtype, sequences, documents)."""
    idx_path, bin_path = get_idx_path(prefix), get_bin_path(prefix)
    for path in (idx_path, bin_path):
        if not os.path.isfile(path):
            raise UserError(f"{path}: missing; {_FIX} (or fix the prefix in --data-path / domains.json)")
    idx_size = os.path.getsize(idx_path)
    with open(idx_path, "rb") as stream:
        head = stream.read(_HEADER_BYTES)
    if len(head) < _HEADER_BYTES or head[: len(_HEADER)] != _HEADER:
        raise UserError(f"{idx_path}: not a Megatron indexed dataset index (bad header); {_FIX}")
    version, code, sequences, documents = struct.unpack("<QBQQ", head[len(_HEADER) :])
    if version != 1:
        raise UserError(f"{idx_path}: index version {version}, expected 1; {_FIX}")
    try:
        dtype = DType.dtype_from_code(code)
    except ValueError:
        raise UserError(f"{idx_path}: unknown token dtype code {code}; {_FIX}") from None
    expected_idx = _HEADER_BYTES + sequences * (4 + 8) + documents * 8
    if idx_size < expected_idx:
        raise UserError(
            f"{idx_path}: truncated ({idx_size} bytes, its header promises {expected_idx}); {_FIX}"
        )
    if documents < 2:
        raise UserError(f"{idx_path}: the dataset holds no documents; give this domain some text or drop it")
    lengths = numpy.memmap(idx_path, dtype=numpy.int32, mode="r", offset=_HEADER_BYTES, shape=(sequences,))
    expected_bin = int(lengths.sum(dtype=numpy.int64)) * numpy.dtype(dtype).itemsize
    bin_size = os.path.getsize(bin_path)
    if bin_size != expected_bin:
        raise UserError(
            f"{bin_path}: {bin_size} bytes but its index {idx_path} describes {expected_bin}; "
            f"the pair is truncated or mismatched, {_FIX}"
        )
    return numpy.dtype(dtype), sequences, documents - 1


def max_token_id(prefix: str, dtype: numpy.dtype) -> int:
    """The largest token id in `prefix.bin`, read in blocks (memory stays flat for any size)."""
    tokens = numpy.memmap(get_bin_path(prefix), dtype=dtype, mode="r")
    largest = -1
    for start in range(0, tokens.shape[0], _SCAN_BLOCK):
        largest = max(largest, int(tokens[start : start + _SCAN_BLOCK].max()))
    return largest


def open_indexed_dataset(prefix: str, vocab_size: int, known_max_token_id: int | None = None) -> IndexedDataset:
    """Check the pair and its token ids against the vocabulary, then open it with megatron.core."""
    dtype, _, _ = check_indexed_files(prefix)
    largest = known_max_token_id if known_max_token_id is not None else max_token_id(prefix, dtype)
    if largest >= vocab_size:
        raise UserError(
            f"{get_bin_path(prefix)}: token id {largest} is beyond the tokenizer's vocabulary "
            f"({vocab_size} ids); it was written with another tokenizer: preprocess it again with "
            f"this one, or pass the tokenizer it was made with"
        )
    return IndexedDataset(prefix, multimodal=False, mmap=True)
