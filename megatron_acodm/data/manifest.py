"""`domains.json`, the manifest of a preprocessed multi-domain corpus, and Megatron's `--data-path`.

A manifest lists each domain's name and `.bin/.idx` prefix (relative to the manifest), its size,
the largest token id it holds and the identity of the tokenizer that wrote it. `--data-path`
accepts either one manifest or Megatron's `[w1] prefix1 [w2] prefix2 ...`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from megatron_acodm.data.errors import DataError

MANIFEST_NAME = "domains.json"
MANIFEST_VERSION = 1
PREFIX_SUFFIX = "_text_document"


@dataclass
class Domain:
    """One domain: a Megatron indexed dataset and what is known about it."""

    name: str
    prefix: str  # absolute once loaded; relative to the manifest's folder on disk
    documents: Optional[int] = None
    tokens: Optional[int] = None
    bytes: Optional[int] = None
    max_token_id: Optional[int] = None
    weight: Optional[float] = None  # initial mixture weight, when the user gave one
    inputs_sha256: Optional[str] = None  # what preprocess_domains read, to skip unchanged reruns


@dataclass
class Manifest:
    domains: list[Domain]
    tokenizer: Optional[dict] = None  # TokenizerIdentity.to_json() of the writer
    path: Optional[str] = field(default=None, compare=False)

    @property
    def names(self) -> list[str]:
        return [domain.name for domain in self.domains]

    def initial_weights(self) -> list[float]:
        """The user's weights where all domains have one, else proportional to tokens, else uniform."""
        if all(domain.weight is not None for domain in self.domains):
            raw = [domain.weight for domain in self.domains]
        elif all(domain.tokens for domain in self.domains):
            raw = [float(domain.tokens) for domain in self.domains]
        else:
            raw = [1.0] * len(self.domains)
        return validate_weights(raw, source=self.path or "--data-path")

    def save(self, path: str) -> None:
        """Write atomically, with prefixes relative to the manifest so the folder can move."""
        folder = os.path.dirname(os.path.abspath(path))
        entries = []
        for domain in self.domains:
            entry = {key: value for key, value in asdict(domain).items() if value is not None}
            entry["prefix"] = os.path.relpath(domain.prefix, folder)
            entries.append(entry)
        document = {"version": MANIFEST_VERSION, "tokenizer": self.tokenizer, "domains": entries}
        temporary = f"{path}.tmp.{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as stream:
            json.dump(document, stream, indent=2, sort_keys=False)
            stream.write("\n")
        os.replace(temporary, path)


def domain_name_from_prefix(prefix: str) -> str:
    name = os.path.basename(prefix.rstrip("/"))
    return name[: -len(PREFIX_SUFFIX)] if name.endswith(PREFIX_SUFFIX) else name


def validate_weights(weights: Sequence[float], source: str) -> list[float]:
    """Check mixture weights and normalise them to sum to one."""
    values = [float(weight) for weight in weights]
    for value in values:
        if math.isnan(value) or math.isinf(value):
            raise DataError(f"{source}: weight {value} is not a finite number; give weights >= 0")
        if value < 0:
            raise DataError(f"{source}: weight {value} is negative; give weights >= 0")
    total = sum(values)
    if total <= 0:
        raise DataError(f"{source}: all weights are zero; give at least one domain a positive weight")
    return [value / total for value in values]


def load_manifest(path: str) -> Manifest:
    if not os.path.isfile(path):
        raise DataError(
            f"{path}: no such manifest; create it with tools/preprocess_domains.py "
            f"--input DIR --output-dir {os.path.dirname(path) or '.'}"
        )
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error}); regenerate it with tools/preprocess_domains.py") from error
    if not isinstance(document, dict) or not isinstance(document.get("domains"), list):
        raise DataError(f"{path}: not a domains manifest (no 'domains' list); regenerate it with tools/preprocess_domains.py")
    if document.get("version") != MANIFEST_VERSION:
        raise DataError(f"{path}: manifest version {document.get('version')!r}, expected {MANIFEST_VERSION}")
    folder = os.path.dirname(os.path.abspath(path))
    known = set(Domain.__dataclass_fields__)
    domains = []
    for entry in document["domains"]:
        if not isinstance(entry, dict) or "name" not in entry or "prefix" not in entry:
            raise DataError(f"{path}: every domain needs a 'name' and a 'prefix', got {entry!r}")
        domain = Domain(**{key: value for key, value in entry.items() if key in known})
        domain.prefix = os.path.normpath(os.path.join(folder, domain.prefix))
        if domain.weight is not None:
            validate_weights([domain.weight] + [1.0], source=f"{path} (domain {domain.name})")
        domains.append(domain)
    manifest = Manifest(domains=domains, tokenizer=document.get("tokenizer"), path=path)
    check_unique_names(manifest.names, source=path)
    return manifest


def check_unique_names(names: Sequence[str], source: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"{source}: domain name {name!r} appears twice; give each domain its own name")
        seen.add(name)
    if not names:
        raise DataError(f"{source}: no domains given")


def parse_data_path(data_path: Sequence[str]) -> Manifest:
    """Megatron's `--data-path`: one `domains.json`, or `prefix ...`, or `w1 prefix1 w2 prefix2 ...`."""
    items = list(data_path)
    if len(items) == 1 and items[0].endswith(".json"):
        return load_manifest(items[0])
    if not items:
        raise DataError("--data-path is empty; give a domains.json or `weight prefix` pairs")
    weights: Optional[list[float]] = None
    prefixes = items
    if len(items) % 2 == 0 and _parses_as_float(items[0]):
        raw_weights, prefixes = items[0::2], items[1::2]
        weights = []
        for raw in raw_weights:
            if not _parses_as_float(raw):
                raise DataError(
                    f"--data-path: weight {raw!r} does not parse as a number; "
                    f"give `weight prefix` pairs, e.g. --data-path 0.3 books_text_document 0.7 code_text_document"
                )
            weights.append(float(raw))
        validate_weights(weights, source="--data-path")
    else:
        for prefix in prefixes:
            if _parses_as_float(prefix):
                raise DataError(
                    f"--data-path: {prefix!r} looks like a weight but the list has no matching prefix; "
                    f"give `weight prefix` pairs, e.g. --data-path 0.3 books_text_document 0.7 code_text_document"
                )
    domains = [
        Domain(
            name=domain_name_from_prefix(prefix),
            prefix=os.path.abspath(prefix),
            weight=None if weights is None else weights[index],
        )
        for index, prefix in enumerate(prefixes)
    ]
    manifest = Manifest(domains=domains)
    check_unique_names(manifest.names, source="--data-path")
    return manifest


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
