#!/usr/bin/env python
"""Run `pretrain_acodm.py` in this process, then write its peak CUDA memory to a JSON file.

    python bench/measured_run.py REPORT.json <pretrain_acodm.py arguments>

The trainer logs no memory; this wrapper reads PyTorch's own counters once the run has ended:
`max_memory_allocated` (the most the caching allocator handed out at once: weights, optimizer
state, activations, workspaces) and `max_memory_reserved` (the most it held from the driver), in
MiB, both null without CUDA (the caller then has the process's peak RSS). The exit status is the
trainer's.
"""

from __future__ import annotations

import json
import sys

MIB = 2**20


def peak_cuda_memory() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"max_memory_allocated_mib": None, "max_memory_reserved_mib": None}
    return {
        "max_memory_allocated_mib": torch.cuda.max_memory_allocated() / MIB,
        "max_memory_reserved_mib": torch.cuda.max_memory_reserved() / MIB,
    }


def main() -> int:
    report, argv = sys.argv[1], sys.argv[2:]
    import pretrain_acodm

    status = pretrain_acodm.main(argv)
    with open(report, "w") as stream:
        json.dump(peak_cuda_memory(), stream)
    return status


if __name__ == "__main__":  # dist_checkpointing's saver spawns processes that re-import this file
    sys.exit(main())
