"""DynamicBlender: the global batch of each step drawn from per-domain GPTDatasets by online weights.

Megatron's BlendedDataset precomputes which dataset every sample of the run comes from, with the
weights fixed at construction. Here each domain is its own megatron.core `GPTDataset` (one epoch of
samples, so start-up does not depend on the run's length) walked in a shuffled order that is drawn
anew every epoch, and `plan(step, weights)` decides the domains of one global batch at a time.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy

from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.utils import Split

from megatron_acodm.data.apportion import apportion
from megatron_acodm.data.corpus import Corpus
from megatron_acodm.data.manifest import validate_weights
from megatron_acodm.errors import UserError

STATE_VERSION = 1
_ORDER_STREAM = 0x0DE5  # keeps the batch-order stream apart from the domains' epoch streams


@dataclass(frozen=True)
class StepPlan:
    """One global batch: sample `sample_ids[i]` of domain `domain_ids[i]`, in batch order."""

    step: int
    domain_ids: numpy.ndarray
    sample_ids: numpy.ndarray
    counts: numpy.ndarray  # samples per domain in this batch
    weights: numpy.ndarray  # the mixture the counts follow: the given weights with the per-domain minimum


class _EpochWalker:
    """Walks 0..n-1 in a fresh seeded permutation each epoch; its position is its whole state."""

    def __init__(self, size: int, seed: int, stream: int):
        self.size, self.seed, self.stream = size, seed, stream
        self.epoch, self.position = 0, 0
        self._order: Optional[numpy.ndarray] = None

    def _permutation(self) -> numpy.ndarray:
        if self._order is None:
            generator = numpy.random.Generator(
                numpy.random.PCG64(numpy.random.SeedSequence([self.seed, self.stream, self.epoch]))
            )
            self._order = generator.permutation(self.size)
        return self._order

    def take(self, count: int) -> numpy.ndarray:
        parts = []
        while count > 0:
            chunk = min(count, self.size - self.position)
            parts.append(self._permutation()[self.position : self.position + chunk])
            self.position += chunk
            count -= chunk
            if self.position == self.size:
                self.epoch, self.position, self._order = self.epoch + 1, 0, None
        return numpy.concatenate(parts) if parts else numpy.empty(0, dtype=numpy.int64)

    def seek(self, epoch: int, position: int) -> None:
        self.epoch, self.position, self._order = epoch, position, None


class DynamicBlender:
    """Plans global batches over K domains from weights that may change at every step."""

    def __init__(
        self,
        corpus: Corpus,
        *,
        seq_length: int,
        global_batch_size: int,
        seed: int,
        split: str = "969,30,1",
        min_samples_per_domain: int = 0,
        data_cache_path: Optional[str] = None,
        reset_position_ids: bool = False,
        reset_attention_mask: bool = False,
        eod_mask_loss: bool = False,
        create_attention_mask: bool = False,
    ):
        if global_batch_size < 1:
            raise ValueError(f"global batch size must be positive, got {global_batch_size}")
        manifest = corpus.manifest
        most = global_batch_size // len(manifest.names)
        if not 0 <= min_samples_per_domain <= most:
            raise UserError(
                f"--min-samples-per-domain {min_samples_per_domain}: the {len(manifest.names)} domains of "
                f"--data-path and the global batch of {global_batch_size} allow a value in [0, {most}]"
            )
        self.manifest = manifest
        self.names = manifest.names
        self.min_samples_per_domain = min_samples_per_domain
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.initial_weights = corpus.initial_weights
        self.config = GPTDatasetConfig(
            random_seed=seed,
            sequence_length=seq_length,
            blend=([domain.prefix for domain in manifest.domains], None),
            split=split,
            path_to_cache=data_cache_path,
            tokenizer=corpus.tokenizer,
            reset_position_ids=reset_position_ids,
            reset_attention_mask=reset_attention_mask,
            eod_mask_loss=eod_mask_loss,
            create_attention_mask=create_attention_mask,
        )
        self.vocab_size = corpus.tokenizer.vocab_size
        self._indexed = corpus.indexed
        self.domain_tokens = corpus.tokens
        self.train_datasets = [self._build(index, Split.train) for index in range(len(self.names))]
        # Built here, not on first use: megatron's index cache is written by whichever process builds
        # a dataset first, so every dataset must exist before the other ranks construct theirs.
        self.valid_datasets = [self._build(index, Split.valid) for index in range(len(self.names))]
        for domain, dataset in zip(manifest.domains, self.train_datasets):
            if dataset is None or len(dataset) == 0:
                raise UserError(
                    f"{domain.prefix}.bin: domain {domain.name!r} has no training sample of "
                    f"{seq_length + 1} tokens under --split {split}; give it more text, lower "
                    f"--seq-length, or drop it from --data-path"
                )
        self._walkers = [
            _EpochWalker(len(dataset), seed, zlib.crc32(name.encode()))
            for name, dataset in zip(self.names, self.train_datasets)
        ]
        self._carry = numpy.zeros(len(self.names))
        self.realised_counts = numpy.zeros(len(self.names), dtype=numpy.int64)
        self.next_step = 0

    @property
    def num_domains(self) -> int:
        return len(self.names)

    def _build(self, index: int, split: Split) -> Optional[GPTDataset]:
        """A GPTDataset over this domain's documents in `split`, by Megatron's --split bookends."""
        bookends = self.config.split_matrix[split.value]
        if bookends is None:  # --split gives this split no share
            return None
        indexed = self._indexed[index]
        elements = GPTDataset.numel_low_level_dataset(indexed)
        start, end = (int(round(bound * float(elements))) for bound in bookends)
        if end <= start:
            return None
        prefix = self.manifest.domains[index].prefix
        documents = numpy.arange(start, end, dtype=numpy.int32)
        return GPTDataset(indexed, prefix, documents, None, split, self.config)

    def plan(self, step: int, weights: Sequence[float]) -> StepPlan:
        """The global batch of `step` under `weights`; steps are planned in order, each once."""
        if step != self.next_step:
            raise ValueError(f"the blender plans steps in order: expected step {self.next_step}, got {step}")
        weights = numpy.asarray(weights, dtype=numpy.float64)
        if weights.shape != (self.num_domains,):
            raise ValueError(f"expected {self.num_domains} weights ({', '.join(self.names)}), got shape {weights.shape}")
        weights = numpy.array(validate_weights(weights, source=f"mixture weights at step {step}"))
        # Every domain first gets its minimum; the rest of the batch follows the weights, with the
        # carries tracking that part alone (so they stay bounded whatever the minimum takes).
        reserved = self.min_samples_per_domain
        weighted = self.global_batch_size - reserved * self.num_domains
        counts, self._carry = apportion(self._carry, weights, weighted)
        counts += reserved
        followed = weights * (weighted / self.global_batch_size) + reserved / self.global_batch_size
        domain_ids = numpy.repeat(numpy.arange(self.num_domains), counts)
        sample_ids = numpy.concatenate([walker.take(int(count)) for walker, count in zip(self._walkers, counts)])
        # Shuffle the batch so every micro-batch (and data-parallel slice) sees the mixture.
        order = numpy.random.Generator(
            numpy.random.PCG64(numpy.random.SeedSequence([self.seed, _ORDER_STREAM, step]))
        ).permutation(self.global_batch_size)
        self.realised_counts += counts
        self.next_step += 1
        return StepPlan(step, domain_ids[order], sample_ids[order].astype(numpy.int64), counts, followed)

    def sample(self, domain_id: int, sample_id: int) -> dict:
        """Megatron's GPT training sample (tokens, labels, masks, position ids) tagged with its domain."""
        return self._read(self.train_datasets[domain_id], domain_id, int(sample_id))

    def valid_sample(self, domain_id: int, sample_id: Optional[int]) -> dict:
        """A held-out sample; `None` gives Megatron's padding sample, whose loss mask is all zero."""
        return self._read(self.valid_datasets[domain_id], domain_id, None if sample_id is None else int(sample_id))

    def _read(self, dataset: GPTDataset, domain_id: int, sample_id: Optional[int]) -> dict:
        item = dataset[sample_id]
        # The manifest's largest id was checked at start; this catches a .bin changed since, for
        # the cost of one max over a sample (an id past the vocabulary would crash the embedding).
        largest = max(int(item["tokens"].max()), int(item["labels"].max()))
        if largest >= self.vocab_size:
            prefix = self.manifest.domains[domain_id].prefix
            raise UserError(
                f"{prefix}.bin: sample {sample_id} holds token id {largest}, beyond the tokenizer's "
                f"vocabulary ({self.vocab_size} ids); the file changed since it was indexed: preprocess "
                f"this domain again with tools/preprocess_domains.py",
                rank_local=True,
            )
        item["domain_id"] = domain_id
        return item

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "domains": list(self.names),
            "samples_per_epoch": [walker.size for walker in self._walkers],
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "next_step": self.next_step,
            "carry": self._carry.tolist(),
            "epochs": [walker.epoch for walker in self._walkers],
            "positions": [walker.position for walker in self._walkers],
            "realised_counts": self.realised_counts.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise UserError(f"blender state version {state.get('version')!r}, expected {STATE_VERSION}")
        if state["domains"] != self.names:
            raise UserError(
                f"the checkpoint's blender has domains {state['domains']}, this run has {self.names}; "
                f"resume with the same --data-path"
            )
        sizes = [walker.size for walker in self._walkers]
        if state["samples_per_epoch"] != sizes:
            raise UserError(
                f"the checkpoint's domains have {state['samples_per_epoch']} samples per epoch, this run "
                f"has {sizes}: the data, --seq-length or --split changed since the checkpoint"
            )
        if state["seed"] != self.seed or state["global_batch_size"] != self.global_batch_size:
            raise UserError(
                f"the checkpoint's blender used seed {state['seed']} and global batch "
                f"{state['global_batch_size']}, this run {self.seed} and {self.global_batch_size}"
            )
        self.next_step = int(state["next_step"])
        self._carry = numpy.array(state["carry"], dtype=numpy.float64)
        self.realised_counts = numpy.array(state["realised_counts"], dtype=numpy.int64)
        for walker, epoch, position in zip(self._walkers, state["epochs"], state["positions"]):
            walker.seek(int(epoch), int(position))

