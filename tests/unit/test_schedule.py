"""Mixture schedules: the weights at and between points against hand computations, the counts drawn
across a phase change, every bad file refused in one line, resuming under the same or another
schedule, and a run's mixture exported as a schedule or a blend."""

from __future__ import annotations

import io
import json
import os

import numpy
import pytest

from megatron_acodm.data.apportion import apportion
from megatron_acodm.errors import UserError
from megatron_acodm.metrics import EvalRecord, MetricsLogger, TrainRecord
from megatron_acodm.mixing import MIXERS, build_mixer
from megatron_acodm.mixing.schedule import ScheduleMixer, load_schedule
from megatron_acodm.mixing.schedule_export import blend_manifest, schedule_document
from mixer_states import mixer_args, through_checkpoint

NAMES = ["books", "code", "math"]


def write(tmp_path, document, name: str = "schedule.json") -> str:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def points(*entries) -> dict:
    """`("step", 0, [1, 1, 1])`-style entries as a schedule's points."""
    return {"points": [{key: at, "weights": dict(zip(NAMES, weights))} for key, at, weights in entries]}


def test_linear_moves_between_the_normalised_mixtures_and_holds_outside(tmp_path):
    path = write(tmp_path, {"interpolation": "linear", **points(("step", 2, [1, 1, 1]), ("step", 10, [1, 3, 4]))})
    schedule = load_schedule(path, NAMES, train_iters=20)
    first, last = numpy.full(3, 1 / 3), numpy.array([1, 3, 4]) / 8
    for step in (0, 1, 2):  # before the first point: the first point's mixture
        assert numpy.array_equal(schedule.weights_at(step), first)
    assert schedule.weights_at(4) == pytest.approx(0.75 * first + 0.25 * last, rel=1e-15)  # a quarter of the way
    assert schedule.weights_at(6) == pytest.approx([(1 / 3 + 1 / 8) / 2, (1 / 3 + 3 / 8) / 2, (1 / 3 + 4 / 8) / 2], rel=1e-15)
    for step in (10, 11, 19):
        assert numpy.array_equal(schedule.weights_at(step), last)


def test_step_holds_each_point_until_the_next_and_fractions_name_steps_of_the_run(tmp_path):
    path = write(tmp_path, points(("step", 0, [1, 0, 0]), ("fraction", 0.7, [0, 1, 1]), ("fraction", 1.0, [0, 0, 2])))
    schedule = load_schedule(path, NAMES, train_iters=10)
    assert schedule.interpolation == "step" and schedule.positions == (0.0, 7.0, 10.0)  # 0.7 * 10 lands on step 7 exactly
    assert [schedule.weights_at(step).tolist() for step in (0, 6, 7, 9, 10)] == [
        [1, 0, 0], [1, 0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5], [0, 0, 1]
    ]
    # On a run of 40 steps the same file is four times as long.
    assert load_schedule(path, NAMES, train_iters=40).positions == (0.0, 28.0, 40.0)


def test_the_counts_drawn_follow_the_schedule_across_a_phase_change(tmp_path):
    schedule = load_schedule(write(tmp_path, points(("step", 0, [6, 1, 1]), ("step", 9, [1, 1, 6]))), NAMES, train_iters=20)
    carry, counts, targets = numpy.zeros(3), numpy.zeros(3), numpy.zeros(3)
    for step in range(20):
        weights = schedule.weights_at(step)
        drawn, carry = apportion(carry, weights, 10)
        counts, targets = counts + drawn, targets + 10 * weights
        # K = 3: the carried remainders keep every count within one sample of its target at every step.
        assert numpy.abs(counts - targets).max() < 1.0, step


