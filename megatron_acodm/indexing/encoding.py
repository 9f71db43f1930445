"""Tokenizing documents, in this process or in a pool of worker processes, in input order."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy
from megatron.core.datasets.indexed_dataset import DType

from megatron_acodm.data.tokenizers import Tokenizer
from megatron_acodm.indexing.inputs import LineBatch, read_documents


@dataclass(frozen=True)
class EncodedBatch:
    tokens: numpy.ndarray  # every document's ids, concatenated, in the output dtype
    lengths: numpy.ndarray  # ids per document; 0 for a text that tokenizes to nothing
    text_bytes: int  # UTF-8 bytes of the texts


class _Encoder:
    def __init__(self, tokenizer: Tokenizer, append_eod: bool):
        self.tokenizer = tokenizer
        self.append_eod = append_eod
        self.dtype = DType.optimal_dtype(tokenizer.vocab_size)

    def __call__(self, batch: LineBatch) -> EncodedBatch:
        documents = []
        text_bytes = 0
        for text in read_documents(batch):
            text_bytes += len(text.encode("utf-8"))
            ids = self.tokenizer.tokenize(text)
            if ids and self.append_eod:  # as Megatron-LM: an empty document gets no EOD either
                ids = [*ids, self.tokenizer.eod]
            documents.append(ids)
        lengths = numpy.array([len(ids) for ids in documents], dtype=numpy.int64)
        tokens = numpy.fromiter(itertools.chain.from_iterable(documents), dtype=self.dtype, count=int(lengths.sum()))
        return EncodedBatch(tokens, lengths, text_bytes)


_worker_encoder: Optional[_Encoder] = None


def _init_worker(tokenizer_type: str, tokenizer_model: str, append_eod: bool) -> None:
    global _worker_encoder
    _worker_encoder = _Encoder(Tokenizer(tokenizer_type, tokenizer_model), append_eod)


def _encode_in_worker(batch: LineBatch) -> EncodedBatch:
    return _worker_encoder(batch)


Encode = Callable[[Iterable[LineBatch]], Iterator[EncodedBatch]]


@contextlib.contextmanager
def encoder(tokenizer: Tokenizer, append_eod: bool, workers: int) -> Iterator[Encode]:
    """An ordered map from line batches to encodings, over a process pool when `workers` > 1."""
    if workers <= 1:
        encode = _Encoder(tokenizer, append_eod)
        yield lambda batches: map(encode, batches)
        return
    initargs = (tokenizer.type, tokenizer.model, append_eod)
    with multiprocessing.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        yield lambda batches: pool.imap(_encode_in_worker, batches)
