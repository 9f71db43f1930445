"""Every registered mixer in real runs of pretrain_acodm.py: the mixture it trained on is the one it
reported, a run resumed from a checkpoint mid-run repeats the run that never stopped, and a mixer
trains bit for bit as a run of the same seed with the same weights (a static run sharing its first
weights, or its own mixture replayed as a schedule): it adds nothing to training but its weights.

These keep the benchmarks' comparisons meaningful: a mixer is judged by the weights it logged, so
the samples each step drew must follow them (within the apportionment bound of docs/DESIGN.md),
and two runs of one seed are paired only if nothing but the weights differs between them.

Each mixer trains a tiny GPT for 8 steps, logging every step and saving every 4; for a mixer with
state, a copy of its folder resumes from step 4. Schedules are shrunk so that every online mixer moves within 8 steps.
"""

from __future__ import annotations

import json
import shutil

import numpy
import pytest
import torch

import trainer_runs as runs
from megatron_acodm.data import parse_data_path
from megatron_acodm.mixing import MIXERS
from megatron_acodm.mixing.importance import importance_weights, steering_examples
from megatron_acodm.mixing.schedule import load_schedule

STEPS, RESUMED_AT, GLOBAL_BATCH = 8, 4, 8
TEMPERATURE = 3.0
# Over the run a domain's count stays within this of its cumulative target sum_t w_t G: below 1 after
# every step for K <= 3 (docs/DESIGN.md, "One global step"); 1.2 is the bound measured for any K.
APPORTIONMENT_BOUND = 1.2
TIMING_FIELDS = ("elapsed_s", "iteration_ms", "tokens_per_s")  # clocks: a rerun may change them
# Options that make each mixer move within 8 steps; `{target}`: a target set of code-like documents,
# `{schedule}`: a schedule with a phase change at step 3, before the checkpoint the copy resumes from.
OPTIONS = {
    "static": [],
    "uniform": [],
    "temperature": ["--mixing-temperature", str(TEMPERATURE)],
    "odm": [],
    "ado": ["--ado-fit-interval", "1", "--ado-warmup-fraction", "0.1"],
    "aioli": ["--aioli-rounds", "2", "--aioli-sweeps", "1", "--aioli-segment-steps", "1"],
    # The published method's networks at a width that trains in seconds.
    "acodm": ["--acodm-hidden", "64"],
    "dga": ["--target-data-path", "{target}", "--dga-interval", "2", "--dga-step-size", "20"],
    "importance": ["--target-data-path", "{target}"],
    "schedule": ["--mixing-schedule", "{schedule}"],
}
RUNS = [*MIXERS, "acodm_proxy"]  # every registered mixer (at its defaults unless named above), and AC-ODM's frozen actor
MOVING = ("odm", "ado", "aioli", "acodm", "acodm_proxy", "dga", "schedule")  # online mixers whose weights move within the run
# The run whose weights each mixer's first steps share at its defaults: ODM, ADO and AC-ODM start from
# the token-proportional prior (static's blend), DGA from uniform, and the schedule holds uniform for
# its first 3 steps. Aioli and importance start elsewhere: their replays stand in. (AC-ODM's run here
# gives every domain no minimum share; its proxy keeps the default one micro-batch each, and so
# other counts than static's.)
SAME_START = {"odm": "static", "ado": "static", "acodm": "static", "dga": "uniform", "schedule": "uniform"}
REPLAYED = ("aioli", "importance")  # ODM's first steps are static's (SAME_START)
# The mixers that carry state from step to step, and so must resume it: the others' weights are a
# function of the step (schedule) or fixed, and the trainer's own resume is tested in test_trainer.py.
RESUMED = tuple(name for name in RUNS if name not in ("static", "uniform", "temperature", "importance"))