BAD_FILES = [
    ("unknown-domain", {"points": [{"step": 0, "weights": {"books": 1, "code": 1, "math": 1, "legal": 1}}]},
     "point 1: domain 'legal' is not in --data-path, whose domains are ['books', 'code', 'math']"),
    ("missing-domain", {"points": [{"step": 0, "weights": {"books": 1, "code": 1}}]},
     "point 1: no weight for ['math']; give every domain a weight (0 for none)"),
    ("out-of-order", points(("step", 5, [1, 1, 1]), ("step", 5, [1, 2, 1])),
     "point 2 is at step 5, not after point 1's 5; give the points in increasing order of step"),
    ("past-the-run", points(("step", 0, [1, 1, 1]), ("step", 25, [1, 2, 1])),
     "point 2: step 25 is past the run (--train-iters 20); move it or lengthen the run"),
    ("negative-weight", points(("step", 0, [1, -1, 1])), "point 1: domain 'code' has weight -1; give a number >= 0"),
    ("zero-sum", points(("step", 0, [0, 0, 0])), "point 1: its weights sum to zero; give at least one domain a positive weight"),
    ("fraction-outside", points(("fraction", 1.5, [1, 1, 1])), "point 1: fraction 1.5 is outside [0, 1]"),
    ("both-step-and-fraction", {"points": [{"step": 0, "fraction": 0.0, "weights": dict(zip(NAMES, [1, 1, 1]))}]},
     'point 1: give either "step" (a global step) or "fraction" (of --train-iters), not both'),
    ("interpolation", {"interpolation": "cubic", **points(("step", 0, [1, 1, 1]))}, "interpolation 'cubic': give one of 'step', 'linear'"),
    ("misspelled-field", {"pionts": []}, 'expected an object with a non-empty "points" list'),
    ("not-json", "{points: [", "not valid JSON"),
]


@pytest.mark.parametrize("document, message", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_a_bad_schedule_is_one_line_naming_the_file(tmp_path, document, message):
    path = write(tmp_path, document)
    with pytest.raises(UserError) as raised:
        load_schedule(path, NAMES, train_iters=20)
    assert str(raised.value).startswith(f"--mixing-schedule {path}: {message}") and "\n" not in str(raised.value)


def test_an_unreadable_or_yaml_schedule(tmp_path):
    with pytest.raises(UserError, match=r"--mixing-schedule .*missing.json: cannot be read \(No such file or directory\)"):
        load_schedule(str(tmp_path / "missing.json"), NAMES, train_iters=20)
    yaml_path = write(tmp_path, "interpolation: linear\npoints:\n  - {step: 0, weights: {books: 1, code: 1, math: 2}}\n", "schedule.yaml")
    assert load_schedule(yaml_path, NAMES, train_iters=20).weights_at(3).tolist() == [0.25, 0.25, 0.5]


def _mixer(path: str, *extra: str) -> ScheduleMixer:
    return build_mixer("schedule", names=NAMES, initial_weights=[1, 1, 1],
                       args=mixer_args("--mixer", "schedule", "--mixing-schedule", path, *extra, train_iters=20))


def test_the_mixer_follows_the_global_step_it_resumes_at(tmp_path):
    path = write(tmp_path, {"interpolation": "linear", **points(("step", 0, [1, 0, 0]), ("step", 10, [0, 0, 1]))})
    mixer = _mixer(path, "--mixing-floor", "0.01")
    mixer.resume_at(4, print)  # a mixer new to a run resumed at step 4 (another mixer wrote the checkpoint)
    assert mixer.weights() == pytest.approx(0.97 * numpy.array([0.6, 0, 0.4]) + 0.01, rel=1e-15)
    restored = _mixer(path, "--mixing-floor", "0.01")
    restored.load_state_dict(through_checkpoint(mixer.state_dict()))
    assert numpy.array_equal(restored.weights(), mixer.weights())


def test_another_schedule_on_resume_is_refused_unless_overridden(tmp_path):
    state = through_checkpoint(_mixer(write(tmp_path, points(("step", 0, [1, 1, 1])))).state_dict())
    other = write(tmp_path, points(("step", 0, [1, 2, 1])), "other.json")
    with pytest.raises(UserError, match=f"--mixing-schedule {other}: the checkpoint followed another schedule .* "
                                        "pass --override-mixing-schedule to follow this one from the resumed step on"):
        _mixer(other).load_state_dict(state)
    overriding = _mixer(other, "--override-mixing-schedule")
    overriding.load_state_dict(state)
    lines = []
    overriding.resume_at(7, lines.append)
    assert lines == [f"--override-mixing-schedule: following {other} from step 7 on (the checkpoint's schedule had sha256 "
                     f"{state['schedule_sha256'][:12]}...)"]
    assert overriding.weights() == pytest.approx([0.25, 0.5, 0.25])


def test_schedule_is_registered_and_needs_its_file():
    assert MIXERS["schedule"] is ScheduleMixer
    with pytest.raises(UserError, match="--mixer schedule needs --mixing-schedule FILE"):
        build_mixer("schedule", names=NAMES, initial_weights=[1, 1, 1], args=mixer_args("--mixer", "schedule"))


# ------------------------------------------------------------------------------------------ export


def _metrics(tmp_path, weights_per_record, iterations, corpus="domains.json", names=NAMES) -> str:
    """A metrics file whose train records (ending at `iterations`) logged these weights and, as shares, their reverse."""
    path = str(tmp_path / "metrics.jsonl")
    with MetricsLogger(names, jsonl_path=path, train_iters=iterations[-1], stream=io.StringIO()) as logger:
        logger.log_run({"data_path": [corpus]}, start_iteration=0)
        for iteration, weights in zip(iterations, weights_per_record):
            logger.log_train(TrainRecord(iteration, iterations[-1], iteration * 8, 1.0, 1.0, 1e-3, 5.0, 1.0, 100.0, 8,
                                         [5.0] * len(names), weights, list(reversed(weights))))
        logger.log_eval(EvalRecord(iterations[-1], [5.0] * len(names), [100] * len(names)))
    return path


def test_a_run_is_exported_as_points_where_its_mixture_changes_at_fractions_of_the_run(tmp_path):
    weights = [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]]
    metrics = _metrics(tmp_path, weights, [2, 4, 6, 10])  # log records covering steps 0-1, 2-3, 4-5, 6-9
    document = schedule_document(metrics, "weights")
    assert document["interpolation"] == "step"
    assert [point["fraction"] for point in document["points"]] == [0.0, 0.4, 0.6]
    numpy.testing.assert_allclose([list(point["weights"].values()) for point in document["points"]], [weights[0], weights[2], weights[3]], rtol=1e-12)
    shares = schedule_document(metrics, "shares")
    assert list(shares["points"][0]["weights"].values()) == pytest.approx([0.25, 0.25, 0.5])
    # Two phases of five steps: the mean over steps 0-4 and over 5-9, each step weighing alike.
    halves = schedule_document(metrics, "weights", phases=2)
    first = (4 * numpy.array(weights[0]) + numpy.array(weights[2])) / 5
    second = (numpy.array(weights[2]) + 4 * numpy.array(weights[3])) / 5
    assert [point["fraction"] for point in halves["points"]] == [0.0, 0.5]
    numpy.testing.assert_allclose([list(point["weights"].values()) for point in halves["points"]], [first, second], rtol=1e-12)
    # Replayed on a run of the same length, the schedule gives each step the weights it logged.
    schedule = load_schedule(write(tmp_path, document), NAMES, train_iters=10)
    per_step = [weights[0]] * 4 + [weights[2]] * 2 + [weights[3]] * 4
    numpy.testing.assert_allclose([schedule.weights_at(step) for step in range(10)], per_step, rtol=1e-12)
    with pytest.raises(UserError, match="--phases 11: give a number of phases between 1 and the 10 steps the run logged"):
        schedule_document(metrics, "weights", phases=11)


