"""Tokenize per-domain JSONL into Megatron indexed datasets (`.bin/.idx`) and a `domains.json`.

`preprocess_all` is what `tools/preprocess_domains.py` runs: `inputs` finds and reads the documents,
`encoding` tokenizes them (in worker processes when asked), `writing` writes one domain's pair, and
`preprocess` runs the whole corpus, skipping what is up to date and publishing the manifest last.
"""

from megatron_acodm.indexing.encoding import EncodedBatch
from megatron_acodm.indexing.inputs import DomainInput, discover_inputs
from megatron_acodm.indexing.preprocess import PROGRESS_NAME, PreprocessOptions, preprocess_all
from megatron_acodm.indexing.writing import DEFAULT_JSON_KEY, Job, write_domain

__all__ = [
    "DEFAULT_JSON_KEY",
    "DomainInput",
    "EncodedBatch",
    "Job",
    "PROGRESS_NAME",
    "PreprocessOptions",
    "discover_inputs",
    "preprocess_all",
    "write_domain",
]
