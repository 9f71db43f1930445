"""Reading a run's metrics JSONL (written by `megatron_acodm.metrics.MetricsLogger`).

A resumed run appends to the same file: for each iteration the last record written wins, and a run
header with a `start_iteration` drops the records the interrupted run wrote after that iteration.
"""

from __future__ import annotations

import json
import os
from typing import Any, Union

from megatron_acodm.errors import UserError


def _parse_line(path: str, number: int, line: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}, line {number}: not a JSON record ({error.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}, line {number}: a record must be a JSON object")
    if data.get("kind") in ("train", "valid") and not isinstance(data.get("iteration"), int):
        raise UserError(f"{path}, line {number}: a {data['kind']} record needs an integer iteration")
    return data


def read_metrics(
    path: Union[str, os.PathLike],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(run headers, train records, eval records) of a metrics JSONL, records sorted by iteration.

    A resumed run appends to the file: for each iteration the last record written wins, and a run
    header with a `start_iteration` drops the records written after that iteration before it.
    Records of other kinds are skipped, so newer writers can add kinds.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.readlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such metrics file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read it ({error})") from None
    if not any(line.strip() for line in lines):
        raise UserError(f"{path}: the metrics file is empty")
    headers: list[dict[str, Any]] = []
    by_kind: dict[str, dict[int, dict[str, Any]]] = {"train": {}, "valid": {}}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        data = _parse_line(path, number, line)
        kind = data.get("kind")
        if kind == "run":
            headers.append(data)
            start = data.get("start_iteration")
            if isinstance(start, int):
                for records in by_kind.values():
                    for iteration in [iteration for iteration in records if iteration > start]:
                        del records[iteration]
        elif kind in by_kind:
            by_kind[kind][data["iteration"]] = data
    train, valid = by_kind["train"], by_kind["valid"]
    return headers, [train[i] for i in sorted(train)], [valid[i] for i in sorted(valid)]
