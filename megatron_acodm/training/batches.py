"""From a step's plan to this rank's micro-batches, each sequence tagged with its domain id.

Every rank reads its own samples from the memory-mapped `.bin` files (the plan is the same on all
ranks, and a read is cheap), so no tensor-parallel broadcast of data is needed and the domain ids
cannot be lost on the way.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

_FIELDS = ("tokens", "labels", "loss_mask", "position_ids")


def data_parallel_slice(*per_sample, rank: int, size: int) -> tuple:
    """This data-parallel rank's contiguous share of a global batch, for each per-sample array given
    (domain ids, sample ids, sketch segments; None stays None)."""
    per_rank = len(per_sample[0]) // size
    window = slice(rank * per_rank, (rank + 1) * per_rank)
    return tuple(None if values is None else values[window] for values in per_sample)


def rank_micro_batches(
    read_sample: Callable[[int, Optional[int]], dict],
    part_ids,
    sample_ids,
    micro_batch_size: int,
    *,
    rank: int,
    size: int,
    sketch_segments=None,
) -> list[dict]:
    """A global batch of (part, sample) pairs as this data-parallel rank's micro-batches: its slice
    (`data_parallel_slice`), collated (`micro_batches`). Training, evaluation and the target pass
    all read their samples so."""
    part_ids, sample_ids, sketch_segments = data_parallel_slice(part_ids, sample_ids, sketch_segments, rank=rank, size=size)
    return micro_batches(read_sample, part_ids, sample_ids, micro_batch_size, sketch_segments)


def micro_batches(
    read_sample: Callable[[int, Optional[int]], dict],
    domain_ids,
    sample_ids,
    micro_batch_size: int,
    sketch_segments=None,
) -> list[dict]:
    """Collate samples (`read_sample(domain, sample)`, e.g. `blender.sample`) into micro-batches of
    Megatron's GPT fields plus `domain_ids`, and `sketch_segments` (each sequence's sketch row) when given."""
    batches = []
    for start in range(0, len(domain_ids), micro_batch_size):
        window = slice(start, start + micro_batch_size)
        samples = [read_sample(int(domain), sample) for domain, sample in zip(domain_ids[window], sample_ids[window])]
        batch = {field: torch.stack([sample[field] for sample in samples]) for field in _FIELDS}
        if "attention_mask" in samples[0]:
            batch["attention_mask"] = torch.stack([sample["attention_mask"] for sample in samples])
        batch["domain_ids"] = torch.tensor([sample["domain_id"] for sample in samples], dtype=torch.long)
        if sketch_segments is not None:
            batch["sketch_segments"] = torch.as_tensor(sketch_segments[window], dtype=torch.long)
        batches.append(batch)
    return batches
