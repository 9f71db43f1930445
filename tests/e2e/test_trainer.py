"""pretrain_acodm.py end to end on CPU: exact resume after SIGKILL, parallel layouts against one
process, a checkpoint loaded at another layout, a checkpoint only evaluated, and a refused domain change."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from launching import command, environment, run
from megatron_acodm.metrics.reader import read_metrics
import trainer_runs as runs


@pytest.mark.parametrize("mixer", ["acodm"])  # the mixer with the most state; every mixer resumes: test_mixer_runs.py
def test_sigkill_then_resume_continues_exactly(tmp_path, preprocessed_corpus, tokenizer_model, mixer):
    steps = ["--train-iters", "12", "--mixer", mixer, "--acodm-hidden", "64"]  # the reference's 5 layers, narrower
    reference = str(tmp_path / "reference")
    runs.train(tmp_path, runs.arguments(preprocessed_corpus, tokenizer_model, reference, *steps))

    interrupted = str(tmp_path / "interrupted")
    arguments = runs.arguments(preprocessed_corpus, tokenizer_model, interrupted, *steps, "--save-interval", "4")
    process = subprocess.Popen(command(runs.ENTRY, arguments), cwd=str(tmp_path), env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tracker = os.path.join(interrupted, "latest_checkpointed_iteration.txt")
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.exists(tracker) and open(tracker).read().strip() == "8"):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert open(tracker).read().strip() == "8"
    runs.train(tmp_path, arguments + ["--load", interrupted])

    expected_train, expected_valid, expected_records = runs.losses(reference)
    resumed_train, resumed_valid, resumed_records = runs.losses(interrupted)
    assert resumed_train == expected_train and resumed_valid == expected_valid
    for expected, resumed in zip(expected_records, resumed_records):
        assert resumed["domains"] == expected["domains"]  # same weights, shares and per-domain losses


@pytest.fixture(scope="module")
def single_process_runs(tmp_path_factory, preprocessed_corpus, tokenizer_model):
    """An 8-step single-process reference and a copy of its state after step 4 to resume from."""
    folder = tmp_path_factory.mktemp("layouts")
    reference, start = str(folder / "reference"), str(folder / "start")
    runs.train(folder, runs.arguments(preprocessed_corpus, tokenizer_model, reference, *LAYOUT_STEPS))
    runs.train(folder, runs.arguments(preprocessed_corpus, tokenizer_model, start, *LAYOUT_STEPS, "--exit-interval", "4"))
    return folder, reference, start


# Without dropout every layout computes the same function; only the order of fp32 sums differs.
LAYOUT_STEPS = ["--train-iters", "8", "--save-interval", "4", "--mixer", "odm", "--hidden-dropout", "0", "--attention-dropout", "0"]


@pytest.mark.parametrize(
    "layout",
    [["--tensor-model-parallel-size", "2"], ["--pipeline-model-parallel-size", "2"], []],
    ids=["tp2", "pp2", "dp2"],
)
def test_two_rank_layouts_resume_one_process_checkpoint_and_match_it(single_process_runs, preprocessed_corpus, tokenizer_model, layout):
    # Each layout initialises its own pipeline stages from its own seeds, so layouts start from the
    # single process's checkpoint: that proves the reload at another layout and the equal numbers.
    folder, reference, start = single_process_runs
    moved = str(folder / ("moved" + "".join(layout)))
    shutil.copytree(start, moved)
    runs.train(folder, runs.arguments(preprocessed_corpus, tokenizer_model, moved, *LAYOUT_STEPS, "--load", moved, *layout), processes=2)
    (expected, expected_valid, expected_records), (got, got_valid, got_records) = runs.losses(reference), runs.losses(moved)
    assert len(got) == 8
    assert got == pytest.approx(expected, rel=1e-5)
    assert got_valid == pytest.approx(expected_valid, rel=1e-5)
    grad_norms = [[record["grad_norm"] for record in records] for records in (expected_records, got_records)]
    assert grad_norms[1] == pytest.approx(grad_norms[0], rel=1e-5)


def test_tensor_parallel_from_scratch_matches_one_process(single_process_runs, preprocessed_corpus, tokenizer_model):
    # megatron.core initialises the full weight on each tensor-parallel rank and keeps its slice.
    folder, reference, _ = single_process_runs
    parallel = str(folder / "tp2-from-scratch")
    runs.train(folder, runs.arguments(preprocessed_corpus, tokenizer_model, parallel, *LAYOUT_STEPS, "--tensor-model-parallel-size", "2"), processes=2)
    assert runs.losses(parallel)[0] == pytest.approx(runs.losses(reference)[0], rel=1e-5)


def test_skip_train_evaluates_the_loaded_checkpoint_and_trains_nothing(single_process_runs, preprocessed_corpus, tokenizer_model):
    """--skip-train (Megatron-LM's flag): the checkpoint's model evaluated once, at its iteration; with
    --eval-iters as the run had, the same samples and so the run's own last evaluation."""
    folder, reference, _ = single_process_runs
    arguments = runs.arguments(preprocessed_corpus, tokenizer_model, reference, *LAYOUT_STEPS, "--load", reference, "--skip-train")
    for eval_iters in ("1", "4"):
        metrics = str(folder / f"skip-train-{eval_iters}.jsonl")
        completed = runs.train(folder, arguments + ["--eval-iters", eval_iters, "--metrics-path", metrics])
        assert "--skip-train: evaluating the model at iteration 8" in completed.stdout
        _, train, valid = read_metrics(metrics)
        assert train == [] and [record["iteration"] for record in valid] == [8]
        if eval_iters == "1":
            (*_, final) = read_metrics(os.path.join(reference, "metrics.jsonl"))[2]
            assert valid[0]["domains"] == final["domains"]
            few = valid[0]["domains"]
        else:  # more samples where a domain holds more: other means, each with its standard error
            assert any(domain["loss"] != few[name]["loss"] for name, domain in valid[0]["domains"].items())
            assert all(0 < domain["loss_se"] < 1 for domain in valid[0]["domains"].values())
    assert open(os.path.join(reference, "latest_checkpointed_iteration.txt")).read().strip() == "8"


def test_resuming_on_other_domains_is_refused_unless_remapped(tmp_path, preprocessed_corpus, tokenizer_model):
    save = str(tmp_path / "run")
    runs.train(tmp_path, runs.arguments(preprocessed_corpus, tokenizer_model, save, "--train-iters", "3"))
    folder = os.path.dirname(preprocessed_corpus)
    two_domains = ["--data-path", f"{folder}/prose_text_document", f"{folder}/code_text_document"]
    arguments = runs.arguments(preprocessed_corpus, tokenizer_model, save, "--train-iters", "4", "--load", save,
                           "--override-opt_param-scheduler")[2:] + two_domains
    refused = run(runs.ENTRY, arguments, cwd=str(tmp_path))
    assert refused.returncode != 0
    assert "pass --remap-domains" in refused.stderr + refused.stdout
    remapped = runs.train(tmp_path, arguments + ["--remap-domains"])
    assert "the mixer and blender start afresh" in remapped.stdout


def test_proxy_policy_drives_a_deeper_wider_target(tmp_path, preprocessed_corpus, tokenizer_model):
    policy = str(tmp_path / "policy.pt")
    proxy = runs.arguments(preprocessed_corpus, tokenizer_model, str(tmp_path / "proxy"), "--train-iters", "8", "--mixer", "acodm",
                           "--acodm-hidden", "64")
    runs.train(tmp_path, proxy)
    # A finished run asked for its policy afterwards still writes it.
    resumed = runs.train(tmp_path, proxy + ["--load", str(tmp_path / "proxy"), "--acodm-export-policy", policy])
    assert "nothing to do: the checkpoint is at iteration 8" in resumed.stdout and f"wrote the AC-ODM policy to {policy}" in resumed.stdout
    target = runs.arguments(preprocessed_corpus, tokenizer_model, str(tmp_path / "target"), "--train-iters", "6", "--mixer", "acodm")
    target = target + ["--acodm-policy", policy, "--num-layers", "4", "--hidden-size", "64"]
    runs.train(tmp_path, target)
    _, _, records = runs.losses(str(tmp_path / "target"))
    weights = [[domain["weight"] for domain in record["domains"].values()] for record in records]
    assert all(abs(sum(row) - 1) < 1e-9 and min(row) > 0 for row in weights)
    assert weights[-1] != pytest.approx([1 / 3] * 3, abs=1e-6)  # the frozen actor decides, not a fallback

    folder = os.path.dirname(preprocessed_corpus)
    other_domains = ["--data-path", f"{folder}/prose_text_document", f"{folder}/code_text_document"]
    refused = run(runs.ENTRY, target[2:] + other_domains, cwd=str(tmp_path))
    assert refused.returncode == 2
    assert f"{policy}: the policy was trained on domains" in refused.stderr


def test_tracker_naming_a_missing_checkpoint_is_refused_clearly(tmp_path, preprocessed_corpus, tokenizer_model):
    save = tmp_path / "run"
    save.mkdir()
    (save / "latest_checkpointed_iteration.txt").write_text("7\n")
    arguments = runs.arguments(preprocessed_corpus, tokenizer_model, str(save), "--train-iters", "3", "--load", str(save))
    refused = run(runs.ENTRY, arguments, cwd=str(tmp_path))
    assert refused.returncode == 2
    assert f"names iteration 7 but {save}/iter_0000007 is missing" in refused.stderr


def test_min_samples_per_domain_reaches_every_domain_every_step(tmp_path, preprocessed_corpus, tokenizer_model):
    save = str(tmp_path / "run")
    runs.train(tmp_path, runs.arguments(preprocessed_corpus, tokenizer_model, save, "--train-iters", "4", "--mixer", "odm",
                                        "--min-samples-per-domain", "2"))
    for record in runs.losses(save)[2]:  # one record per step (--log-interval 1), global batch 8
        domains = record["domains"].values()
        assert min(domain["share"] for domain in domains) >= 2 / 8
        assert min(domain["weight"] for domain in domains) >= 2 / 8 - 1e-12  # the logged mixture is the one followed
