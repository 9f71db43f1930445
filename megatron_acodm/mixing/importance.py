"""`--mixer importance`: static weights from how much of the target set each domain explains,
importance sampling at the domain level in the spirit of DSIR (Xie et al. 2023, arXiv 2302.03169).

Computed once, at start, from the indexed files:

- each domain is a bag of hashed n-grams (token unigrams and bigrams, `BUCKETS` hash buckets, as
  DSIR's features), estimated from its tokens with add-one smoothing: `p_k(f)`;
- each steering example x of the target (never a held-out one) gets the posterior over domains
  under a uniform prior, `P(k | x) ~ prod_f p_k(f)^c_f(x)`;
- the weight of domain k is the posterior averaged over the examples (each target set counted
  alike): the share of the target set that domain k explains.

Long examples make each posterior nearly one-hot, so the blend goes to the few domains that look
most like the target: the narrow pockets the DGA paper warns of. A domain of more than
`SAMPLED_TOKENS` tokens is read in evenly spaced blocks of that many in all.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable, Iterator, Sequence

import numpy
from megatron.core.datasets.indexed_dataset import IndexedDataset, get_bin_path

from megatron_acodm.data.indexed import check_indexed_files
from megatron_acodm.data.manifest import parse_data_path
from megatron_acodm.data.targets import OPTION, parse_target_split, split_documents
from megatron_acodm.errors import UserError
from megatron_acodm.mixing.base import Mixer
from megatron_acodm.mixing.static import StaticMixer

BUCKET_BITS = 16
BUCKETS = 1 << BUCKET_BITS
SAMPLED_TOKENS = 1 << 24  # per domain: enough for a bigram model of BUCKETS features
_BLOCKS = 64
_CHUNK = 1 << 20  # tokens hashed at a time: bounds the memory the features take
_MULTIPLIER = numpy.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads (a, b) pairs over the buckets


def ngram_features(tokens: numpy.ndarray) -> numpy.ndarray:
    """The hashed unigram and bigram features of a token sequence, as bucket indices."""
    tokens = numpy.asarray(tokens, dtype=numpy.uint64)
    unigrams = tokens * numpy.uint64(2)  # even keys: unigrams, odd keys: bigrams, never equal
    bigrams = (tokens[:-1] * numpy.uint64(1 << 20) + tokens[1:]) * numpy.uint64(2) + numpy.uint64(1)
    keys = numpy.concatenate([unigrams, bigrams])
    with numpy.errstate(over="ignore"):  # the hash wraps around 2^64 on purpose
        return ((keys * _MULTIPLIER) >> numpy.uint64(64 - BUCKET_BITS)).astype(numpy.int64)


def log_probabilities(token_blocks: Iterable[numpy.ndarray]) -> numpy.ndarray:
    """`log p(f)` [BUCKETS] of a bag of hashed n-grams over the given token blocks, add-one smoothed."""
    counts = numpy.ones(BUCKETS)
    for block in token_blocks:
        counts += numpy.bincount(ngram_features(block), minlength=BUCKETS)
    return numpy.log(counts / counts.sum())


def domain_token_blocks(prefix: str) -> Iterator[numpy.ndarray]:
    """A domain's tokens, in chunks: all of them, or `_BLOCKS` evenly spaced blocks of `SAMPLED_TOKENS` in all."""
    dtype, _, _ = check_indexed_files(prefix)
    tokens = numpy.memmap(get_bin_path(prefix), dtype=dtype, mode="r")
    if tokens.size <= SAMPLED_TOKENS:
        spans = [(start, min(start + _CHUNK, tokens.size)) for start in range(0, tokens.size, _CHUNK)]
    else:
        block = SAMPLED_TOKENS // _BLOCKS
        spans = [(start, start + block) for start in numpy.linspace(0, tokens.size - block, _BLOCKS).astype(numpy.int64)]
    for start, end in spans:
        yield numpy.asarray(tokens[start:end])


def domain_posteriors(domain_log_probabilities: numpy.ndarray, examples: Sequence[numpy.ndarray]) -> numpy.ndarray:
    """`P(k | x)` [examples, K] under a uniform prior, for `[K, BUCKETS]` log-probabilities."""
    likelihoods = numpy.stack(
        [domain_log_probabilities[:, ngram_features(example)].sum(axis=1) for example in examples]
    )
    likelihoods -= likelihoods.max(axis=1, keepdims=True)
    posterior = numpy.exp(likelihoods)
    return posterior / posterior.sum(axis=1, keepdims=True)


def importance_weights(domain_prefixes: Sequence[str], target_example_sets: Sequence[Sequence[numpy.ndarray]]) -> numpy.ndarray:
    """Each domain's share of the target: the posterior averaged over each set's examples, then over the sets."""
    models = numpy.stack([log_probabilities(domain_token_blocks(prefix)) for prefix in domain_prefixes])
    return numpy.mean([domain_posteriors(models, examples).mean(axis=0) for examples in target_example_sets], axis=0)


def steering_examples(target_data_path: Sequence[str], target_split: str) -> list[list[numpy.ndarray]]:
    """The steering examples (documents) of every target set, as `training.target_pass` splits them."""
    steering_share, _ = parse_target_split(target_split)
    sets = []
    for target in parse_data_path(target_data_path, option=OPTION).domains:
        check_indexed_files(target.prefix)
        indexed = IndexedDataset(target.prefix, multimodal=False, mmap=True)
        steering, _ = split_documents(target.name, len(indexed), steering_share)
        # copies: the arrays must outlive the memory map, which closes with `indexed`
        sets.append([numpy.array(indexed[int(document)]) for document in steering])
    return sets


class ImportanceMixer(StaticMixer):
    """Keeps the importance weights it computed at start for the whole run."""

    @classmethod
    def from_args(cls, *, names: Sequence[str], args: argparse.Namespace, **_: Any) -> Mixer:
        if not getattr(args, "target_data_path", None):
            raise UserError("--mixer importance needs --target-data-path: the target set whose examples it weighs the domains by")
        prefixes = [domain.prefix for domain in parse_data_path(args.data_path).domains]
        weights = importance_weights(prefixes, steering_examples(args.target_data_path, args.target_split))
        return cls(names, weights, floor=args.mixing_floor)
