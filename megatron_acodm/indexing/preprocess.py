"""Index a whole corpus: every domain not up to date, then the manifest of exactly these domains.

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

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

from megatron_acodm.data.indexed import check_indexed_files
from megatron_acodm.data.manifest import MANIFEST_NAME, Domain, Manifest, load_manifest
from megatron_acodm.data.tokenizers import Tokenizer, TokenizerIdentity, file_sha256
from megatron_acodm.errors import UserError
from megatron_acodm.indexing.encoding import encoder
from megatron_acodm.indexing.inputs import DomainInput
from megatron_acodm.indexing.writing import DEFAULT_JSON_KEY, Job, Log, log_stderr, plan_jobs, write_domain

PROGRESS_NAME = f".{MANIFEST_NAME}.progress"
# Part of every fingerprint: bump when the output for the same inputs changes.
_OUTPUT_FORMAT = 1


@dataclass(frozen=True)
class PreprocessOptions:
    output_dir: str
    tokenizer_type: str
    tokenizer_model: str
    json_keys: tuple[str, ...] = (DEFAULT_JSON_KEY,)
    append_eod: bool = False
    workers: int = 1
    force: bool = False


def inputs_fingerprint(domain: DomainInput, key: str, append_eod: bool, identity: TokenizerIdentity) -> str:
    """sha256 over the input files' names and contents and every option that changes the output."""
    options = {"format": _OUTPUT_FORMAT, "json_key": key, "append_eod": append_eod, "tokenizer": identity.to_json()}
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for path in domain.files:
        digest.update(json.dumps([os.path.basename(path), file_sha256(path)]).encode())
    return digest.hexdigest()


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
        with encoder(tokenizer, options.append_eod, options.workers) as encode:
            for job, fingerprint in pending:
                domain = write_domain(job, tokenizer, encode, fingerprint, log)
                if job.name in entries:  # a weight the user added to the manifest by hand survives
                    domain.weight = entries[job.name].weight
                entries[job.name] = domain
                Manifest(domains=list(entries.values()), tokenizer=tokenizer.identity.to_json()).save(progress_path)
    return _publish_manifest(jobs, entries, tokenizer.identity.to_json(), options.output_dir, log)
