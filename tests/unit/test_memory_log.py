"""GPU memory in the training log: Megatron-LM's report_memory quantities (allocated, max allocated) in
its "MB" (2**20 bytes), on the console line and in the metrics JSONL; nothing of it on CPU."""

from __future__ import annotations

import io

import pytest
import torch

from megatron_acodm.metrics import MetricsLogger, TrainRecord
from megatron_acodm.metrics.memory import cuda_memory_mib
from megatron_acodm.metrics.reader import read_metrics

DOMAINS = ["prose", "code"]


def logged(tmp_path, **memory) -> tuple[str, dict]:
    """The console line and the JSON record of one training record with `memory`'s fields."""
    path = tmp_path / "metrics.jsonl"
    stream = io.StringIO()
    record = TrainRecord(7, 10, 56, 1.0, 125.0, 1e-4, 3.5, 0.75, 2048.0, 8, [3.0, 4.0], [0.5, 0.5], [0.5, 0.5], **memory)
    with MetricsLogger(DOMAINS, jsonl_path=path, train_iters=10, stream=stream, progress_stream=io.StringIO()) as logger:
        logger.log_train(record)
    (train,) = read_metrics(path)[1]
    return stream.getvalue().splitlines()[0], train


def test_cuda_line_ends_with_allocated_and_peak_memory(tmp_path):
    line, record = logged(tmp_path, memory_allocated_mib=1536.04, max_memory_allocated_mib=2047.96)
    assert line.endswith(" tokens per second: 2048 | allocated memory (MB): 1536.0 | max allocated memory (MB): 2048.0 |")
    assert record["memory_allocated_mib"] == 1536.04 and record["max_memory_allocated_mib"] == 2047.96


def test_cpu_line_has_no_memory_field(tmp_path):
    line, record = logged(tmp_path)
    assert "memory" not in line and line.endswith(" tokens per second: 2048 |")
    assert record["memory_allocated_mib"] is None and record["max_memory_allocated_mib"] is None


def test_nothing_is_measured_off_cuda():
    assert cuda_memory_mib(torch.device("cpu")) == {}


def test_cuda_counters_in_mib(monkeypatch):
    # 3 * 2**29 bytes = 1536 * 2**20; 2**31 + 2**20 bytes = 2049 * 2**20
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 3 * 2**29)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 2**31 + 2**20)
    assert not torch.distributed.is_initialized()  # one process: nothing to reduce over
    assert cuda_memory_mib(torch.device("cuda")) == pytest.approx({"memory_allocated_mib": 1536.0, "max_memory_allocated_mib": 2049.0})
