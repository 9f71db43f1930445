"""Tokenize per-domain JSONL into Megatron indexed datasets (`.bin/.idx`) and a `domains.json`.

The output matches Megatron-LM's tools/preprocess_data.py: one sequence per document, EOD appended
with `append_eod`, token dtype chosen from the vocabulary size, files `<domain>_<key>_document`.
Documents that tokenize to nothing are left out (Megatron-LM would write them as empty documents).

Each domain is written under temporary names and renamed when complete, then recorded in a hidden
progress file in the output folder (`.domains.json.progress`, a manifest of what is on disk), so an
interrupted or failed run loses at most the domain in flight: a rerun reads that record back (it is
newer than `domains.json`) and skips domains whose files are intact and whose inputs fingerprint is
unchanged. `domains.json` is published, atomically, only when every domain succeeded; it lists
exactly that run's domains, in input order, and the progress file is then removed. A run that fails
leaves the previous `domains.json` as it was (or absent).

With several JSON keys each key becomes its own dataset, as in Megatron-LM: the input is read
once per key, and the domain is named `<domain>` for the key `text`, `<domain>_<key>` otherwise.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import IO, Callable, Iterable, Iterator, Optional, Sequence

import numpy
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder, get_bin_path, get_idx_path
from tqdm import tqdm

from megatron_acodm.data.indexed import check_indexed_files
from megatron_acodm.errors import UserError
from megatron_acodm.data.manifest import (
    INPUT_SUFFIXES,
    MANIFEST_NAME,
    Domain,
    Manifest,
    check_unique_names,
    load_manifest,
)
from megatron_acodm.data.tokenizers import Tokenizer, TokenizerIdentity, file_sha256

DEFAULT_JSON_KEY = "text"
PROGRESS_NAME = f".{MANIFEST_NAME}.progress"
# Part of every fingerprint: bump when this module's output for the same inputs changes.
_OUTPUT_FORMAT = 1
_BATCH_LINES = 128  # lines per task sent to a worker: amortises inter-process overhead
# Domain names become file names and manifest keys: no separators, no hidden files.
_DOMAIN_NAME = re.compile(r"^\w[\w.+-]*$")

Log = Callable[[str], None]


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DomainInput:
    """One domain's input files, read in this order."""

    name: str
    source: str  # the file or folder the user named, for messages
    files: tuple[str, ...]


@dataclass(frozen=True)
class PreprocessOptions:
    output_dir: str
    tokenizer_type: str
    tokenizer_model: str
    json_keys: tuple[str, ...] = (DEFAULT_JSON_KEY,)
    append_eod: bool = False
    workers: int = 1
    force: bool = False


@dataclass(frozen=True)
class Job:
    """One output dataset: one domain's input read under one JSON key."""

    domain: DomainInput
    key: str
    name: str
    prefix: str  # absolute


# ---------------------------------------------------------------- discovering inputs


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


# ---------------------------------------------------------------- reading documents


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


def read_line_batches(files: Iterable[str], key: str, batch_lines: int = _BATCH_LINES) -> Iterator[LineBatch]:
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


