"""`domains.json`, the manifest of a preprocessed multi-domain corpus, and Megatron's `--data-path`.

A manifest lists each domain's name and `.bin/.idx` prefix (relative to the manifest), its size,
the largest token id it holds and the identity of the tokenizer that wrote it. `--data-path`
accepts either one manifest or Megatron's `[w1] prefix1 [w2] prefix2 ...`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Optional, Sequence

from megatron_acodm.atomic_files import write_text_atomically
from megatron_acodm.errors import UserError

MANIFEST_NAME = "domains.json"
MANIFEST_VERSION = 1
PREFIX_SUFFIX = "_text_document"
# Raw documents, the input of tools/preprocess_domains.py: never a `--data-path` prefix.
INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
_INDEXED_SUFFIXES = (".bin", ".idx")
_PAIRS_EXAMPLE = "give `weight prefix` pairs, e.g. --data-path 0.3 books_text_document 0.7 code_text_document"


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
    # How the weights were found, for a blend written by a mixture search (tools/mergemix.py).
    provenance: Optional[dict] = None

    @property
    def names(self) -> list[str]:
        return [domain.name for domain in self.domains]

    def initial_weights(self) -> list[float]:
        """The user's weights where all domains have one, else proportional to tokens, else uniform;
        weights on only some domains are refused (the others' would be a guess)."""
        weighted = [domain.name for domain in self.domains if domain.weight is not None]
        if weighted and len(weighted) < len(self.domains):
            unweighted = [domain.name for domain in self.domains if domain.weight is None]
            raise UserError(
                f"{self.path or '--data-path'}: domains {weighted} have a 'weight' and {unweighted} have none; give "
                f"every domain a weight, or none (the mixture then follows the domains' tokens)"
            )
        if weighted:
            raw = [domain.weight for domain in self.domains]
        elif all(domain.tokens for domain in self.domains):
            raw = [float(domain.tokens) for domain in self.domains]
        else:
            raw = [1.0] * len(self.domains)
        return validate_weights(raw, source=self.path or "--data-path")

    def with_weights(self, weights: dict[str, float], provenance: Optional[dict] = None) -> "Manifest":
        """The same domains with these weights, by name: a blend over this corpus."""
        domains = [replace(domain, weight=weights[domain.name]) for domain in self.domains]
        return Manifest(domains=domains, tokenizer=self.tokenizer, provenance=provenance)

    def save(self, path: str) -> None:
        """Write atomically, with prefixes relative to the manifest so the folder can move."""
        folder = os.path.dirname(os.path.abspath(path))
        entries = []
        for domain in self.domains:
            entry = {key: value for key, value in asdict(domain).items() if value is not None}
            entry["prefix"] = os.path.relpath(domain.prefix, folder)
            entries.append(entry)
        document = {"version": MANIFEST_VERSION, "tokenizer": self.tokenizer, "domains": entries}
        if self.provenance is not None:
            document["provenance"] = self.provenance
        write_text_atomically(path, json.dumps(document, indent=2, sort_keys=False) + "\n")


def domain_name_from_prefix(prefix: str) -> str:
    name = os.path.basename(prefix.rstrip("/"))
    return name[: -len(PREFIX_SUFFIX)] if name.endswith(PREFIX_SUFFIX) else name


def validate_weights(weights: Sequence[float], source: str) -> list[float]:
    """Check mixture weights and normalise them to sum to one."""
    values = [float(weight) for weight in weights]
    for value in values:
        if math.isnan(value) or math.isinf(value):
            raise UserError(f"{source}: weight {value} is not a finite number; give weights >= 0")
        if value < 0:
            raise UserError(f"{source}: weight {value} is negative; give weights >= 0")
    largest = max(values, default=0.0)
    if largest <= 0:
        raise UserError(f"{source}: all weights are zero; give at least one domain a positive weight")
    # Scaling by the largest first keeps the sum finite even for weights near the float maximum.
    scaled = [value / largest for value in values]
    total = sum(scaled)
    return [value / total for value in scaled]


def load_manifest(path: str, option: str = "--data-path") -> Manifest:
    """The manifest at `path`; `option` names the argument that gave it in error messages."""
    if os.path.isdir(path):
        raise UserError(_folder_message(path, option))
    if not os.path.isfile(path):
        raise UserError(
            f"{option} {path}: no such file; create it with tools/preprocess_domains.py "
            f"--input DIR --output-dir {os.path.dirname(path) or '.'}"
        )
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error}); regenerate it with tools/preprocess_domains.py") from error
    if not isinstance(document, dict) or not isinstance(document.get("domains"), list):
        raise UserError(f"{path}: not a domains manifest (no 'domains' list); regenerate it with tools/preprocess_domains.py")
    unknown = sorted(set(document) - set(_TOP_LEVEL_FIELDS))
    if unknown:
        raise UserError(
            f"{path}: unknown field {unknown[0]!r}; a manifest holds {', '.join(map(repr, _TOP_LEVEL_FIELDS))}: "
            f"correct the field's name or remove it"
        )
    if document.get("version") != MANIFEST_VERSION:
        raise UserError(f"{path}: manifest version {document.get('version')!r}, expected {MANIFEST_VERSION}")
    tokenizer = document.get("tokenizer")
    if not isinstance(tokenizer, (dict, type(None))):
        raise UserError(
            f"{path}: field 'tokenizer' is {json.dumps(tokenizer)}, expected an object (the tokenizer's identity) "
            f"or null; correct it, or delete the manifest and rerun tools/preprocess_domains.py to regenerate it"
        )
    folder = os.path.dirname(os.path.abspath(path))
    domains = []
    for index, entry in enumerate(document["domains"]):
        domain = _domain_from_entry(entry, index, path)
        domain.prefix = os.path.normpath(os.path.join(folder, domain.prefix))
        if domain.weight is not None:
            validate_weights([domain.weight] + [1.0], source=f"{path} (domain {domain.name})")
        domains.append(domain)
    manifest = Manifest(domains=domains, tokenizer=tokenizer, path=path, provenance=document.get("provenance"))
    check_unique_names(manifest.names, source=path)
    return manifest


