"""Training and validation logs on the logging rank: the console, the metrics JSONL, TensorBoard and
Weights & Biases (`weights_and_biases`). The trainer's logging rank is the last one, where Megatron-LM
prints its training log and writes TensorBoard and W&B.

The JSONL file (`records` describes it) is what plots and benchmarks read (`metrics.reader`). Every
record carries its iteration, and a resumed run appends to the same file, after a run header
naming the iteration it resumed from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any, Mapping, Optional, Sequence, TextIO, Union

from tqdm import tqdm

from megatron_acodm.metrics.console import (
    TABLE_INDENT,
    cell,
    format_domain_table,
    format_eval_header,
    format_target_line,
    format_train_line,
)
from megatron_acodm.metrics.records import (
    EvalRecord,
    TrainRecord,
    check_per_domain,
    jsonable,
    mean_or_none,
    number_or_none,
    train_json,
    validation_means,
)
from megatron_acodm.metrics.weights_and_biases import WandbRun, open_wandb, wandb_run


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
    """Console, JSONL, TensorBoard and W&B logging on the logging rank; on every other rank, calls do nothing."""

    def __init__(
        self,
        domain_names: Sequence[str],
        *,
        jsonl_path: Union[str, os.PathLike],
        tensorboard_dir: Optional[Union[str, os.PathLike]] = None,
        wandb: Optional[WandbRun] = None,
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
        self._wandb: Any = None
        if not is_logging_rank:
            return
        path = os.fspath(jsonl_path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if os.path.exists(path) and (dropped := _cut_partial_last_line(path)):
            self._print([f"{path}: dropped a half-written last line ({dropped} bytes) left by an interrupted run"])
        self._jsonl = open(path, "a", encoding="utf-8")
        if tensorboard_dir is not None:
            self._tensorboard = _open_tensorboard(os.fspath(tensorboard_dir), self._stream)
        if wandb is not None:
            self._wandb = open_wandb(wandb)

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
        if self._wandb is not None:  # Megatron-LM's W&B config: the run's arguments
            self._wandb.config.update(jsonable(arguments), allow_val_change=True)
        self._write(
            {
                "kind": "run",
                "time": datetime.now().astimezone().isoformat(timespec="seconds"),
                "start_iteration": start_iteration,
                "domains": self.domain_names,
                "config": jsonable(arguments),
            }
        )

    def log_train(self, record: TrainRecord) -> None:
        """Print the Megatron line and the per-domain table, append the JSON record, add TensorBoard and W&B scalars."""
        if self._jsonl is None:
            return
        names = self.domain_names
        check_per_domain(
            names,
            domain_loss=record.domain_loss,
            domain_weight=record.domain_weight,
            domain_share=record.domain_share,
            **record.domain_diagnostics,
        )
        table = format_domain_table(
            names,
            {
                "loss": [cell(loss, ".4f") for loss in record.domain_loss],
                "weight": [cell(weight, ".4f") for weight in record.domain_weight],
                "share": [cell(share, ".4f") for share in record.domain_share],
                **{key: [cell(number_or_none(value), ".3g") for value in values] for key, values in record.domain_diagnostics.items()},
            },
        )
        mixer_line = " | ".join(f"{key}: {cell(number_or_none(value), '.3f')}" for key, value in record.mixer_diagnostics.items())
        self._print([format_train_line(record), *table, *([TABLE_INDENT + mixer_line] if mixer_line else [])])
        data = train_json(record, names)
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
        """Print the validation block, append the JSON record (both means), add TensorBoard and W&B scalars."""
        if self._jsonl is None:
            return
        names = self.domain_names
        check_per_domain(names, domain_loss=record.domain_loss, domain_tokens=record.domain_tokens)
        token_weighted, uniform = validation_means(record.domain_loss, record.domain_tokens)
        iteration = int(record.iteration)
        header = format_eval_header(iteration, token_weighted, uniform)
        rule = "-" * (len(header) + 1)
        errors = record.domain_loss_se if record.domain_loss_se is not None else [None] * len(names)
        table = format_domain_table(
            names,
            {
                "loss": [cell(loss, ".4f") for loss in record.domain_loss],
                "std err": [cell(error, ".4f") for error in errors],
                "corpus tokens": [str(int(tokens)) for tokens in record.domain_tokens],
            },
        )
        target_loss = record.target_loss or {}
        target_mean = mean_or_none(target_loss.values())
        self._print([rule, header, *([format_target_line(target_loss, target_mean)] if target_loss else []), rule, *table])
        domains = {
            name: {"loss": number_or_none(loss), "loss_se": number_or_none(error), "corpus_tokens": int(tokens)}
            for name, loss, error, tokens in zip(names, record.domain_loss, errors, record.domain_tokens)
        }
        self._write(
            {
                "kind": "valid",
                "iteration": iteration,
                "lm_loss": number_or_none(token_weighted),
                "lm_loss_uniform": number_or_none(uniform),
                "domains": domains,
                **({"target_loss": number_or_none(target_mean),
                    "targets": {name: {"loss": number_or_none(loss), "loss_se": number_or_none((record.target_loss_se or {}).get(name))}
                                for name, loss in target_loss.items()}} if target_loss else {}),
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
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
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
        measured = {tag: value for tag, value in scalars.items() if value is not None}
        if self._tensorboard is not None:
            for tag, value in measured.items():
                self._tensorboard.add_scalar(tag, value, iteration)
            self._tensorboard.flush()
        if self._wandb is not None:  # an iteration's training and evaluation scalars share its row
            self._wandb.log(measured, step=iteration)


def run_logger(args: argparse.Namespace, domain_names: Sequence[str]) -> MetricsLogger:
    """The trainer's logger, writing on the last rank (every rank holds the same all-reduced numbers)."""
    import torch

    return MetricsLogger(
        domain_names,
        jsonl_path=args.metrics_path,
        tensorboard_dir=args.tensorboard_dir,
        wandb=wandb_run(args),
        train_iters=args.train_iters,
        is_logging_rank=torch.distributed.get_rank() == torch.distributed.get_world_size() - 1,
    )
