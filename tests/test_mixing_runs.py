"""Every mixer in a real run of pretrain_acodm.py: the mixture it trained on is the one it reported, and
a run is a function of its seed.

These checks keep `bench/mixing_quality.py`'s numbers meaningful: a mixer compared there is judged by
the weights it logged, so the samples each step drew must follow those weights (within the
apportionment bound of docs/DESIGN.md), and two runs with the same seed must not differ.

Each mixer trains a tiny GPT twice with the same seed, the two runs side by side (one core each),
logging every step (`--log-interval 1`: each train record holds the step's weights and realised
shares). AC-ODM's first pair exports its policy, which drives the proxy-mode pair.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy
import pytest

from launching import command, environment
from megatron_acodm.metrics.reader import read_metrics

ENTRY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrain_acodm.py")
STEPS = 16
GLOBAL_BATCH = 8
TEMPERATURE = 3.0
TINY = [
    "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "32",
    "--micro-batch-size", "4", "--global-batch-size", str(GLOBAL_BATCH), "--train-iters", str(STEPS),
    "--lr", "1e-3", "--lr-warmup-iters", "2", "--log-interval", "1", "--eval-interval", str(STEPS),
    "--eval-iters", "1", "--split", "90,10,0", "--seed", "7",
]
# Over the run a domain's count stays within this of its cumulative target sum_t w_t G: below 1 after
# every step for K <= 3 (docs/DESIGN.md, "One global step"); 1.2 is the bound measured for any K.
APPORTIONMENT_BOUND = 1.2
# Fields a rerun may change: they are clocks.
TIMING_FIELDS = ("elapsed_s", "iteration_ms", "tokens_per_s")

MIXER_ARGUMENTS = {
    "static": ["--mixer", "static"],
    "uniform": ["--mixer", "uniform"],
    "temperature": ["--mixer", "temperature", "--mixing-temperature", str(TEMPERATURE)],
    "odm": ["--mixer", "odm"],
    # In 16 steps AC-ODM's signal is barely out of its noise, and the default step would move the
    # weights by about 1e-4: a large step bound lets the apportionment check below see them move.
    "acodm": ["--mixer", "acodm", "--acodm-max-step", "10"],
    "acodm_proxy": ["--mixer", "acodm", "--acodm-max-step", "10"],  # plus --acodm-policy, from the acodm pair
}


def _launch_pair(folder, arguments_of) -> list[str]:
    """Start two runs at once (`arguments_of(name)` for a and b), wait for both; their metrics paths."""
    processes, paths = [], []
    for name in ("a", "b"):
        run = folder / name
        run.mkdir(parents=True)
        metrics = str(run / "metrics.jsonl")
        log = open(run / "output.log", "w")
        processes.append((subprocess.Popen(command(ENTRY, [*arguments_of(run), "--metrics-path", metrics]),
                                           cwd=str(run), env=environment(), stdout=log, stderr=subprocess.STDOUT), log, run))
        paths.append(metrics)
    for process, log, run in processes:
        try:
            code = process.wait(timeout=240)
        finally:
            log.close()
        assert code == 0, (run / "output.log").read_text()[-3000:]
    return paths


@pytest.fixture(scope="module")
def pair_runs(tmp_path_factory, preprocessed_corpus, tokenizer_model):
    """`pair_runs(mixer)`: the (train, valid) records of two same-seed runs, each pair trained once."""
    cache: dict[str, tuple] = {}
    root = tmp_path_factory.mktemp("mixing_runs")

    def pair(mixer: str):
        if mixer in cache:
            return cache[mixer]
        folder = root / mixer

        def arguments_of(run):
            # each run its own index cache: the two runs of a pair start together
            arguments = ["--data-path", preprocessed_corpus, "--tokenizer-model", tokenizer_model,
                         "--data-cache-path", str(run / "cache"), *TINY, *MIXER_ARGUMENTS[mixer]]
            if mixer == "acodm":
                arguments += ["--acodm-export-policy", str(run / "policy.pt")]
            if mixer == "acodm_proxy":
                arguments += ["--acodm-policy", str(root / "acodm" / "a" / "policy.pt")]
            return arguments

        if mixer == "acodm_proxy":
            pair("acodm")  # its policy drives this pair
        paths = _launch_pair(folder, arguments_of)
        cache[mixer] = tuple(read_metrics(path)[1:] for path in paths) + (folder,)
        return cache[mixer]

    return pair


def _steps(train):
    """Per step: the weights used and the realised counts, [T, K] each (one record per step)."""
    assert [record["iteration"] for record in train] == list(range(1, STEPS + 1))
    names = list(train[0]["domains"])
    weights = numpy.array([[record["domains"][name]["weight"] for name in names] for record in train])
    shares = numpy.array([[record["domains"][name]["share"] for name in names] for record in train])
    counts = shares * GLOBAL_BATCH
    assert numpy.allclose(counts, numpy.round(counts), atol=1e-9), "a share is not a whole number of samples"
    return names, weights, numpy.round(counts)


def _without_clocks(records):
    return [{key: value for key, value in record.items() if key not in TIMING_FIELDS} for record in records]


@pytest.mark.parametrize("mixer", list(MIXER_ARGUMENTS))
def test_realised_mixture_follows_reported_weights_and_same_seed_repeats(pair_runs, preprocessed_corpus, mixer):
    (train_a, valid_a), (train_b, valid_b), folder = pair_runs(mixer)

    # Same seed, same run: losses, weights, shares and validation, exactly.
    assert _without_clocks(train_a) == _without_clocks(train_b)
    assert valid_a == valid_b and valid_a[-1]["iteration"] == STEPS

    names, weights, counts = _steps(train_a)
    assert numpy.all(counts.sum(axis=1) == GLOBAL_BATCH)
    assert numpy.all(weights >= 0) and numpy.allclose(weights.sum(axis=1), 1.0)
    # The samples drawn follow the weights logged: cumulative count against cumulative target, every step.
    deviation = numpy.abs(numpy.cumsum(counts, axis=0) - numpy.cumsum(weights * GLOBAL_BATCH, axis=0))
    assert deviation.max() < APPORTIONMENT_BOUND, (
        f"{mixer}: a domain's realised count strayed {deviation.max():.3f} samples from its weights' target "
        f"(step {int(deviation.max(axis=1).argmax()) + 1}, domain {names[int(deviation.max(axis=0).argmax())]})"
    )
    # Over the run, the realised share equals the mean reported weight within the bound.
    realised_share = counts.sum(axis=0) / (GLOBAL_BATCH * STEPS)
    assert numpy.abs(realised_share - weights.mean(axis=0)).max() < APPORTIONMENT_BOUND / (GLOBAL_BATCH * STEPS)

    # The weights are the mixer's own.
    with open(preprocessed_corpus, encoding="utf-8") as stream:
        tokens_of = {domain["name"]: domain["tokens"] for domain in json.load(stream)["domains"]}
    manifest_tokens = numpy.array([tokens_of[name] for name in names], float)
    corpus_tokens = numpy.array([valid_a[-1]["domains"][name]["corpus_tokens"] for name in names], float)
    expected = {
        "static": manifest_tokens / manifest_tokens.sum(),
        "uniform": numpy.full(len(names), 1.0 / len(names)),
        "temperature": corpus_tokens ** (1 / TEMPERATURE) / (corpus_tokens ** (1 / TEMPERATURE)).sum(),
    }
    if mixer in expected:
        assert weights == pytest.approx(numpy.tile(expected[mixer], (STEPS, 1)), rel=1e-9, abs=1e-12)
    else:  # the online mixers move their weights, which is what makes the bound above worth checking
        assert numpy.ptp(weights, axis=0).max() > 1e-3, f"{mixer}'s weights never moved"
    if mixer == "acodm":  # the exported policies of the two runs are the same too
        import torch

        policies = [torch.load(folder / run / "policy.pt", weights_only=True) for run in ("a", "b")]
        for key, tensor in policies[0]["actor"].items():
            assert torch.equal(tensor, policies[1]["actor"][key]), key
