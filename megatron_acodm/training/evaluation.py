"""Held-out loss on fixed sets of samples: per domain, and per target set.

Each domain contributes its first `eval_iters * G / K` validation samples (fewer if it has fewer);
each target set all its held-out samples. The set is the same at every evaluation, so curves
compare like with like. The pairs are packed into global batches of G; the last is filled with
Megatron's padding sample, whose loss mask is zero.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy
import torch

from megatron_acodm.data.blender import DynamicBlender
from megatron_acodm.training.batches import rank_micro_batches
from megatron_acodm.training.loss import COLUMNS, LOSS, LOSS_SQUARED, LOSS_TIMES_TOKENS, SEQUENCES, TOKENS, TOKENS_SQUARED
from megatron_acodm.training.step import run_step


def domain_evaluation_sizes(blender: DynamicBlender, eval_iters: int, global_batch_size: int) -> list[int]:
    """How many validation samples of each domain an evaluation reads (all zero with `eval_iters` 0)."""
    per_domain = max(1, eval_iters * global_batch_size // blender.num_domains) if eval_iters > 0 else 0
    return [0 if dataset is None else min(per_domain, len(dataset)) for dataset in blender.valid_datasets]


def evaluation_batches(sizes: Sequence[int], global_batch_size: int) -> list[tuple[numpy.ndarray, list]]:
    """Samples `0..sizes[d]-1` of every part d as global batches of (part ids, sample ids or None
    for padding); empty (no evaluation) when every size is zero."""
    parts, samples = [], []
    for part, count in enumerate(sizes):
        parts += [part] * count
        samples += list(range(count))
    if not parts:
        return []
    padding = (-len(parts)) % global_batch_size
    parts += [parts[0]] * padding
    samples += [None] * padding
    return [
        (numpy.array(parts[start : start + global_batch_size]), samples[start : start + global_batch_size])
        for start in range(0, len(parts), global_batch_size)
    ]


def evaluate(
    model,
    read_sample: Callable[[int, Optional[int]], dict],
    num_parts: int,
    batches,
    micro_batch_size: int,
    data_parallel_rank: int,
    data_parallel_size: int,
    device,
) -> numpy.ndarray:
    """`[parts, loss.COLUMNS]` held-out loss sums, tokens and sequence moments per part (domain or
    target set) over `batches`, each sample read by `read_sample(part, sample)` (e.g. `blender.valid_sample`)."""
    for chunk in model:
        chunk.eval()
    totals = numpy.zeros((num_parts, COLUMNS))
    with torch.no_grad():
        for part_ids, sample_ids in batches:
            batch_list = rank_micro_batches(read_sample, part_ids, sample_ids, micro_batch_size, rank=data_parallel_rank, size=data_parallel_size)
            totals += run_step(model, batch_list, num_parts, device).domain_sums
    for chunk in model:
        chunk.train()
    return totals


def part_means(sums: numpy.ndarray) -> list[Optional[float]]:
    """Mean loss per token of each part of `[parts, loss.COLUMNS]` sums (None for a part without tokens)."""
    return [float(row[LOSS] / row[TOKENS]) if row[TOKENS] > 0 else None for row in sums]


def part_standard_errors(sums: numpy.ndarray) -> list[Optional[float]]:
    """The standard error of each part's mean loss per token over its sequences (None below two).

    The mean is the ratio r = sum s_i / sum n_i of the sequences' loss sums s_i and token counts
    n_i; its sampling variance over m sequences is m / (m - 1) sum (s_i - r n_i)^2 / (sum n_i)^2
    (the ratio estimator's linearisation), expanded into the sums the steps accumulate."""
    errors: list[Optional[float]] = []
    for row in sums:
        count, tokens = row[SEQUENCES], row[TOKENS]
        if count < 2 or tokens <= 0:
            errors.append(None)
            continue
        ratio = row[LOSS] / tokens
        residual = row[LOSS_SQUARED] - 2.0 * ratio * row[LOSS_TIMES_TOKENS] + ratio**2 * row[TOKENS_SQUARED]
        errors.append(float(numpy.sqrt(max(residual, 0.0) * count / (count - 1)) / tokens))
    return errors
