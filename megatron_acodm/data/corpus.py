"""A corpus opened for training: every domain's indexed dataset, checked against the tokenizer.

Opening needs no process group, so a run checks its data before any rank joins one: the manifest's
tokenizer against `--tokenizer-model`, each `.bin/.idx` pair's header and sizes, and the largest
token id against the vocabulary (the blender and the target sets then build their datasets on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_acodm.data.indexed import open_indexed_dataset
from megatron_acodm.data.manifest import Manifest
from megatron_acodm.data.tokenizers import Tokenizer
from megatron_acodm.errors import UserError


@dataclass(frozen=True)
class Corpus:
    manifest: Manifest
    tokenizer: Tokenizer
    indexed: tuple[IndexedDataset, ...]  # one per domain, in the manifest's order

    @property
    def names(self) -> list[str]:
        return self.manifest.names

    @property
    def tokens(self) -> numpy.ndarray:
        """Each domain's tokens in its whole indexed dataset (what a temperature blend and the
        corpus-weighted validation mean weigh)."""
        return numpy.array([int(indexed.sequence_lengths.sum(dtype=numpy.int64)) for indexed in self.indexed])

    @property
    def initial_weights(self) -> numpy.ndarray:
        """The `--data-path` weights (or tokens-proportional for a manifest without weights)."""
        return numpy.array(self.manifest.initial_weights())


def open_corpus(manifest: Manifest, tokenizer: Tokenizer) -> Corpus:
    """Check `manifest`'s domains against `tokenizer` and open them."""
    check_tokenizer_matches(manifest, tokenizer)
    indexed = tuple(open_indexed_dataset(domain.prefix, tokenizer.vocab_size, domain.max_token_id) for domain in manifest.domains)
    return Corpus(manifest, tokenizer, indexed)


def check_tokenizer_matches(manifest: Manifest, tokenizer: Tokenizer) -> None:
    recorded = manifest.tokenizer
    if recorded and recorded.get("model_sha256") != tokenizer.identity.model_sha256:
        raise UserError(
            f"{manifest.path}: its domains were tokenized with a {recorded.get('type')} model of "
            f"sha256 {str(recorded.get('model_sha256'))[:12]}... ({recorded.get('vocab_size')} ids), but "
            f"--tokenizer-model {tokenizer.model} is {tokenizer.identity.model_sha256[:12]}...; pass the "
            f"tokenizer the corpus was made with, or preprocess it again with this one"
        )