def _arguments(name: str, corpus: str, inputs: dict, tokenizer_model: str, save) -> list[str]:
    mixer = "acodm" if name == "acodm_proxy" else name
    options = [word.format(**inputs) for word in OPTIONS.get(mixer, [])]
    if name == "acodm":  # each run exports its actor beside its checkpoints
        options += ["--acodm-export-policy", str(save / "policy.pt"), "--min-samples-per-domain", "0"]
    if name == "acodm_proxy":
        options += ["--acodm-policy", str(save.parent / "acodm" / "policy.pt")]
    return runs.arguments(corpus, tokenizer_model, str(save), "--train-iters", str(STEPS), "--save-interval", str(RESUMED_AT),
                          "--eval-interval", str(STEPS), "--seed", "7", "--mixer", mixer, *options)


@pytest.fixture(scope="module")
def mixer_runs(tmp_path_factory, preprocessed_corpus, target_set, schedule_file, tokenizer_model):
    """`mixer_runs(name)`: the train records of its run and its folder; `mixer_runs(name, resumed=True)`:
    those of a copy of the folder resumed at step 4."""
    root = tmp_path_factory.mktemp("mixer_runs")
    inputs = {"target": target_set, "schedule": schedule_file}
    done: dict[tuple[str, bool], tuple] = {}

    def records(name: str, resumed: bool = False):
        if (name, resumed) not in done:
            save = root / name
            if resumed:
                records(name)
                save = root / f"{name}-resumed"
                shutil.copytree(root / name, save)
                (save / "latest_checkpointed_iteration.txt").write_text(str(RESUMED_AT))
            elif name == "acodm_proxy":
                records("acodm")  # its policy drives the proxy
            runs.train(root, _arguments(name, preprocessed_corpus, inputs, tokenizer_model, save) + (["--load", str(save)] if resumed else []))
            done[(name, resumed)] = (runs.losses(str(save))[2], save)
        return done[(name, resumed)]

    return records


def _without_clocks(records):
    return [{key: value for key, value in record.items() if key not in TIMING_FIELDS} for record in records]


@pytest.mark.parametrize("name", RESUMED)
def test_a_run_resumed_mid_run_repeats_the_run_that_never_stopped(mixer_runs, name):
    original, resumed = mixer_runs(name)[0], mixer_runs(name, resumed=True)[0]
    assert [record["iteration"] for record in resumed] == list(range(1, STEPS + 1))
    assert _without_clocks(resumed) == _without_clocks(original)  # losses, grad norms, weights, shares, scores


@pytest.mark.parametrize("name", RUNS)
def test_the_samples_drawn_follow_the_weights_reported(mixer_runs, preprocessed_corpus, target_set, schedule_file, name):
    train = mixer_runs(name)[0]
    names = list(train[0]["domains"])
    weights = numpy.array([[record["domains"][domain]["weight"] for domain in names] for record in train])
    counts = numpy.array([[record["domains"][domain]["share"] for domain in names] for record in train]) * GLOBAL_BATCH
    assert numpy.allclose(counts, numpy.round(counts), atol=1e-9), "a share is not a whole number of samples"
    counts = numpy.round(counts)
    assert numpy.all(counts.sum(axis=1) == GLOBAL_BATCH)
    assert numpy.all(weights >= 0) and numpy.allclose(weights.sum(axis=1), 1.0)
    deviation = numpy.abs(numpy.cumsum(counts, axis=0) - numpy.cumsum(weights * GLOBAL_BATCH, axis=0))
    assert deviation.max() < APPORTIONMENT_BOUND, f"{name}: a count strayed {deviation.max():.3f} samples from its target"

    with open(preprocessed_corpus, encoding="utf-8") as stream:
        tokens_of = {domain["name"]: domain["tokens"] for domain in json.load(stream)["domains"]}
    tokens = numpy.array([tokens_of[domain] for domain in names], float)
    prefixes = [domain.prefix for domain in parse_data_path([preprocessed_corpus]).domains]
    schedule = load_schedule(schedule_file, names, STEPS)
    fixed = {
        "schedule": numpy.array([schedule.weights_at(step) for step in range(STEPS)]),
        "static": tokens / tokens.sum(),
        "uniform": numpy.full(len(names), 1.0 / len(names)),
        "temperature": tokens ** (1 / TEMPERATURE) / (tokens ** (1 / TEMPERATURE)).sum(),
        "importance": importance_weights(prefixes, steering_examples([target_set], "50,50")),
    }
    if name in fixed:
        expected = fixed[name] if fixed[name].ndim == 2 else numpy.tile(fixed[name], (STEPS, 1))
        numpy.testing.assert_allclose(weights, expected, rtol=1e-9, atol=1e-12)
    if name in MOVING:
        assert numpy.ptp(weights, axis=0).max() > 1e-3, f"{name}'s weights never moved"


