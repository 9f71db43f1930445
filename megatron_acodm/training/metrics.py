"""Training and validation logs: a Megatron-LM-shaped console line, a JSONL file, TensorBoard scalars.

The JSONL file is what plots read (`tools/run_metrics.py`). Every record carries its iteration, and a
resumed run appends to the same file, after a run header naming the iteration it resumed from.

Records, one JSON object a line:
- `{"kind": "run", "time", "start_iteration", "domains": [names], "config": {run arguments}}`
- `{"kind": "train", "iteration", "train_iters", "consumed_samples", "elapsed_s", "iteration_ms", "lr",
  "lm_loss", "grad_norm", "loss_scale", "tokens_per_s", "global_batch_size", "skipped_iterations",
  "nan_iterations", "domains": {name: {"loss", "weight", "share", and the mixer's per-domain
  diagnostics, e.g. "score", "score_snr"}}, "mixer": {the mixer's scalar diagnostics, e.g. "critic_fit"}}`
- `{"kind": "valid", "iteration", "lm_loss" (weighted by corpus tokens), "lm_loss_uniform",
  "domains": {name: {"loss", "corpus_tokens"}}}`
Numbers that are not finite (and absent optional values) are written as null: the file is strict JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Optional, Sequence, TextIO, Union

from tqdm import tqdm

_TABLE_INDENT = "    "


@dataclass
class TrainRecord:
    """What the trainer measured over one log interval."""

    iteration: int  # finished steps, counted from 1
    train_iters: int
    consumed_samples: int
    elapsed_s: float  # since the run started
    iteration_ms: float  # mean over the interval
    lr: float
    lm_loss: float  # token-weighted mean over the interval
    grad_norm: Optional[float]
    tokens_per_s: float  # over the interval
    global_batch_size: int
    domain_loss: Sequence[Optional[float]]  # None where the domain had no tokens in the interval
    domain_weight: Sequence[float]
    domain_share: Sequence[float]  # realised share of the interval's samples
    loss_scale: Optional[float] = None
    skipped_iterations: Optional[int] = None
    nan_iterations: Optional[int] = None
    # the mixer's own view at the end of the interval (`Mixer.domain_diagnostics`, `scalar_diagnostics`)
    domain_diagnostics: Mapping[str, Sequence[float]] = field(default_factory=dict)
    mixer_diagnostics: Mapping[str, float] = field(default_factory=dict)


@dataclass
class EvalRecord:
    """Held-out validation loss per domain at one iteration."""

    iteration: int
    domain_loss: Sequence[Optional[float]]  # None where the domain has no validation samples
    # Each domain's tokens in the corpus: the token-weighted mean is the loss under the natural
    # (concatenated-corpus) mixture, the uniform mean the loss with every domain counted alike.
    domain_tokens: Sequence[int]
    # Held-out loss of each target set (--target-data-path), by name; their mean counts each set alike.
    target_loss: Optional[dict[str, Optional[float]]] = None


def validation_means(
    domain_loss: Sequence[Optional[float]], domain_tokens: Sequence[int]
) -> tuple[Optional[float], Optional[float]]:
    """(token-weighted mean, uniform mean over domains) of the domains with validation data, or Nones."""
    evaluated = [
        (float(loss), float(tokens))
        for loss, tokens in zip(domain_loss, domain_tokens)
        if loss is not None and tokens > 0
    ]
    if not evaluated:
        return None, None
    total_tokens = sum(tokens for _, tokens in evaluated)
    token_weighted = sum(loss * tokens for loss, tokens in evaluated) / total_tokens
    uniform = sum(loss for loss, _ in evaluated) / len(evaluated)
    return token_weighted, uniform


def format_train_line(record: TrainRecord) -> str:
    """One line in Megatron-LM's `training_log` format, plus tokens per second."""
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
    return line


