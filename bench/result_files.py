"""A quality benchmark's results on disk: the summary in `<stem>.json`, its per-step curves beside it
in `<stem>.curves.json.gz`.

The curves (every run's validation and training records, the mean curves, the mixtures over the
run) are most of the numbers but none of the page; kept apart, the summary stays short enough to
read and to diff. A benchmark names its curves by paths into its document (`runs/*/valid`: `*` is
every key); the side file holds them in the same nesting, and `load_results` puts them back.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
from typing import Any, Sequence

from common import write_json
from megatron_acodm.atomic_files import atomic_write

CURVES_SUFFIX = ".curves.json.gz"
POINTER = "curves_file"  # the summary's key naming its side file, relative to the summary's folder


def save_results(stem: str, document: dict[str, Any], curves: Sequence[str]) -> None:
    """`<stem>.json`, `document` without the parts that the paths `curves` name, and `<stem>.curves.json.gz`
    with those parts. The side file is the same bytes for the same curves: gzip without a timestamp
    or a file name, the keys in the document's own order (the domains in corpus order)."""
    summary = copy.deepcopy(document)
    taken: dict[str, Any] = {}
    for path in curves:
        _merge(taken, _take(summary, path.split("/")))
    side_file = os.path.basename(stem) + CURVES_SUFFIX
    write_json(f"{stem}.json", {POINTER: side_file, **summary})
    with atomic_write(stem + CURVES_SUFFIX, "wb") as stream, gzip.GzipFile(filename="", mode="wb", fileobj=stream, mtime=0) as packed:
        packed.write(json.dumps(taken, separators=(",", ":"), allow_nan=False).encode())


def load_results(path: str) -> dict[str, Any]:
    """The document a benchmark wrote to `path` (its `.json`), the curves of its side file put back."""
    with open(path, encoding="utf-8") as stream:
        document = json.load(stream)
    side_file = document.pop(POINTER, None)
    if side_file is not None:
        with gzip.open(os.path.join(os.path.dirname(path), side_file), "rt", encoding="utf-8") as stream:
            _merge(document, json.load(stream))
    return document


def _take(node: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Remove from `node` what the path `keys` names (`*`: every key; a missing key: nothing) and
    return it in the same nesting."""
    head, rest = keys[0], keys[1:]
    taken = {}
    for key in list(node) if head == "*" else [head] if head in node else []:
        if not rest:
            taken[key] = node.pop(key)
        elif isinstance(node[key], dict) and (inner := _take(node[key], rest)):
            taken[key] = inner
    return taken


def _merge(into: dict[str, Any], parts: dict[str, Any]) -> None:
    """Put `parts` into `into`, descending where both hold a dict."""
    for key, value in parts.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
