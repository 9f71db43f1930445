"""Build the demo corpus: extract every source, cap and balance each domain, write JSONL, train the
tokenizer, and record what went in (with exact package versions) in `corpus_manifest.json`.

The output depends only on the packages and system files read: sources run in a fixed order,
documents are chosen by content hash, and nothing time- or path-dependent is written. Every file
is written atomically and the manifest last, so a manifest always describes complete files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import sentencepiece

from megatron_acodm.demo_corpus import tokenizer_training
from megatron_acodm.demo_corpus.documents import MAX_DOCUMENT_BYTES, MIN_DOCUMENT_BYTES, PACK_TARGET_BYTES, finish, utf8_size
from megatron_acodm.demo_corpus.fetch import DEFAULT_CACHE_DIR, Fetcher
from megatron_acodm.demo_corpus.output import jsonl_bytes, write_bytes, write_json
from megatron_acodm.demo_corpus.selection import hash_order, take_balanced
from megatron_acodm.demo_corpus.sources import ALL_SOURCES, TARGETS, TRAINING_DOMAINS, Source, SourceUnavailable

log = logging.getLogger(__name__)

TOOL_VERSION = "1.0"
MANIFEST_NAME = "corpus_manifest.json"
TOKENIZER_NAME = "tokenizer.model"
DEFAULT_MAX_MB_PER_DOMAIN = 4.0
DEFAULT_VOCAB_SIZE = 8000
VOCAB_SIZE_RANGE = (8000, 32000)
TOKENIZER_SAMPLE_MB_PER_DOMAIN = 2.0
MEGABYTE = 1 << 20
ALL_PARTS = (*TRAINING_DOMAINS, TARGETS)


@dataclass
class BuildOptions:
    output_dir: Path
    max_mb_per_domain: float = DEFAULT_MAX_MB_PER_DOMAIN
    vocab_size: int = DEFAULT_VOCAB_SIZE
    tokenizer_model: Optional[Path] = None  # use this model instead of training one
    cache_dir: Path = DEFAULT_CACHE_DIR
    parts: tuple[str, ...] = ALL_PARTS  # training domains and/or TARGETS, built in this order
    # Another corpus's recipe (the benchmarks' tuning corpus): its sources, and the tool it names.
    sources: Optional[Sequence[Source]] = None  # default: the demo's, ALL_SOURCES
    tool: str = "tools/build_demo_corpus.py"


class BuildError(Exception):
    """A problem with the build's arguments; the message says how to fix it."""


@dataclass(frozen=True)
class SourceResult:
    source: Source
    documents: list[str]
    origins: list[dict]


def build(options: BuildOptions, fetcher: Optional[Fetcher] = None) -> dict:
    """Build everything `options` asks for and return the manifest that was written."""
    fetcher = fetcher or Fetcher(options.cache_dir)
    output_dir = Path(options.output_dir)
    skipped: list[dict] = []
    manifest: dict = {
        "tool": options.tool,
        "tool_version": TOOL_VERSION,
        "max_mb_per_domain": options.max_mb_per_domain,
        "document_bytes": {"max": MAX_DOCUMENT_BYTES, "min": MIN_DOCUMENT_BYTES, "pack_target": PACK_TARGET_BYTES},
        "domains": {},
    }
    chosen_by_domain: dict[str, list[str]] = {}
    cap_bytes = int(options.max_mb_per_domain * MEGABYTE)
    sources = ALL_SOURCES if options.sources is None else options.sources
    for domain in (part for part in options.parts if part != TARGETS):
        results = extract_all(domain, fetcher, skipped, sources)
        if not results:
            log.warning("%s: every source was skipped; no jsonl/%s.jsonl written", domain, domain)
            continue
        chosen_by_domain[domain], manifest["domains"][domain] = build_domain(domain, results, cap_bytes, output_dir)
    if TARGETS in options.parts:
        manifest["targets"] = {
            result.source.name: write_documents(output_dir, f"targets/{result.source.name}.jsonl", result.documents)
            | {"origins": result.origins}
            for result in extract_all(TARGETS, fetcher, skipped, sources)
        }
    manifest["skipped"] = skipped
    if options.tokenizer_model is not None:
        manifest["tokenizer"] = copy_tokenizer(Path(options.tokenizer_model), output_dir)
    elif chosen_by_domain:
        manifest["tokenizer"] = train_tokenizer(chosen_by_domain, options.vocab_size, output_dir)
    write_json(output_dir / MANIFEST_NAME, manifest)
    return manifest


