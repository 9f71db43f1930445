"""Tiny runs of pretrain_acodm.py for the end-to-end tests: arguments, a run that must succeed, its losses."""

from __future__ import annotations

import os

from launching import REPO, run
from megatron_acodm.metrics.reader import read_metrics

ENTRY = os.path.join(REPO, "pretrain_acodm.py")
EXPORT_SCHEDULE = os.path.join(REPO, "tools", "export_schedule.py")
TINY = [
    "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "32",
    "--micro-batch-size", "2", "--global-batch-size", "8", "--lr", "1e-3", "--lr-warmup-iters", "2",
    "--log-interval", "1", "--eval-interval", "4", "--eval-iters", "1", "--split", "90,10,0",
]


def arguments(corpus, tokenizer_model, save, *extra) -> list[str]:
    return ["--data-path", corpus, "--tokenizer-model", tokenizer_model, "--save", save, *TINY, *extra]


def train(folder, arguments, processes=None):
    """Run to completion; fail the test with the run's output otherwise."""
    completed = run(ENTRY, arguments, cwd=str(folder), processes=processes)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def losses(save):
    """(train losses, validation losses, train records) from the run's metrics under `save`."""
    _, train_records, valid_records = read_metrics(os.path.join(save, "metrics.jsonl"))
    return [record["lm_loss"] for record in train_records], [record["lm_loss"] for record in valid_records], train_records
