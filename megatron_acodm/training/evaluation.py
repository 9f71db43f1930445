"""Per-domain validation loss on a fixed set of held-out samples.

Each domain contributes its first `eval_iters * G / K` validation samples (fewer if it has fewer),
the same at every evaluation, so curves compare like with like. The pairs are packed into global
batches of G; the last is filled with Megatron's padding sample, whose loss mask is zero.
"""

from __future__ import annotations

import numpy
import torch

from megatron_acodm.data.blender import DynamicBlender
from megatron_acodm.training.batches import data_parallel_slice, micro_batches
from megatron_acodm.training.step import run_step


def evaluation_batches(blender: DynamicBlender, eval_iters: int, global_batch_size: int) -> list[tuple[numpy.ndarray, list]]:
    """The fixed evaluation set as global batches of (domain ids, sample ids or None for padding);
    empty (no evaluation) with `eval_iters` 0 or a --split without validation documents."""
    per_domain = max(1, eval_iters * global_batch_size // blender.num_domains) if eval_iters > 0 else 0
    domains, samples = [], []
    for domain in range(blender.num_domains):
        dataset = blender.valid_datasets[domain]
        count = 0 if dataset is None else min(per_domain, len(dataset))
        domains += [domain] * count
        samples += list(range(count))
    if not domains:
        return []
    padding = (-len(domains)) % global_batch_size
    domains += [domains[0]] * padding
    samples += [None] * padding
    return [
        (numpy.array(domains[start : start + global_batch_size]), samples[start : start + global_batch_size])
        for start in range(0, len(domains), global_batch_size)
    ]


def evaluate(model, blender: DynamicBlender, batches, args, data_parallel_rank: int, data_parallel_size: int, device) -> numpy.ndarray:
    """`[K, 2]` validation loss sums and tokens per domain over the fixed evaluation set."""
    for chunk in model:
        chunk.eval()
    totals = numpy.zeros((blender.num_domains, 2))
    with torch.no_grad():
        for domain_ids, sample_ids in batches:
            mine = data_parallel_slice(domain_ids, sample_ids, rank=data_parallel_rank, size=data_parallel_size)
            batch_list = micro_batches(blender.valid_sample, *mine, args.micro_batch_size)
            totals += run_step(model, batch_list, args, blender.num_domains, device).domain_sums
    for chunk in model:
        chunk.train()
    return totals
