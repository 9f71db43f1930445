"""Writing one domain's `.bin/.idx` pair: under temporary names, renamed into place when whole.

The output matches Megatron-LM's tools/preprocess_data.py: one sequence per document, EOD appended
with `append_eod`, token dtype chosen from the vocabulary size, files `<domain>_<key>_document`.
Documents that tokenize to nothing are left out (Megatron-LM would write them as empty documents).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder, get_bin_path, get_idx_path
from tqdm import tqdm

from megatron_acodm.data.manifest import Domain, check_unique_names
from megatron_acodm.data.tokenizers import Tokenizer
from megatron_acodm.errors import UserError
from megatron_acodm.indexing.encoding import Encode, EncodedBatch
from megatron_acodm.indexing.inputs import DomainInput, read_line_batches

DEFAULT_JSON_KEY = "text"

Log = Callable[[str], None]


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Job:
    """One output dataset: one domain's input read under one JSON key."""

    domain: DomainInput
    key: str
    name: str
    prefix: str  # absolute


def plan_jobs(domains: Sequence[DomainInput], json_keys: Sequence[str], output_dir: str) -> list[Job]:
    jobs = [
        Job(
            domain=domain,
            key=key,
            name=domain.name if key == DEFAULT_JSON_KEY else f"{domain.name}_{key}",
            prefix=os.path.join(os.path.abspath(output_dir), f"{domain.name}_{key}_document"),
        )
        for domain in domains
        for key in json_keys
    ]
    check_unique_names([job.name for job in jobs], source="--input/--domain with --json-keys")
    check_unique_names([os.path.basename(job.prefix) for job in jobs], source="--input/--domain with --json-keys")
    return jobs


def _temporary_prefix(prefix: str) -> str:
    return os.path.join(os.path.dirname(prefix), f".{os.path.basename(prefix)}.tmp")


def _publish(temporary: str, prefix: str) -> None:
    """Rename the finished pair into place, index last."""
    # Removing the old index first means no moment shows an old index beside a new data file.
    if os.path.exists(get_idx_path(prefix)):
        os.remove(get_idx_path(prefix))
    os.replace(get_bin_path(temporary), get_bin_path(prefix))
    os.replace(get_idx_path(temporary), get_idx_path(prefix))


def _add_documents(builder: IndexedDatasetBuilder, batch: EncodedBatch) -> None:
    """One sequence per document, as Megatron-LM writes them; empty texts are left out."""
    end = numpy.cumsum(batch.lengths)
    for length, stop in zip(batch.lengths.tolist(), end.tolist()):
        if length:
            builder.add_document(batch.tokens[stop - length : stop], [length])


def write_domain(job: Job, tokenizer: Tokenizer, encode: Encode, inputs_sha256: str, log: Log = log_stderr) -> Domain:
    """Tokenize one job's documents into `job.prefix`.{bin,idx}; return its manifest entry."""
    temporary = _temporary_prefix(job.prefix)
    documents = tokens = text_bytes = 0
    largest = 0
    start = time.perf_counter()
    builder = IndexedDatasetBuilder(get_bin_path(temporary), dtype=DType.optimal_dtype(tokenizer.vocab_size))
    try:
        with tqdm(desc=job.name, unit="doc", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
            for batch in encode(read_line_batches(job.domain.files, job.key)):
                _add_documents(builder, batch)
                text_bytes += batch.text_bytes
                documents += int(numpy.count_nonzero(batch.lengths))
                tokens += batch.tokens.size
                largest = max(largest, int(batch.tokens.max(initial=0)))
                bar.update(batch.lengths.size)
                bar.set_postfix_str(f"{tokens / (time.perf_counter() - start):,.0f} tok/s", refresh=False)
        if documents == 0:
            raise UserError(
                f"{job.domain.source}: domain {job.name!r} has no text under key {job.key!r} "
                f"(no documents, or only empty ones); drop it or add text"
            )
        builder.finalize(get_idx_path(temporary))
        _publish(temporary, job.prefix)
    finally:
        builder.data_file.close()  # finalize closes it too; this covers the failure paths
        for path in (get_bin_path(temporary), get_idx_path(temporary)):
            if os.path.exists(path):
                os.remove(path)
    seconds = time.perf_counter() - start
    log(
        f"{job.name}: {documents:,} docs, {tokens:,} tokens, {text_bytes / 1e6:,.1f} MB, "
        f"{seconds:.1f} s, {tokens / max(seconds, 1e-9):,.0f} tokens/s"
    )
    return Domain(
        name=job.name,
        prefix=job.prefix,
        documents=documents,
        tokens=tokens,
        bytes=text_bytes,
        max_token_id=largest,
        inputs_sha256=inputs_sha256,
    )
