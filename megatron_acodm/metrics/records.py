"""What the trainer logs: one training interval, one evaluation, and their JSON records.

Records, one JSON object a line of the metrics file:
- `{"kind": "run", "time", "start_iteration", "domains": [names], "config": {run arguments}}`
- `{"kind": "train", "iteration", "train_iters", "consumed_samples", "elapsed_s", "iteration_ms", "lr",
  "lm_loss", "grad_norm", "loss_scale", "tokens_per_s", "global_batch_size", "skipped_iterations",
  "nan_iterations", "memory_allocated_mib", "max_memory_allocated_mib", "domains": {name: {"loss",
  "weight", "share", and the mixer's per-domain diagnostics, e.g. "score", "score_snr"}}, "mixer": {the
  mixer's scalar diagnostics, e.g. "critic_fit"}}`; the two memory fields are null off CUDA
- `{"kind": "valid", "iteration", "lm_loss" (weighted by corpus tokens), "lm_loss_uniform",
  "domains": {name: {"loss", "corpus_tokens"}}}`, and with target sets `"target_loss"` (their mean)
  and `"targets": {name: {"loss"}}`
Numbers that are not finite (and absent optional values) are written as null: the file is strict JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence


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
    # CUDA's caching allocator in MiB (torch.cuda.memory_allocated, max_memory_allocated: now and the
    # peak since the process started), the largest over the ranks; None off CUDA
    memory_allocated_mib: Optional[float] = None
    max_memory_allocated_mib: Optional[float] = None
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
    # The standard errors of those means over the evaluation's sequences (None below two sequences).
    domain_loss_se: Optional[Sequence[Optional[float]]] = None
    target_loss_se: Optional[dict[str, Optional[float]]] = None


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


def number_or_none(value: Any) -> Optional[float]:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def mean_or_none(values) -> Optional[float]:
    """The mean of the finite values; None when there is none."""
    finite = [number for number in map(number_or_none, values) if number is not None]
    return sum(finite) / len(finite) if finite else None


def jsonable(value: Any) -> Any:
    """`value` as JSON: containers recursively, numpy and torch values as numbers, anything else as str."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no inf/nan; keep what it was
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(item) for item in value), key=repr)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return jsonable(value.tolist())
    return str(value)


def train_json(record: TrainRecord, names: Sequence[str]) -> dict[str, Any]:
    return {
        "kind": "train",
        "iteration": int(record.iteration),
        "train_iters": int(record.train_iters),
        "consumed_samples": int(record.consumed_samples),
        "elapsed_s": number_or_none(record.elapsed_s),
        "iteration_ms": number_or_none(record.iteration_ms),
        "lr": number_or_none(record.lr),
        "lm_loss": number_or_none(record.lm_loss),
        "grad_norm": number_or_none(record.grad_norm),
        "loss_scale": number_or_none(record.loss_scale),
        "tokens_per_s": number_or_none(record.tokens_per_s),
        "global_batch_size": int(record.global_batch_size),
        "skipped_iterations": None if record.skipped_iterations is None else int(record.skipped_iterations),
        "nan_iterations": None if record.nan_iterations is None else int(record.nan_iterations),
        "memory_allocated_mib": number_or_none(record.memory_allocated_mib),
        "max_memory_allocated_mib": number_or_none(record.max_memory_allocated_mib),
        "domains": {
            name: {
                "loss": number_or_none(loss),
                "weight": number_or_none(weight),
                "share": number_or_none(share),
                **{key: number_or_none(values[index]) for key, values in record.domain_diagnostics.items()},
            }
            for index, (name, loss, weight, share) in enumerate(
                zip(names, record.domain_loss, record.domain_weight, record.domain_share)
            )
        },
        "mixer": {key: number_or_none(value) for key, value in record.mixer_diagnostics.items()},
    }


def check_per_domain(names: Sequence[str], **per_domain: Sequence[Any]) -> None:
    for name, values in per_domain.items():
        if len(values) != len(names):
            raise ValueError(f"{name} has {len(values)} entries for {len(names)} domains ({', '.join(names)})")