def _is_text(value) -> bool:
    return isinstance(value, str) and value != ""


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# What each Domain field must hold in a manifest. Every Domain field needs an entry: one without
# raises KeyError on the first manifest holding it, so the two cannot drift apart unnoticed.
_FIELD_CHECKS = {
    "name": (_is_text, "a non-empty string"),
    "prefix": (_is_text, "a non-empty string"),
    "documents": (_is_count, "a whole number >= 0"),
    "tokens": (_is_count, "a whole number >= 0"),
    "bytes": (_is_count, "a whole number >= 0"),
    "max_token_id": (_is_count, "a whole number >= 0"),
    "weight": (_is_number, "a number"),
    "inputs_sha256": (_is_text, "a non-empty string"),
}
_REQUIRED_FIELDS = ("name", "prefix")
_TOP_LEVEL_FIELDS = ("version", "tokenizer", "domains", "provenance")


def _domain_from_entry(entry, index: int, path: str) -> Domain:
    """One manifest entry, its fields type-checked so a hand edit fails here, by name, not deep in training."""
    if not isinstance(entry, dict) or any(key not in entry for key in _REQUIRED_FIELDS):
        raise UserError(f"{path}: every domain needs a 'name' and a 'prefix', got {entry!r}")
    label = repr(entry["name"]) if _is_text(entry["name"]) else f"#{index + 1}"
    unknown = [key for key in entry if key not in _FIELD_CHECKS]
    if unknown:
        raise UserError(
            f"{path}: domain {label}: unknown field {unknown[0]!r}; a domain holds {', '.join(map(repr, _FIELD_CHECKS))}: "
            f"correct the field's name or remove it"
        )
    for key, value in entry.items():
        is_valid, expected = _FIELD_CHECKS[key]
        if not (is_valid(value) or (value is None and key not in _REQUIRED_FIELDS)):
            raise UserError(
                f"{path}: domain {label}: field {key!r} is {json.dumps(value)}, expected {expected}; "
                f"correct the field, or delete the manifest and rerun tools/preprocess_domains.py to regenerate it"
            )
    return Domain(**entry)


