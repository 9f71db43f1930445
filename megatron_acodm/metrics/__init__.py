"""A run's logs: records, console lines, the metrics JSONL, TensorBoard and W&B (`logger`,
`weights_and_biases`), the GPU memory a line reports (`memory`), reading the JSONL back (`reader`)
and the mixture figure (`plots`)."""

from megatron_acodm.metrics.logger import MetricsLogger, run_logger
from megatron_acodm.metrics.reader import read_metrics
from megatron_acodm.metrics.records import EvalRecord, TrainRecord, validation_means

__all__ = ["EvalRecord", "MetricsLogger", "TrainRecord", "read_metrics", "run_logger", "validation_means"]
