"""`--mixer schedule --mixing-schedule FILE`: the mixture of every step written down beforehand, a
curriculum or a final anneal, followed without a restart (the blender changes weights every step).

The file (JSON; YAML too when PyYAML is installed):

    {"interpolation": "linear",
     "points": [{"step": 0,    "weights": {"books": 1, "code": 1, "math": 1}},
                {"step": 8000, "weights": {"books": 1, "code": 3, "math": 4}}]}

Each point gives every domain a weight (normalised; a domain left out is an error, not a zero) at a
global step (0-based: the step about to be planned), or at a `"fraction"` of `--train-iters`.
Points are strictly increasing and within the run. Between two points the weights are held
(`"step"`: each point's until the next) or move linearly between the two normalised mixtures
(`"linear"`); before the first point and after the last, the nearest point's hold. The weights of
step t depend only on t and the file, so a resumed run follows the schedule exactly; the
checkpoint records the file's content hash, and resuming with another schedule is refused unless
`--override-mixing-schedule` says to follow the new one from the resumed step on.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy

from megatron_acodm.errors import UserError
from megatron_acodm.mixing.base import Mixer, run_length

INTERPOLATIONS = ("step", "linear")
_POINT_FIELDS = ("step", "fraction", "weights")
_FILE_FIELDS = ("interpolation", "points")


@dataclass(frozen=True)
class Schedule:
    """Normalised mixtures at increasing step positions, and how to go between them."""

    positions: tuple[float, ...]  # global steps (a fraction of the run lands between whole steps)
    mixtures: numpy.ndarray  # [points, K], each row a simplex
    interpolation: str
    digest: str  # sha256 of the file's bytes: what the checkpoint remembers

    def weights_at(self, step: int) -> numpy.ndarray:
        """The mixture of global step `step`."""
        after = bisect.bisect_right(self.positions, step)  # points at or before `step`: positions[:after]
        if after == 0:
            return self.mixtures[0].copy()
        if after == len(self.positions) or self.interpolation == "step":
            return self.mixtures[after - 1].copy()
        start, end = self.positions[after - 1], self.positions[after]
        share = (step - start) / (end - start)
        return (1.0 - share) * self.mixtures[after - 1] + share * self.mixtures[after]


def load_schedule(path: str, names: Sequence[str], train_iters: int) -> Schedule:
    """The schedule in `path` for a run over domains `names` of `train_iters` steps; one UserError
    naming the file and the fix for anything wrong in it."""
    document, digest = _read(path)

    def problem(what: str) -> UserError:
        return UserError(f"--mixing-schedule {path}: {what}")

    if not isinstance(document, dict) or not isinstance(document.get("points"), list) or not document["points"]:
        raise problem('expected an object with a non-empty "points" list, e.g. {"interpolation": "linear", "points": '
                      '[{"step": 0, "weights": {...}}]}')
    unknown = sorted(set(document) - set(_FILE_FIELDS))
    if unknown:
        raise problem(f"unknown field {unknown[0]!r}; a schedule holds {', '.join(map(repr, _FILE_FIELDS))}")
    interpolation = document.get("interpolation", "step")
    if interpolation not in INTERPOLATIONS:
        raise problem(f"interpolation {interpolation!r}: give one of {', '.join(map(repr, INTERPOLATIONS))}")
    positions, mixtures = [], []
    for number, point in enumerate(document["points"], start=1):
        position, mixture = _point(point, number, names, train_iters, problem)
        if positions and position <= positions[-1]:
            raise problem(f"point {number} is at step {position:g}, not after point {number - 1}'s {positions[-1]:g}; "
                          f"give the points in increasing order of step")
        positions.append(position)
        mixtures.append(mixture)
    return Schedule(tuple(positions), numpy.array(mixtures), interpolation, digest)


def _read(path: str) -> tuple[Any, str]:
    """The file's parsed content and the sha256 of its bytes."""
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
    except OSError as error:
        raise UserError(f"--mixing-schedule {path}: cannot be read ({error.strerror}); give the schedule file's path") from None
    digest = hashlib.sha256(raw).hexdigest()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UserError(f"--mixing-schedule {path}: reading YAML needs PyYAML (pip install pyyaml), or write the schedule as JSON") from None
        try:
            return yaml.safe_load(raw), digest
        except yaml.YAMLError as error:
            raise UserError(f"--mixing-schedule {path}: not valid YAML ({str(error).splitlines()[0]}); correct the file") from None
    try:
        return json.loads(raw), digest
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"--mixing-schedule {path}: not valid JSON ({error}); correct the file") from None