def check_unique_names(names: Sequence[str], source: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise UserError(f"{source}: domain name {name!r} appears twice; give each domain its own name")
        seen.add(name)
    if not names:
        raise UserError(f"{source}: no domains given")


def parse_data_path(data_path: Sequence[str], option: str = "--data-path") -> Manifest:
    """Megatron's `--data-path`: one `domains.json`, or `prefix ...`, or `w1 prefix1 w2 prefix2 ...`;
    `option` names the argument in error messages (`--target-data-path` reads the same forms)."""
    items = list(data_path)
    if len(items) == 1 and items[0].endswith(".json"):
        return load_manifest(items[0], option)
    if not items:
        raise UserError(f"{option} is empty; give a domains.json or `weight prefix` pairs")
    manifests = [item for item in items if item.endswith(".json")]
    if manifests:
        raise UserError(
            f"{option} {' '.join(items)}: a manifest ({manifests[0]}) must be the only item; give one domains.json, "
            f"or `weight prefix` pairs without it"
        )
    weights, prefixes = _split_weights(items, option)
    for prefix in prefixes:
        _check_prefix(prefix, option)
    domains = [
        Domain(
            name=domain_name_from_prefix(prefix),
            prefix=os.path.abspath(prefix),
            weight=None if weights is None else weights[index],
        )
        for index, prefix in enumerate(prefixes)
    ]
    manifest = Manifest(domains=domains)
    check_unique_names(manifest.names, source=option)
    return manifest


def _split_weights(items: list[str], option: str) -> tuple[Optional[list[float]], list[str]]:
    """(weights, prefixes) of `w1 prefix1 w2 prefix2 ...`, or (None, items) for a plain prefix list."""
    # Prefixes are never numbers, so one number at a weight position makes it a pair list, and a
    # mistyped weight among the others is then reported as the weight it is meant to be.
    if len(items) % 2 == 1 or not any(_parses_as_float(item) for item in items[0::2]):
        return None, items
    weights = []
    for raw in items[0::2]:
        if not _parses_as_float(raw):
            raise UserError(f"{option}: weight {raw!r} does not parse as a number; {_PAIRS_EXAMPLE}")
        weights.append(float(raw))
    validate_weights(weights, source=option)
    return weights, items[1::2]


def _check_prefix(prefix: str, option: str) -> None:
    """Refuse what cannot be a `.bin/.idx` prefix: a stray weight, a folder, raw JSONL."""
    if _parses_as_float(prefix):
        raise UserError(f"{option}: {prefix!r} looks like a weight but the list has no matching prefix; {_PAIRS_EXAMPLE}")
    # megatron.core keeps its default index cache in a folder named like the prefix itself.
    if os.path.isdir(prefix) and not os.path.isfile(f"{prefix}.idx"):
        raise UserError(_folder_message(prefix, option))
    if prefix.endswith(_INDEXED_SUFFIXES):
        raise UserError(
            f"{option} {prefix}: give the prefix of the .bin/.idx pair, without the suffix: {option} {prefix[:-4]}"
        )
    if prefix.endswith(INPUT_SUFFIXES):
        raise UserError(
            f"{option} {prefix}: is raw JSONL, not a Megatron .bin/.idx dataset; index it first with "
            f"tools/preprocess_domains.py (e.g. --domain NAME={prefix} --output-dir OUT), "
            f"then pass {option} OUT/{MANIFEST_NAME}"
        )


def _folder_message(folder: str, option: str) -> str:
    manifest = os.path.join(folder, MANIFEST_NAME)
    if os.path.isfile(manifest):
        return (
            f"{option} {folder}: is a folder; pass the {MANIFEST_NAME} that tools/preprocess_domains.py "
            f"wrote there: {option} {manifest}"
        )
    return (
        f"{option} {folder}: is a folder, not a {MANIFEST_NAME} or a .bin/.idx prefix; pass the {MANIFEST_NAME} "
        f"that tools/preprocess_domains.py writes (run it on the domains' JSONL first)"
    )


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
