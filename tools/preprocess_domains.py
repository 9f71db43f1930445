#!/usr/bin/env python
"""Tokenize one JSONL corpus per domain into Megatron `.bin/.idx` datasets plus a `domains.json`.

    python tools/preprocess_domains.py --input DIR --output-dir OUT \\
        --tokenizer-type SentencePieceTokenizer --tokenizer-model M --workers N [--append-eod]

DIR holds `<domain>.jsonl` (or `.jsonl.gz`, `.jsonl.zst`) files and/or `<domain>/` folders of them;
other files there are ignored. Reruns skip domains that are already up to date. OUT/domains.json
is written only when every domain succeeded, and lists exactly this run's domains; a failed run
leaves the previous one as it was, and its rerun skips the domains it finished.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional, Sequence

# megatron.core warns at import that Transformer Engine and Apex are missing; tokenizing needs neither.
warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")

from megatron_acodm.errors import run_reporting_errors  # noqa: E402
from megatron_acodm.output_paths import check_output_folder  # noqa: E402
from megatron_acodm.indexing import (  # noqa: E402
    DEFAULT_JSON_KEY,
    PreprocessOptions,
    discover_inputs,
    preprocess_all,
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", metavar="DIR", help="folder with one <domain>.jsonl[.gz|.zst] or <domain>/ per domain")
    parser.add_argument(
        "--domain", metavar="NAME=PATH", action="append", default=[],
        help="a domain from a file or folder of JSONL files (repeatable; combines with --input)",
    )
    parser.add_argument("--output-dir", required=True, help="where the .bin/.idx files and domains.json go")
    parser.add_argument("--tokenizer-type", required=True, help="e.g. SentencePieceTokenizer, HuggingFaceTokenizer")
    parser.add_argument("--tokenizer-model", required=True, help="tokenizer model file (or HuggingFace folder)")
    parser.add_argument("--workers", type=_positive_int, default=1, help="tokenizer processes (default 1)")
    parser.add_argument("--append-eod", action="store_true", help="append the EOD token to every document")
    parser.add_argument(
        "--json-keys", nargs="+", default=[DEFAULT_JSON_KEY],
        help="JSON fields to tokenize, one dataset each: <domain>_<key>_document (default: text)",
    )
    parser.add_argument("--force", action="store_true", help="redo domains that are up to date; replace a manifest from another tokenizer")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    options = PreprocessOptions(
        output_dir=args.output_dir,
        tokenizer_type=args.tokenizer_type,
        tokenizer_model=args.tokenizer_model,
        json_keys=tuple(args.json_keys),
        append_eod=args.append_eod,
        workers=args.workers,
        force=args.force,
    )

    def preprocess() -> None:
        check_output_folder(args.output_dir, "--output-dir")
        preprocess_all(discover_inputs(args.input, args.domain), options)

    return run_reporting_errors(preprocess, "interrupted: run the same command again to go on (finished domains are kept)")


if __name__ == "__main__":
    sys.exit(main())