@pytest.mark.parametrize("name", SAME_START)
def test_a_mixer_trains_exactly_as_the_static_run_with_its_first_weights(mixer_runs, name):
    """Same seed, same weights: the same model, batches and dropout, so the same numbers, bit for bit,
    for every step until the weights part (the mixer draws nothing from the run's generators)."""
    records, reference = mixer_runs(name)[0], mixer_runs(SAME_START[name])[0]
    same = 0
    for record, other in zip(records, reference):
        if [domain["weight"] for domain in record["domains"].values()] != pytest.approx(
                [domain["weight"] for domain in other["domains"].values()], rel=1e-15, abs=0):
            break
        assert (record["lm_loss"], record["grad_norm"]) == (other["lm_loss"], other["grad_norm"]), record["iteration"]
        assert [domain["loss"] for domain in record["domains"].values()] == [domain["loss"] for domain in other["domains"].values()]
        same += 1
    assert same >= (3 if name == "schedule" else 1), f"{name} started from other weights than {SAME_START[name]}"


def test_a_resumed_acodm_run_exports_the_actor_the_uninterrupted_run_exports(mixer_runs):
    save, resumed = mixer_runs("acodm")[1], mixer_runs("acodm", resumed=True)[1]
    original, again = (torch.load(folder / "policy.pt", weights_only=True) for folder in (save, resumed))
    assert original["domains"] == ["code", "multilingual", "prose"] and original["actor"].keys() == again["actor"].keys()
    for key, tensor in original["actor"].items():
        assert torch.equal(tensor, again["actor"][key]), key


@pytest.mark.parametrize("name", REPLAYED)
def test_a_runs_exported_mixture_replayed_as_a_schedule_trains_exactly_as_the_run(mixer_runs, preprocessed_corpus, tokenizer_model, tmp_path, name):
    """The run's mixture, exported by tools/export_schedule.py and replayed by --mixer schedule: the
    same weights step by step, and so the same losses and gradient norms bit for bit."""
    original, metrics = mixer_runs(name)[0], mixer_runs(name)[1] / "metrics.jsonl"
    schedule = tmp_path / f"{name}-schedule.json"
    exported = runs.run(runs.EXPORT_SCHEDULE, [str(metrics), "-o", str(schedule)], cwd=str(tmp_path))
    assert exported.returncode == 0 and f"wrote {schedule}" in exported.stdout, exported.stderr
    replay = tmp_path / "replay"
    runs.train(tmp_path, runs.arguments(preprocessed_corpus, tokenizer_model, str(replay), "--train-iters", str(STEPS), "--seed", "7",
                                        "--mixer", "schedule", "--mixing-schedule", str(schedule)))
    replayed = runs.losses(str(replay))[2]
    weights = [[[domain["weight"] for domain in record["domains"].values()] for record in records] for records in (original, replayed)]
    numpy.testing.assert_allclose(weights[1], weights[0], rtol=1e-12)
    assert [(record["lm_loss"], record["grad_norm"]) for record in replayed] == [(record["lm_loss"], record["grad_norm"]) for record in original]