def _point(point: Any, number: int, names: Sequence[str], train_iters: int, problem: Callable[[str], UserError]) -> tuple[float, numpy.ndarray]:
    """(position, normalised mixture) of the `number`-th point."""
    if not isinstance(point, dict):
        raise problem(f"point {number} is {json.dumps(point)}, expected an object with \"step\" (or \"fraction\") and \"weights\"")
    unknown = sorted(set(point) - set(_POINT_FIELDS))
    if unknown:
        raise problem(f"point {number}: unknown field {unknown[0]!r}; a point holds \"step\" or \"fraction\", and \"weights\"")
    if ("step" in point) == ("fraction" in point):
        raise problem(f"point {number}: give either \"step\" (a global step) or \"fraction\" (of --train-iters), not {'both' if 'step' in point else 'neither'}")
    if "step" in point:
        step = point["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise problem(f"point {number}: step {json.dumps(step)} is not a whole number >= 0")
        if step > train_iters:
            raise problem(f"point {number}: step {step} is past the run (--train-iters {train_iters}); move it or lengthen the run")
        position = float(step)
    else:
        fraction = point["fraction"]
        if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0.0 <= fraction <= 1.0:
            raise problem(f"point {number}: fraction {json.dumps(fraction)} is outside [0, 1]")
        # Rounded so that a fraction written as k / T lands on step k exactly, not a hair after it.
        position = round(float(fraction) * train_iters, 9)
    return position, _mixture(point.get("weights"), number, names, problem)


def _mixture(weights: Any, number: int, names: Sequence[str], problem: Callable[[str], UserError]) -> numpy.ndarray:
    if not isinstance(weights, dict):
        raise problem(f"point {number}: \"weights\" must be an object of domain names and weights, e.g. {json.dumps({names[0]: 1})}")
    unknown = [name for name in weights if name not in names]
    missing = [name for name in names if name not in weights]
    if unknown:
        raise problem(f"point {number}: domain {unknown[0]!r} is not in --data-path, whose domains are {list(names)}")
    if missing:
        raise problem(f"point {number}: no weight for {missing}; give every domain a weight (0 for none)")
    values = [weights[name] for name in names]
    for name, value in zip(names, values):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise problem(f"point {number}: domain {name!r} has weight {json.dumps(value)}; give a number >= 0")
    total = float(sum(values))
    if not total > 0:
        raise problem(f"point {number}: its weights sum to zero; give at least one domain a positive weight")
    return numpy.array(values, dtype=numpy.float64) / total


class ScheduleMixer(Mixer):
    """Follows a `Schedule`; see the module's docstring."""

    def __init__(self, names: Sequence[str], schedule: Schedule, path: str, *, override: bool = False, floor: float = 0.0):
        super().__init__(names, schedule.weights_at(0), floor)
        self.schedule, self.path, self.override = schedule, path, override
        self.step = 0  # the global step whose weights come next
        self._replaced: Optional[str] = None  # the checkpoint's schedule, when --override-mixing-schedule replaced it

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument(
            "--mixing-schedule",
            default=None,
            metavar="FILE",
            help="schedule mixer: the mixture at chosen steps (JSON, or YAML with PyYAML), held or linear between them",
        )
        group.add_argument(
            "--override-mixing-schedule",
            action="store_true",
            help="schedule mixer: on resume, follow --mixing-schedule from the resumed step although the checkpoint's differs",
        )

    @classmethod
    def from_args(cls, *, names: Sequence[str], args: argparse.Namespace, **_: Any) -> Mixer:
        if args.mixing_schedule is None:
            raise UserError("--mixer schedule needs --mixing-schedule FILE: the mixture at chosen steps")
        total = run_length(args, "schedule", "a point may be a fraction of the run")
        schedule = load_schedule(args.mixing_schedule, names, total)
        return cls(names, schedule, args.mixing_schedule, override=args.override_mixing_schedule, floor=args.mixing_floor)

    def _policy(self) -> numpy.ndarray:
        return self.schedule.weights_at(self.step)

    def _update(self, signals) -> None:
        self.step = signals.step + 1

    def resume_at(self, step: int, log: Callable[[str], None]) -> None:
        self.step = step
        if self._replaced is not None:
            log(f"--override-mixing-schedule: following {self.path} from step {step} on (the checkpoint's schedule "
                f"had sha256 {self._replaced[:12]}...)")

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "schedule_sha256": self.schedule.digest}

    def _load_state(self, state: dict[str, Any]) -> None:
        if state["schedule_sha256"] != self.schedule.digest:
            if not self.override:
                raise UserError(
                    f"--mixing-schedule {self.path}: the checkpoint followed another schedule (sha256 "
                    f"{state['schedule_sha256'][:12]}..., this file's {self.schedule.digest[:12]}...); resume with that "
                    f"file, or pass --override-mixing-schedule to follow this one from the resumed step on"
                )
            self._replaced = state["schedule_sha256"]
        self.step = int(state["step"])