def inputs_fingerprint(domain: DomainInput, key: str, append_eod: bool, identity: TokenizerIdentity) -> str:
    """sha256 over the input files' names and contents and every option that changes the output."""
    options = {"format": _OUTPUT_FORMAT, "json_key": key, "append_eod": append_eod, "tokenizer": identity.to_json()}
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for path in domain.files:
        digest.update(json.dumps([os.path.basename(path), file_sha256(path)]).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- tokenizing


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
def _encoder(options: PreprocessOptions, tokenizer: Tokenizer) -> Iterator[Encode]:
    """An ordered map from line batches to encodings, over a process pool when `workers` > 1."""
    if options.workers <= 1:
        encoder = _Encoder(tokenizer, options.append_eod)
        yield lambda batches: map(encoder, batches)
        return
    initargs = (options.tokenizer_type, options.tokenizer_model, options.append_eod)
    with multiprocessing.Pool(options.workers, initializer=_init_worker, initargs=initargs) as pool:
        yield lambda batches: pool.imap(_encode_in_worker, batches)


# ---------------------------------------------------------------- writing


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


# ---------------------------------------------------------------- the whole run


def _existing_entries(path: str, identity: TokenizerIdentity, force: bool, log: Log) -> dict[str, Domain]:
    """The domains a manifest or progress record lists, by name; another tokenizer's only with --force."""
    if not os.path.exists(path):
        return {}
    manifest = load_manifest(path)
    if manifest.tokenizer != identity.to_json():
        if not force:
            raise UserError(
                f"{path}: written with another tokenizer ({manifest.tokenizer}), not {identity.to_json()}; "
                f"its domains' token ids would mix two vocabularies. Pass --force to rebuild this folder with "
                f"this tokenizer (its other domains are dropped from the manifest) or choose another --output-dir"
            )
        log(f"{path}: written with another tokenizer; --force: starting a new manifest")
        return {}
    return {domain.name: domain for domain in manifest.domains}


def _up_to_date(job: Job, recorded: Optional[Domain], fingerprint: str) -> bool:
    if recorded is None or recorded.inputs_sha256 != fingerprint or recorded.prefix != job.prefix:
        return False
    try:
        check_indexed_files(job.prefix)
    except UserError:
        return False
    return True


def _pending_jobs(
    jobs: Sequence[Job], entries: dict[str, Domain], options: PreprocessOptions, identity: TokenizerIdentity, log: Log
) -> list[tuple[Job, str]]:
    """The jobs to (re)write, with their inputs fingerprints."""
    pending = []
    for job in jobs:
        fingerprint = inputs_fingerprint(job.domain, job.key, options.append_eod, identity)
        if not options.force and _up_to_date(job, entries.get(job.name), fingerprint):
            log(f"skip {job.name}: up to date")
        else:
            pending.append((job, fingerprint))
    return pending


def _publish_manifest(
    jobs: Sequence[Job], entries: dict[str, Domain], tokenizer: dict, output_dir: str, log: Log
) -> Manifest:
    """Save the manifest of exactly this run's domains, in job order, and retire the progress record."""
    path = os.path.join(output_dir, MANIFEST_NAME)
    names = {job.name for job in jobs}
    dropped = [name for name in entries if name not in names]
    if dropped:
        log(
            f"{path}: dropped {', '.join(map(repr, dropped))} from the manifest: not among this run's inputs "
            f"(their .bin/.idx files stay in {output_dir}; delete them if no longer needed)"
        )
    manifest = Manifest(domains=[entries[job.name] for job in jobs], tokenizer=tokenizer, path=path)
    manifest.save(path)
    progress_path = os.path.join(output_dir, PROGRESS_NAME)
    if os.path.exists(progress_path):
        os.remove(progress_path)
    return manifest


def preprocess_all(domains: Sequence[DomainInput], options: PreprocessOptions, log: Log = log_stderr) -> Manifest:
    """Write every domain that is not up to date, then publish the manifest of exactly these domains."""
    tokenizer = Tokenizer(options.tokenizer_type, options.tokenizer_model)
    jobs = plan_jobs(domains, options.json_keys, options.output_dir)
    os.makedirs(options.output_dir, exist_ok=True)
    progress_path = os.path.join(options.output_dir, PROGRESS_NAME)
    # A failed run's progress record is newer than the manifest: it names the files that run replaced.
    recorded_path = progress_path if os.path.exists(progress_path) else os.path.join(options.output_dir, MANIFEST_NAME)
    entries = _existing_entries(recorded_path, tokenizer.identity, options.force, log)
    pending = _pending_jobs(jobs, entries, options, tokenizer.identity, log)
    if pending:
        with _encoder(options, tokenizer) as encode:
            for job, fingerprint in pending:
                domain = write_domain(job, tokenizer, encode, fingerprint, log)
                if job.name in entries:  # a weight the user added to the manifest by hand survives
                    domain.weight = entries[job.name].weight
                entries[job.name] = domain
                Manifest(domains=list(entries.values()), tokenizer=tokenizer.identity.to_json()).save(progress_path)
    return _publish_manifest(jobs, entries, tokenizer.identity.to_json(), options.output_dir, log)