def test_one_phase_is_the_mean_mixture_as_a_blend_and_another_domain_set_is_refused(tmp_path, preprocessed_corpus):
    names = ["code", "multilingual", "prose"]
    metrics = _metrics(tmp_path, [[0.6, 0.2, 0.2], [0.2, 0.2, 0.6]], [1, 4], corpus=preprocessed_corpus, names=names)
    blend = blend_manifest(metrics, str(tmp_path / "blends" / "mean.json"), "weights")
    assert [domain.weight for domain in blend.domains] == pytest.approx([0.3, 0.2, 0.5])  # (0.6 + 3 x 0.2) / 4, ...
    assert blend.names == names and blend.provenance["steps"] == 4
    # the metrics file is named from the blend's folder, as its prefixes are: the blend names no machine's path
    assert blend.provenance["metrics"] == os.path.join("..", os.path.relpath(metrics, tmp_path))
    with open(metrics, "a") as stream:  # a resumed run on other domains, appended to the same file
        stream.write(json.dumps({"kind": "run", "start_iteration": 4, "domains": ["code", "prose"], "config": {}}) + "\n")
    with pytest.raises(UserError, match=r"holds runs over different domain sets \(\['code', 'multilingual', 'prose'\] and \['code', 'prose'\]\)"):
        schedule_document(metrics)