def extract_all(part: str, fetcher: Fetcher, skipped: list[dict], sources: Sequence[Source]) -> list[SourceResult]:
    """Run the part's extractors in order; a source whose material is missing is skipped and recorded."""
    results = []
    for source in (source for source in sources if source.domain == part):
        started = time.monotonic()
        try:
            extracted = source.extract(fetcher)
        except SourceUnavailable as error:
            log.warning("%-12s %-19s skipped: %s", part, source.name, error)
            skipped.append({"domain": part, "source": source.name, "reason": str(error)})
            continue
        # Target items (one quiz question) may be tiny; training documents that small are noise.
        documents = finish(extracted.documents, min_bytes=1 if part == TARGETS else MIN_DOCUMENT_BYTES)
        log.info(
            "%-12s %-19s %7.2f MiB %7d docs  %5.1f s",
            part,
            source.name,
            sum(map(utf8_size, documents)) / MEGABYTE,
            len(documents),
            time.monotonic() - started,
        )
        results.append(SourceResult(source, documents, extracted.origins))
    return results


def build_domain(domain: str, results: list[SourceResult], cap_bytes: int, output_dir: Path) -> tuple[list[str], dict]:
    """Choose the domain's documents (balanced across sources, under the cap) and write its JSONL."""
    pools = [hash_order(result.documents, f"{domain}/{result.source.name}") for result in results]
    taken = take_balanced(pools, cap_bytes)
    chosen = [document for _, document in taken]
    sources = []
    for index, result in enumerate(results):
        mine = [document for pool, document in taken if pool == index]
        sources.append(
            {
                "name": result.source.name,
                "documents": len(mine),
                "bytes": sum(map(utf8_size, mine)),
                "available_documents": len(result.documents),
                "available_bytes": sum(map(utf8_size, result.documents)),
                "origins": result.origins,
            }
        )
    entry = write_documents(output_dir, f"jsonl/{domain}.jsonl", chosen)
    log.info(
        "%-12s %-19s %7.2f MiB %7d docs  -> %s",
        domain,
        "(chosen)",
        entry["bytes"] / MEGABYTE,
        len(chosen),
        entry["file"],
    )
    return chosen, entry | {"cap_bytes": cap_bytes, "sources": sources}


def write_documents(output_dir: Path, relative_path: str, documents: list[str]) -> dict:
    sha256 = write_bytes(output_dir / relative_path, jsonl_bytes(documents))
    return {
        "file": relative_path,
        "sha256": sha256,
        "documents": len(documents),
        "bytes": sum(map(utf8_size, documents)),
    }


def train_tokenizer(chosen_by_domain: dict[str, list[str]], vocab_size: int, output_dir: Path) -> dict:
    sample_cap = int(TOKENIZER_SAMPLE_MB_PER_DOMAIN * MEGABYTE)
    sample = tokenizer_training.tokenizer_sample(chosen_by_domain, sample_cap)
    sample_bytes = sum(map(utf8_size, sample))
    log.info("training a %d-piece BPE tokenizer on %.1f MiB", vocab_size, sample_bytes / MEGABYTE)
    started = time.monotonic()
    try:
        model = tokenizer_training.train(sample, vocab_size)
    except RuntimeError as error:  # e.g. a vocabulary larger than a small sample supports
        raise BuildError(f"tokenizer training failed ({error}); lower --vocab-size or build more domains") from error
    sha256 = tokenizer_training.write_model(model, output_dir / TOKENIZER_NAME)
    log.info("tokenizer trained in %.1f s", time.monotonic() - started)
    return {
        "file": TOKENIZER_NAME,
        "sha256": sha256,
        "type": "sentencepiece-bpe",
        "vocab_size": vocab_size,
        "special_ids": tokenizer_training.SPECIAL_IDS,
        "trained_on": {
            "domains": list(chosen_by_domain),
            "documents": len(sample),
            "bytes": sample_bytes,
            "bytes_per_domain_cap": sample_cap,
        },
    }


def copy_tokenizer(model_path: Path, output_dir: Path) -> dict:
    """Use a given SentencePiece model (and its .vocab, when next to it) instead of training one."""
    try:
        model = model_path.read_bytes()
        vocab_size = sentencepiece.SentencePieceProcessor(model_proto=model).get_piece_size()
    except (OSError, RuntimeError) as error:
        raise BuildError(f"--tokenizer-model {model_path}: not a readable SentencePiece model ({error})") from error
    destination = output_dir / TOKENIZER_NAME
    sha256 = write_bytes(destination, model)
    if model_path.with_suffix(".vocab").is_file():
        write_bytes(destination.with_suffix(".vocab"), model_path.with_suffix(".vocab").read_bytes())
    log.info("using the given tokenizer %s (%d pieces)", model_path.name, vocab_size)
    return {"file": TOKENIZER_NAME, "sha256": sha256, "vocab_size": vocab_size, "provided": model_path.name}
