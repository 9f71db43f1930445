"""The quality benchmarks' corpora: the demo corpus, built and indexed when it is missing, and the
noisy corpus, the demo's domains plus a domain of uniformly random token ids (`--corpus noisy` of
`mixing_quality.py` and `mergemix_quality.py`, whose docstring says what it asks); the tuning
corpus (`tuning_corpus.py`) adds the same noise to its own domains."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Iterator, Optional

import numpy
from megatron.core.datasets.indexed_dataset import DType

from common import REPO, run_process, say
from megatron_acodm.data.indexed import check_indexed_files
from megatron_acodm.data.manifest import MANIFEST_NAME, PREFIX_SUFFIX, Domain, Manifest, load_manifest
from megatron_acodm.data.tokenizers import Tokenizer
from megatron_acodm.demo_corpus.tokenizer_training import SPECIAL_IDS
from megatron_acodm.errors import UserError
from megatron_acodm.indexing import DomainInput, EncodedBatch, Job, write_domain

DEMO_DIR = "data/demo"
DEMO_DATA = f"{DEMO_DIR}/indexed/domains.json"
DEMO_TOKENIZER = f"{DEMO_DIR}/tokenizer.model"

# The noisy corpus: the demo's domains plus NOISE, uniformly random ordinary ids, NOISE_SHARE of all tokens.
NOISE = "noise"
NOISE_SHARE = 0.4
NOISE_SEED = 20240917
NOISE_BATCH = 256  # documents generated at a time: bounds the memory the generation holds
NOISE_FORMAT = 1  # part of the noise's fingerprint: bump when the same recipe writes other ids


def run_tool(arguments: list[str]) -> None:
    """A script of the repository (`tools/...`) run to its end, its command line shown first."""
    say("$ " + " ".join(arguments))
    run_process([sys.executable, *arguments], check=True)


def ensure_corpus(args: argparse.Namespace) -> None:
    """The runs' corpus in `args.data_path`, its real domains (every mean is over them) in
    `args.evaluated`, and in `args.mixing_objective` the `--mixing-objective` given to the mixers
    that read one (None: none)."""
    if args.data_path is None:
        ensure_demo_corpus(args)
    elif args.tokenizer_model is None:
        sys.exit("error: --data-path needs --tokenizer-model (the tokenizer the corpus was made with)")
    args.evaluated = load_manifest(args.data_path).names
    args.mixing_objective = None
    if args.corpus == "noisy":
        args.data_path = add_noise(args.data_path, os.path.join(args.work_dir, "noisy-corpus"), args.tokenizer_type, args.tokenizer_model)
        args.mixing_objective = args.evaluated  # the gradient mixers lower the real domains' loss


def ensure_demo_corpus(args: argparse.Namespace) -> None:
    """The demo corpus, built and indexed when it is missing."""
    args.data_path = os.path.join(REPO, DEMO_DATA)
    args.tokenizer_model = args.tokenizer_model or os.path.join(REPO, DEMO_TOKENIZER)
    if os.path.exists(args.data_path):
        return
    print(f"{DEMO_DATA} is missing: building the demo corpus", file=sys.stderr, flush=True)
    if not os.path.exists(os.path.join(REPO, DEMO_TOKENIZER)) or not os.path.isdir(os.path.join(REPO, DEMO_DIR, "jsonl")):
        run_tool(["tools/build_demo_corpus.py", "--output-dir", DEMO_DIR])
    run_tool(["tools/preprocess_domains.py", "--input", f"{DEMO_DIR}/jsonl", "--output-dir", f"{DEMO_DIR}/indexed",
               "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", DEMO_TOKENIZER,
               "--workers", str(os.cpu_count() or 1), "--append-eod"])



# ------------------------------------------------------------------------------------------ the noisy corpus


def noise_documents(documents: int, length: int, vocab_size: int, eod: int) -> Iterator[EncodedBatch]:
    """`documents` documents of `length` ids each: `length - 1` drawn uniformly from the ordinary ids
    (not the tokenizer's special ones), then EOD, as the demo's documents end; the same every time."""
    ordinary = numpy.setdiff1d(numpy.arange(vocab_size), list(SPECIAL_IDS.values()))
    generator = numpy.random.default_rng(NOISE_SEED)
    dtype = DType.optimal_dtype(vocab_size)
    for start in range(0, documents, NOISE_BATCH):
        count = min(NOISE_BATCH, documents - start)
        ids = ordinary[generator.integers(0, ordinary.size, size=(count, length - 1))]
        tokens = numpy.concatenate([ids, numpy.full((count, 1), eod)], axis=1).astype(dtype).ravel()
        yield EncodedBatch(tokens, numpy.full(count, length, dtype=numpy.int64), text_bytes=0)


def _cached_noise(manifest_path: str, fingerprint: str) -> Optional[Domain]:
    """The noise domain `manifest_path` lists, when this recipe wrote it and its files are whole."""
    try:
        noise = next((domain for domain in load_manifest(manifest_path).domains if domain.name == NOISE), None)
        if noise is None or noise.inputs_sha256 != fingerprint:
            return None
        check_indexed_files(noise.prefix)
    except UserError:  # no manifest yet, a broken one, or broken files: written again
        return None
    return noise


def add_noise(base_manifest: str, folder: str, tokenizer_type: str, tokenizer_model: str) -> str:
    """A corpus's domains plus the noise domain, as a manifest in `folder`; returns its path.

    The noise is written when its recipe (size, seed, tokenizer) changes; the manifest, which only
    points at the corpus's files, every time, so it follows the corpus wherever it is."""
    base = load_manifest(base_manifest)
    if NOISE in base.names:
        sys.exit(f"error: {base_manifest} already has a domain named {NOISE!r}; rename it to add the noise domain")
    folder = os.path.abspath(folder)
    manifest_path = os.path.join(folder, MANIFEST_NAME)
    tokenizer = Tokenizer(tokenizer_type, tokenizer_model)
    base_tokens = sum(domain.tokens for domain in base.domains)
    length = round(base_tokens / sum(domain.documents for domain in base.domains))  # the corpus's mean document
    documents = round(base_tokens * NOISE_SHARE / (1 - NOISE_SHARE) / length)
    vocab_size = base.tokenizer["vocab_size"]
    recipe = {"format": NOISE_FORMAT, "seed": NOISE_SEED, "documents": documents, "length": length,
              "special_ids": sorted(SPECIAL_IDS.values()), "eod": tokenizer.eod, "tokenizer": base.tokenizer}
    fingerprint = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    noise = _cached_noise(manifest_path, fingerprint)
    if noise is None:
        say(f"writing the noise domain: {documents:,} documents of {length} random ids in {folder}")
        job = Job(DomainInput(NOISE, "generated noise", ()), "text", NOISE, os.path.join(folder, f"{NOISE}{PREFIX_SUFFIX}"))
        os.makedirs(folder, exist_ok=True)
        # No input files to read: the encoder ignores its (empty) line batches and yields the noise.
        noise = write_domain(job, tokenizer, lambda _: noise_documents(documents, length, vocab_size, tokenizer.eod),
                             fingerprint, log=say)
    Manifest(domains=[*base.domains, noise], tokenizer=base.tokenizer).save(manifest_path)
    return manifest_path