def format_target_line(target_loss: dict[str, Optional[float]], mean: Optional[float]) -> str:
    """The held-out target loss of each target set, and their mean, after the validation header."""
    cells = " |".join(f" {name}: {_cell(loss, '.6E')}" for name, loss in target_loss.items())
    return f" target loss (held-out) |{cells} | mean: {_cell(mean, '.6E')} |"


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
    lines = [_TABLE_INDENT + "domain".ljust(name_width) + "".join(f"  {title:>{widths[title]}}" for title in columns)]
    for row, name in enumerate(names):
        cells = "".join(f"  {column[row]:>{widths[title]}}" for title, column in columns.items())
        lines.append(_TABLE_INDENT + name.ljust(name_width) + cells)
    return lines


def _number_or_none(value: Any) -> Optional[float]:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _mean_or_none(values) -> Optional[float]:
    """The mean of the finite values; None when there is none."""
    finite = [number for number in map(_number_or_none, values) if number is not None]
    return sum(finite) / len(finite) if finite else None


def _cell(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(float(value), spec)


def _jsonable(value: Any) -> Any:
    """`value` as JSON: containers recursively, numpy and torch values as numbers, anything else as str."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no inf/nan; keep what it was
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(item) for item in value), key=repr)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return _jsonable(value.tolist())
    return str(value)


def _train_json(record: TrainRecord, names: Sequence[str]) -> dict[str, Any]:
    return {
        "kind": "train",
        "iteration": int(record.iteration),
        "train_iters": int(record.train_iters),
        "consumed_samples": int(record.consumed_samples),
        "elapsed_s": _number_or_none(record.elapsed_s),
        "iteration_ms": _number_or_none(record.iteration_ms),
        "lr": _number_or_none(record.lr),
        "lm_loss": _number_or_none(record.lm_loss),
        "grad_norm": _number_or_none(record.grad_norm),
        "loss_scale": _number_or_none(record.loss_scale),
        "tokens_per_s": _number_or_none(record.tokens_per_s),
        "global_batch_size": int(record.global_batch_size),
        "skipped_iterations": None if record.skipped_iterations is None else int(record.skipped_iterations),
        "nan_iterations": None if record.nan_iterations is None else int(record.nan_iterations),
        "domains": {
            name: {
                "loss": _number_or_none(loss),
                "weight": _number_or_none(weight),
                "share": _number_or_none(share),
                **{key: _number_or_none(values[index]) for key, values in record.domain_diagnostics.items()},
            }
            for index, (name, loss, weight, share) in enumerate(
                zip(names, record.domain_loss, record.domain_weight, record.domain_share)
            )
        },
        "mixer": {key: _number_or_none(value) for key, value in record.mixer_diagnostics.items()},
    }


def _check_per_domain(names: Sequence[str], **per_domain: Sequence[Any]) -> None:
    for name, values in per_domain.items():
        if len(values) != len(names):
            raise ValueError(f"{name} has {len(values)} entries for {len(names)} domains ({', '.join(names)})")


def _cut_partial_last_line(path: str) -> int:
    """Truncate a last line that has no newline (a run killed mid-write); returns the bytes dropped."""
    with open(path, "rb+") as file:
        end = file.seek(0, os.SEEK_END)
        keep, position = 0, end
        while position > 0:
            start = max(0, position - 4096)
            file.seek(start)
            newline = file.read(position - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        file.truncate(keep)
        return end - keep


def _open_tensorboard(directory: str, stream: TextIO) -> Any:
    """A SummaryWriter, or None after one line saying why TensorBoard is off and how to turn it on."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as error:  # a missing or broken tensorboard must not stop training
        print(
            f"TensorBoard logging to {directory} is off: torch.utils.tensorboard cannot be imported "
            f"({type(error).__name__}: {error}); install it with `pip install tensorboard`.",
            file=stream,
            flush=True,
        )
        return None
    return SummaryWriter(log_dir=directory)


class MetricsLogger:
    """Console, JSONL and TensorBoard logging on the logging rank; on every other rank, calls do nothing."""

    def __init__(
        self,
        domain_names: Sequence[str],
        *,
        jsonl_path: Union[str, os.PathLike],
        tensorboard_dir: Optional[Union[str, os.PathLike]] = None,
        train_iters: int,
        is_logging_rank: bool = True,
        stream: Optional[TextIO] = None,
        progress_stream: Optional[TextIO] = None,
    ) -> None:
        self.domain_names = list(domain_names)
        self.train_iters = train_iters
        self.is_logging_rank = is_logging_rank
        # Resolved now, not at import, so a redirected sys.stdout/sys.stderr is honoured.
        self._stream = stream if stream is not None else sys.stdout
        progress_stream = progress_stream if progress_stream is not None else sys.stderr
        self._progress_stream = progress_stream
        self._show_progress = is_logging_rank and progress_stream.isatty()
        self._progress: Optional[tqdm] = None
        self._start_iteration = 0
        self._jsonl: Optional[TextIO] = None
        self._tensorboard: Any = None
        if not is_logging_rank:
            return
        path = os.fspath(jsonl_path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if os.path.exists(path) and (dropped := _cut_partial_last_line(path)):
            self._print([f"{path}: dropped a half-written last line ({dropped} bytes) left by an interrupted run"])
        self._jsonl = open(path, "a", encoding="utf-8")
        if tensorboard_dir is not None:
            self._tensorboard = _open_tensorboard(os.fspath(tensorboard_dir), self._stream)

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def log_run(
        self, config: Union[Mapping[str, Any], argparse.Namespace], *, start_iteration: Optional[int] = None
    ) -> None:
        """Write the run header. `start_iteration`: the checkpoint's iteration when resuming (0 when fresh).

        Readers drop the records an interrupted run wrote after `start_iteration`; left None, they only
        keep the last record per iteration. The progress bar starts there.
        """
        if self._jsonl is None:
            return
        self._start_iteration = start_iteration or 0
        arguments = vars(config) if isinstance(config, argparse.Namespace) else config
        self._write(
            {
                "kind": "run",
                "time": datetime.now().astimezone().isoformat(timespec="seconds"),
                "start_iteration": start_iteration,
                "domains": self.domain_names,
                "config": _jsonable(arguments),
            }
        )

    def log_train(self, record: TrainRecord) -> None:
        """Print the Megatron line and the per-domain table, append the JSON record, add TensorBoard scalars."""
        if self._jsonl is None:
            return
        names = self.domain_names
        _check_per_domain(
            names,
            domain_loss=record.domain_loss,
            domain_weight=record.domain_weight,
            domain_share=record.domain_share,
            **record.domain_diagnostics,
        )
        table = format_domain_table(
            names,
            {
                "loss": [_cell(loss, ".4f") for loss in record.domain_loss],
                "weight": [_cell(weight, ".4f") for weight in record.domain_weight],
                "share": [_cell(share, ".4f") for share in record.domain_share],
                **{key: [_cell(_number_or_none(value), ".3g") for value in values] for key, values in record.domain_diagnostics.items()},
            },
        )
        mixer_line = " | ".join(f"{key}: {_cell(_number_or_none(value), '.3f')}" for key, value in record.mixer_diagnostics.items())
        self._print([format_train_line(record), *table, *([_TABLE_INDENT + mixer_line] if mixer_line else [])])
        data = _train_json(record, names)
        self._write(data)
        self._add_scalars(
            data["iteration"],
            {
                "lm-loss": data["lm_loss"],
                "learning-rate": data["lr"],
                "grad-norm": data["grad_norm"],
                "loss-scale": data["loss_scale"],
                "tokens-per-second": data["tokens_per_s"],
                **{f"domain-loss/{name}": values["loss"] for name, values in data["domains"].items()},
                **{f"domain-weight/{name}": values["weight"] for name, values in data["domains"].items()},
                **{f"domain-share/{name}": values["share"] for name, values in data["domains"].items()},
                **{
                    f"domain-{key.replace('_', '-')}/{name}": values[key]
                    for name, values in data["domains"].items()
                    for key in record.domain_diagnostics
                },
                **{f"mixer/{key.replace('_', '-')}": value for key, value in data["mixer"].items()},
            },
        )
        if self._progress is not None and data["lm_loss"] is not None:
            self._progress.set_postfix_str(f"lm loss {data['lm_loss']:.4f}")

    def log_eval(self, record: EvalRecord) -> None:
        """Print the validation block, append the JSON record (both means), add TensorBoard scalars."""
        if self._jsonl is None:
            return
        names = self.domain_names
        _check_per_domain(names, domain_loss=record.domain_loss, domain_tokens=record.domain_tokens)
        token_weighted, uniform = validation_means(record.domain_loss, record.domain_tokens)
        iteration = int(record.iteration)
        header = format_eval_header(iteration, token_weighted, uniform)
        rule = "-" * (len(header) + 1)
        table = format_domain_table(
            names,
            {
                "loss": [_cell(loss, ".4f") for loss in record.domain_loss],
                "corpus tokens": [str(int(tokens)) for tokens in record.domain_tokens],
            },
        )
        target_loss = record.target_loss or {}
        target_mean = _mean_or_none(target_loss.values())
        self._print([rule, header, *([format_target_line(target_loss, target_mean)] if target_loss else []), rule, *table])
        domains = {
            name: {"loss": _number_or_none(loss), "corpus_tokens": int(tokens)}
            for name, loss, tokens in zip(names, record.domain_loss, record.domain_tokens)
        }
        self._write(
            {
                "kind": "valid",
                "iteration": iteration,
                "lm_loss": _number_or_none(token_weighted),
                "lm_loss_uniform": _number_or_none(uniform),
                "domains": domains,
                **({"target_loss": _number_or_none(target_mean),
                    "targets": {name: {"loss": _number_or_none(loss)} for name, loss in target_loss.items()}} if target_loss else {}),
            }
        )
        self._add_scalars(
            iteration,
            {
                "validation/lm-loss-token-weighted": token_weighted,
                "validation/lm-loss-uniform-mean": uniform,
                **{f"validation/domain-loss/{name}": values["loss"] for name, values in domains.items()},
                **({"validation/target-loss-mean": target_mean} if target_loss else {}),
                **{f"validation/target-loss/{name}": loss for name, loss in target_loss.items()},
            },
        )

    def advance(self, n_iterations: int = 1) -> None:
        """Move the progress bar (shown only when stderr is a terminal) by `n_iterations`."""
        if not self._show_progress:
            return
        if self._progress is None:  # opened on first use, so a resumed run's bar starts where it resumed
            self._progress = tqdm(
                total=self.train_iters,
                initial=self._start_iteration,
                file=self._progress_stream,
                desc="training",
                unit="it",
                dynamic_ncols=True,
            )
        self._progress.update(n_iterations)

    def close(self) -> None:
        self._show_progress = False
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def _print(self, lines: Sequence[str]) -> None:
        text = "\n".join(lines)
        if self._progress is None:
            print(text, file=self._stream, flush=True)
            return
        with tqdm.external_write_mode(file=self._stream):  # clear the bar, print, redraw it
            print(text, file=self._stream, flush=True)

    def _write(self, data: Mapping[str, Any]) -> None:
        assert self._jsonl is not None
        self._jsonl.write(json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n")
        self._jsonl.flush()  # a killed run keeps every record logged so far

    def _add_scalars(self, iteration: int, scalars: Mapping[str, Optional[float]]) -> None:
        if self._tensorboard is None:
            return
        for tag, value in scalars.items():
            if value is not None:
                self._tensorboard.add_scalar(tag, value, iteration)
        self._tensorboard.flush()
