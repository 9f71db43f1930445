"""The mixture a run followed, from its metrics file, as a schedule another run can replay
(`--mixer schedule`), or with one phase as a static blend (`--data-path`, `--mixer static`).

Each train record of the metrics file covers the steps since the record before it: its mixture
there is the mixer's logged weights (`weights`) or the shares of samples actually drawn (`shares`).
A point starts wherever that mixture changes (at most one per record), placed at a fraction of the
run (its first step over the steps logged), so a schedule learned on a short proxy run stretches
over a longer target run. With `phases` the run is cut into that many phases of equal length, each
the mean mixture over its steps.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy

from megatron_acodm.data.manifest import Manifest, parse_data_path
from megatron_acodm.errors import UserError
from megatron_acodm.metrics.reader import read_metrics

SOURCES = ("weights", "shares")
_FIELD = {"weights": "weight", "shares": "share"}


def followed_mixture(metrics_path: str, source: str) -> tuple[list[str], numpy.ndarray]:
    """The domains and, for every step logged (0-based), the mixture of `source`: [steps, K]."""
    headers, train, _ = read_metrics(metrics_path)
    domain_sets = {tuple(header["domains"]) for header in headers if "domains" in header}
    domain_sets |= {tuple(record["domains"]) for record in train}
    if len(domain_sets) != 1:
        sets = " and ".join(str(list(names)) for names in sorted(domain_sets))
        raise UserError(f"{metrics_path}: holds runs over different domain sets ({sets}); export from the metrics of one domain set")
    if not train:
        raise UserError(f"{metrics_path}: no train records to export; export from a run that logged at least one")
    names = list(next(iter(domain_sets)))
    rows, previous = [], 0
    for record in train:
        mixture = [record["domains"][name][_FIELD[source]] for name in names]
        if any(value is None for value in mixture):
            raise UserError(f"{metrics_path}: the record of iteration {record['iteration']} has no {source}; export from a complete file")
        rows += [mixture] * (record["iteration"] - previous)
        previous = record["iteration"]
    return names, numpy.array(rows, dtype=numpy.float64)


def _phases(per_step: numpy.ndarray, phases: Optional[int]) -> list[tuple[float, numpy.ndarray]]:
    """(fraction of the run where it starts, mixture) of each point: one per change of mixture, or
    `phases` equal phases each the mean of its steps."""
    steps = len(per_step)
    if phases is None:
        starts = [0] + [step for step in range(1, steps) if not numpy.array_equal(per_step[step], per_step[step - 1])]
        return [(start / steps, per_step[start]) for start in starts]
    if not 1 <= phases <= steps:
        raise UserError(f"--phases {phases}: give a number of phases between 1 and the {steps} steps the run logged")
    bounds = numpy.round(numpy.linspace(0, steps, phases + 1)).astype(int)  # whole steps: a replay's boundaries are the same
    return [(int(start) / steps, per_step[start:end].mean(axis=0)) for start, end in zip(bounds[:-1], bounds[1:])]


def schedule_document(metrics_path: str, source: str = "weights", phases: Optional[int] = None) -> dict[str, Any]:
    """The schedule file's content: points at fractions of the run, held until the next point."""
    names, per_step = followed_mixture(metrics_path, source)
    points = [{"fraction": fraction, "weights": dict(zip(names, map(float, mixture / mixture.sum())))}
              for fraction, mixture in _phases(per_step, phases)]
    return {"interpolation": "step", "points": points}


def blend_manifest(metrics_path: str, output: str, source: str = "weights") -> Manifest:
    """The run's mean mixture over its steps as a blend over its corpus (the domains of its --data-path),
    to be saved at `output`: its provenance names the metrics file relative to the blend's folder, as
    the blend's prefixes are, so that the two move together and the blend's bytes do not say where they lie."""
    names, per_step = followed_mixture(metrics_path, source)
    headers, _, _ = read_metrics(metrics_path)
    data_path = headers[-1].get("config", {}).get("data_path")
    if not data_path:
        raise UserError(f"{metrics_path}: its run header names no --data-path; a blend needs the corpus's files")
    corpus = parse_data_path(data_path)
    if corpus.names != names:
        raise UserError(f"{metrics_path}: the run's --data-path now holds domains {corpus.names}, the run trained on {names}; "
                        f"export from the corpus the run used")
    mean = per_step.mean(axis=0)
    metrics = os.path.relpath(os.path.abspath(metrics_path), os.path.dirname(os.path.abspath(output)))
    provenance = {"method": f"mean {source} of a run (tools/export_schedule.py)", "metrics": metrics, "steps": len(per_step)}
    return corpus.with_weights(dict(zip(names, map(float, mean / mean.sum()))), provenance)
