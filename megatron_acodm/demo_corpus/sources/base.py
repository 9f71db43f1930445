"""What a corpus source is, and the file-gathering helpers its extractors share."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from megatron_acodm.demo_corpus.documents import as_text
from megatron_acodm.demo_corpus.fetch import Artifact, Fetcher, read_deb_files

TRAINING_DOMAINS = ("books", "encyclopedic", "code", "math", "technical", "legal", "dialogue", "multilingual")
TARGETS = "targets"  # small task-specific sets, kept apart from the training domains


class SourceUnavailable(Exception):
    """The package was obtained but the expected material is not in it (or cannot be read here)."""


@dataclass(frozen=True)
class Extracted:
    documents: list[str]
    origins: list[dict]  # where the text came from, as recorded in the corpus manifest


@dataclass(frozen=True)
class Source:
    name: str
    domain: str  # one of TRAINING_DOMAINS, or TARGETS
    extract: Callable[[Fetcher], Extracted]


def parse_yaml(text: str, where: str) -> Any:
    """One YAML document as dicts, lists and strings. The base loader keeps every scalar a string
    (no YAML 1.1 `yes` -> True or `3.10` -> 3.1 in dialogue text); a syntax error is
    `SourceUnavailable` naming `where` (the file) and the line."""
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SourceUnavailable(f"cannot parse {where}: {problem}{position}") from error


def deb_texts(fetcher: Fetcher, package: str, wanted: Callable[[str], bool]) -> tuple[Artifact, dict[str, str]]:
    """A Debian package and the decoded text of its files that pass `wanted`; at least one must."""
    deb = fetcher.deb(package)
    files = {path: as_text(data) for path, data in read_deb_files(deb, wanted).items()}
    if not files:
        raise SourceUnavailable(f"{deb.path.name} holds none of the expected files")
    return deb, files


def local_texts(
    roots: list[str], wanted: Callable[[str], bool], skip_dirs: frozenset = frozenset(), relative: bool = False
) -> dict[str, str]:
    """Text of the regular files under `roots` whose name passes `wanted`; at least one must.

    Keys are absolute paths, or paths relative to their root with `relative` (for trees whose
    location depends on the machine). Walks in sorted order; skips files this user cannot read
    and symbolic links, which on Debian mostly point at files already reached another way.
    """
    files = {}
    for root in roots:
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = sorted(name for name in subfolders if name not in skip_dirs)
            for name in sorted(names):
                path = os.path.join(folder, name)
                readable = os.path.isfile(path) and not os.path.islink(path) and os.access(path, os.R_OK)
                if wanted(name) and readable:
                    files[os.path.relpath(path, root) if relative else path] = as_text(Path(path).read_bytes())
    if not files:
        raise SourceUnavailable(f"no matching files under {', '.join(roots) or 'any of the expected folders'}")
    return files


def local_origin(files: dict[str, str], **identity) -> dict:
    """Provenance of files read from this machine: what they are, how many, and a digest of them.

    `files` must be keyed by paths that do not depend on the machine (relative, or standard
    system locations), so that the digest identifies the content alone.
    """
    digest = hashlib.sha256()
    for path, text in files.items():
        digest.update(path.encode() + b"\0" + text.encode("utf-8") + b"\0")
    return {"registry": "system", **identity, "files": len(files), "sha256": digest.hexdigest()}
