"""A run's logs: records, console lines, the metrics JSONL and TensorBoard (`logger`), reading the
JSONL back (`reader`) and the mixture figure (`plots`)."""

from megatron_acodm.metrics.logger import MetricsLogger
from megatron_acodm.metrics.reader import read_metrics
from megatron_acodm.metrics.records import EvalRecord, TrainRecord, validation_means

__all__ = ["EvalRecord", "MetricsLogger", "TrainRecord", "read_metrics", "validation_means"]
