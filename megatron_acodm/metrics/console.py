"""The console's lines, in Megatron-LM's shape: the training line, the validation header, the
target line and an indented per-domain table."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Mapping, Optional, Sequence

from megatron_acodm.metrics.records import TrainRecord

TABLE_INDENT = "    "


def format_train_line(record: TrainRecord) -> str:
    """One line in Megatron-LM's `training_log` format, plus tokens per second and, on CUDA, the
    memory Megatron-LM's `report_memory` prints after it."""
    line = f" [{datetime.now():%Y-%m-%d %H:%M:%S}]"
    line += f" iteration {int(record.iteration):8d}/{int(record.train_iters):8d} |"
    line += f" consumed samples: {int(record.consumed_samples):12d} |"
    line += f" elapsed time per iteration (ms): {float(record.iteration_ms):.1f} |"
    line += f" learning rate: {float(record.lr):.6E} |"
    line += f" global batch size: {int(record.global_batch_size):5d} |"
    line += f" lm loss: {float(record.lm_loss):.6E} |"
    if record.loss_scale is not None:
        line += f" loss scale: {float(record.loss_scale):.1f} |"
    if record.grad_norm is not None:
        line += f" grad norm: {float(record.grad_norm):.3f} |"
    line += f" tokens per second: {float(record.tokens_per_s):.0f} |"
    if record.skipped_iterations is not None:
        line += f" number of skipped iterations: {int(record.skipped_iterations):3d} |"
    if record.nan_iterations is not None:
        line += f" number of nan iterations: {int(record.nan_iterations):3d} |"
    # Megatron-LM's report_memory words and units ("MB": 2**20 bytes); measured on CUDA only.
    if record.memory_allocated_mib is not None:
        line += f" allocated memory (MB): {float(record.memory_allocated_mib):.1f} |"
    if record.max_memory_allocated_mib is not None:
        line += f" max allocated memory (MB): {float(record.max_memory_allocated_mib):.1f} |"
    return line


def format_target_line(target_loss: dict[str, Optional[float]], mean: Optional[float]) -> str:
    """The held-out target loss of each target set, and their mean, after the validation header."""
    cells = " |".join(f" {name}: {cell(loss, '.6E')}" for name, loss in target_loss.items())
    return f" target loss (held-out) |{cells} | mean: {cell(mean, '.6E')} |"


def format_eval_header(iteration: int, token_weighted: Optional[float], uniform: Optional[float]) -> str:
    """Megatron-LM's `validation loss at iteration N | ...` line, with both means over domains."""
    if token_weighted is None or uniform is None:
        return f" validation loss at iteration {iteration} | lm loss: no validation data |"
    perplexity = math.exp(min(20.0, token_weighted))  # capped as Megatron-LM does
    return (
        f" validation loss at iteration {iteration} |"
        f" lm loss (token-weighted): {token_weighted:.6E} |"
        f" lm loss PPL (token-weighted): {perplexity:.6E} |"
        f" lm loss (uniform mean): {uniform:.6E} |"
    )


def format_domain_table(names: Sequence[str], columns: Mapping[str, Sequence[str]]) -> list[str]:
    """An indented table: domain names left-aligned, then one right-aligned column per entry."""
    name_width = max(len("domain"), *(len(name) for name in names))
    widths = {title: max(len(title), *(len(cell) for cell in cells)) for title, cells in columns.items()}
    lines = [TABLE_INDENT + "domain".ljust(name_width) + "".join(f"  {title:>{widths[title]}}" for title in columns)]
    for row, name in enumerate(names):
        cells = "".join(f"  {column[row]:>{widths[title]}}" for title, column in columns.items())
        lines.append(TABLE_INDENT + name.ljust(name_width) + cells)
    return lines


def cell(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(float(value), spec)
