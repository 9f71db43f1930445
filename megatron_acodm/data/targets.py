"""Target sets (`--target-data-path`): a few examples of the task a run is specialised to.

Each target set is an indexed dataset written by `tools/preprocess_domains.py` (a `domains.json`
whose domains are target sets, or Megatron's prefix list; weights are ignored). Its documents are
split once into steering examples, whose gradient the task-aligned mixers read, and held-out
examples, on which the target loss is evaluated and reported. The split is drawn from a fixed seed
and the set's name, never from `--seed`, so every run and every mixer holds out the same examples;
the two parts never share a document. Each part is a megatron.core `GPTDataset` over its own
documents, with the training data's sequence length and masks.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy

from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.utils import Split

from megatron_acodm.data.corpus import Corpus, open_corpus
from megatron_acodm.data.manifest import parse_data_path
from megatron_acodm.data.tokenizers import Tokenizer
from megatron_acodm.errors import UserError

OPTION = "--target-data-path"
SPLIT_SEED = 20241003  # fixed: which examples steer and which are held out must not change with --seed
_WALK_STREAM = 0x7A46  # the steering examples' epoch order, apart from the blender's streams


def parse_target_split(text: str) -> tuple[float, float]:
    """`--target-split S,H`: the steering and held-out shares of each target set's documents."""
    try:
        parts = [float(part) for part in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 2 or min(parts) <= 0 or not all(numpy.isfinite(parts)):
        raise UserError(f"--target-split {text!r}: give two positive shares, steering then held-out, e.g. 50,50")
    total = sum(parts)
    return parts[0] / total, parts[1] / total


def split_documents(name: str, documents: int, steering_share: float) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(steering, held-out) document indices of a set of `documents` documents, each part sorted;
    the same for a given name and size in every run."""
    generator = numpy.random.Generator(numpy.random.PCG64(numpy.random.SeedSequence([SPLIT_SEED, zlib.crc32(name.encode())])))
    order = generator.permutation(documents)
    steering = min(documents - 1, max(1, round(steering_share * documents)))
    return numpy.sort(order[:steering]).astype(numpy.int32), numpy.sort(order[steering:]).astype(numpy.int32)


@dataclass
class TargetSet:
    name: str
    prefix: str
    steering: GPTDataset
    held_out: GPTDataset


def open_target_sets(data_path: Sequence[str], tokenizer: Tokenizer) -> Corpus:
    """The target sets of `--target-data-path`, opened and checked against the tokenizer."""
    return open_corpus(parse_data_path(data_path, option=OPTION), tokenizer)


class TargetSets:
    """Every target set of `corpus` (`open_target_sets`), split, with readers for both parts.

    `config` is the training data's `GPTDatasetConfig` (sequence length, masks, tokenizer, cache),
    so a target sample is shaped exactly like a training sample."""

    def __init__(self, corpus: Corpus, config: GPTDatasetConfig, split: str = "50,50"):
        steering_share, _ = parse_target_split(split)
        self.sets: list[TargetSet] = []
        for domain, indexed in zip(corpus.manifest.domains, corpus.indexed):
            documents = len(indexed)
            if documents < 2:
                raise UserError(
                    f"{domain.prefix}.bin: target set {domain.name!r} has {documents} document; it needs at least "
                    f"two, one to steer and one to hold out"
                )
            steering, held_out = split_documents(domain.name, documents, steering_share)
            parts = [self._part(indexed, domain.prefix, role, documents_, split_, config)
                     for role, documents_, split_ in (("steering", steering, Split.train), ("held-out", held_out, Split.valid))]
            for role, part in zip(("steering", "held-out"), parts):
                if len(part) == 0:
                    raise UserError(
                        f"{domain.prefix}.bin: the {role} examples of target set {domain.name!r} hold no sample of "
                        f"{config.sequence_length + 1} tokens; give the set more examples, lower --seq-length, "
                        f"or change --target-split"
                    )
            self.sets.append(TargetSet(domain.name, domain.prefix, *parts))
        self.seed = config.random_seed

    @staticmethod
    def _part(indexed, prefix: str, role: str, documents: numpy.ndarray, split: Split, config: GPTDatasetConfig) -> GPTDataset:
        # megatron.core names its index cache after the path, split and config, not the documents:
        # a path of its own keeps a part from reading a cache built for other documents of the file.
        return GPTDataset(indexed, f"{prefix} (target {role})", documents, None, split, config)

    @property
    def names(self) -> list[str]:
        return [target.name for target in self.sets]

    @property
    def steering_samples(self) -> int:
        return sum(len(target.steering) for target in self.sets)

    def steering_batch(self, index: int, size: int) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The `index`-th batch of `size` steering samples as (set ids, sample ids): the sets take
        turns, each walking its samples in a seeded order that is drawn anew every epoch. A pure
        function of (seed, index, size), so a resumed run draws the same batches without state."""
        set_ids = numpy.arange(index * size, (index + 1) * size) % len(self.sets)
        sample_ids = numpy.empty(size, dtype=numpy.int64)
        for set_id, target in enumerate(self.sets):
            chosen = set_ids == set_id
            # Draws this set made before this batch, then its draws in this batch.
            before = len(range(set_id, index * size, len(self.sets)))
            positions = before + numpy.arange(int(chosen.sum()))
            samples = len(target.steering)
            sample_ids[chosen] = [_epoch_order(self.seed, set_id, int(position) // samples, samples)[position % samples] for position in positions]
        return set_ids, sample_ids

    def steering_sample(self, set_id: int, sample_id: Optional[int]) -> dict:
        return self._read(self.sets[set_id].steering, set_id, sample_id)

    def held_out_sample(self, set_id: int, sample_id: Optional[int]) -> dict:
        """A held-out sample; `None` gives Megatron's padding sample, whose loss mask is all zero."""
        return self._read(self.sets[set_id].held_out, set_id, sample_id)

    @staticmethod
    def _read(dataset: GPTDataset, set_id: int, sample_id: Optional[int]) -> dict:
        item = dataset[None if sample_id is None else int(sample_id)]
        item["domain_id"] = set_id
        return item

    def steering_sizes(self) -> list[int]:
        return [len(target.steering) for target in self.sets]

    def held_out_sizes(self) -> list[int]:
        return [len(target.held_out) for target in self.sets]


@functools.lru_cache(maxsize=64)
def _epoch_order(seed: int, set_id: int, epoch: int, size: int) -> numpy.ndarray:
    generator = numpy.random.Generator(numpy.random.PCG64(numpy.random.SeedSequence([seed, _WALK_STREAM, set_id, epoch])))
    return generator.permutation(size)
