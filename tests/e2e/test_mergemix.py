"""MergeMix end to end: `pretrain_acodm.py --pretrained-checkpoint` (the experts' start), tools/mergemix.py
(experts, the merged-model search, the blend it writes, reuse and resume, one `error:` line for every
bad input), the blend as `--data-path ... --mixer static` and as `--mixing-prior`, and
`arguments.command_line`, parse_args' inverse, which builds the experts' and the search's command lines.

One tiny base and one search (3 domains: uniform, 3 corners, 1 Dirichlet sample, then one round of 2
proposals) are shared by the module; tests that rerun the tool do so on a copy of its work folder."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import numpy
import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

import trainer_runs as runs
from conftest import _generated_texts, index_corpus
from launching import REPO, command, environment, load_script, run
from megatron_acodm.arguments import argument_names, command_line, parse_args
from megatron_acodm.data.manifest import load_manifest
from megatron_acodm.errors import UserError
from megatron_acodm.mixing import build_mixer
from megatron_acodm.mixing.weighting import mixing_prior
from megatron_acodm.training.checkpoint import open_checkpoint
from megatron_acodm.mergemix.experts import checkpoint_fingerprint
from megatron_acodm.mergemix.results import ResultsFile, read_results
from megatron_acodm.metrics.reader import read_metrics
from mixer_states import mixer_args

MERGEMIX = os.path.join(REPO, "tools", "mergemix.py")
mergemix = load_script(MERGEMIX)
DOMAINS = ["code", "multilingual", "prose"]  # the corpus manifest's order
EXPERT_ITERS = 2
SEARCH = ["--expert-iters", str(EXPERT_ITERS), "--seed-mixtures", "5", "--search-rounds", "1", "--proposals", "2"]
EVALUATED = 5 + 1 * 2
PROGRESS = re.compile(r"^\[(\d+)/7\] (seed|round 1): objective", re.MULTILINE)


@dataclass(frozen=True)
class Search:
    folder: str
    corpus: str
    tokenizer_model: str
    base: str  # the base run's --save folder
    base_checkpoint: str
    output: str  # the blend
    work_dir: str
    results: str
    stdout: str


def _error_lines(completed: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (completed.stdout + completed.stderr).splitlines() if "error:" in line]


def _assert_one_error_line(completed: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 2, no traceback, exactly one `error:` line, which holds `message`."""
    output = completed.stdout[-3000:] + completed.stderr[-3000:]
    assert completed.returncode == 2, output
    assert "Traceback" not in completed.stderr, output
    lines = _error_lines(completed)
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and message in lines[0], output


def _mergemix(folder, *arguments) -> subprocess.CompletedProcess:
    return run(MERGEMIX, list(arguments), cwd=str(folder))


def _mergemix_arguments(search: Search, output: str, *extra) -> list[str]:
    return ["--base", search.base, "--data-path", search.corpus, "--output", output, *SEARCH, *extra]


def _copy_work_dir(search: Search, folder) -> tuple[str, str]:
    """A copy of the search's work folder (experts and results) and an output beside it."""
    work_dir = str(folder / "copy.mergemix")
    shutil.copytree(search.work_dir, work_dir)
    return work_dir, str(folder / "copy.json")


def _bytes(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


def _records(results: str) -> list[dict]:
    return read_results(results)[1]


def _model_tensors(checkpoint: str, scratch) -> dict[str, torch.Tensor]:
    """The model tensors of a checkpoint folder (no optimizer state), read without a process group."""
    converted = str(scratch / f"{os.path.basename(os.path.dirname(checkpoint))}-{os.path.basename(checkpoint)}.pt")
    dcp_to_torch_save(checkpoint, converted)
    state = torch.load(converted, weights_only=False)
    return {key: value for key, value in state.items() if torch.is_tensor(value) and not key.startswith("optimizer.")}


def _valid_losses(save: str) -> dict[int, dict[str, float]]:
    _, _, valid = read_metrics(os.path.join(save, "metrics.jsonl"))
    return {record["iteration"]: {name: domain["loss"] for name, domain in record["domains"].items()} for record in valid}


@pytest.fixture(scope="module")
def search(tmp_path_factory, preprocessed_corpus, tokenizer_model) -> Search:
    """A 4-step uniform base, then mergemix from it: 3 experts of 2 steps and 7 merged models."""
    folder = tmp_path_factory.mktemp("mergemix")
    base = str(folder / "base")
    runs.train(folder, runs.arguments(preprocessed_corpus, tokenizer_model, base, "--train-iters", "4", "--mixer", "uniform"))
    output = str(folder / "blend.json")
    completed = _mergemix(folder, "--base", base, "--data-path", preprocessed_corpus, "--output", output, *SEARCH)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-3000:]
    work_dir = str(folder / "blend.mergemix")
    results = [name for name in os.listdir(work_dir) if name.endswith(".jsonl")]
    assert len(results) == 1 and re.fullmatch(r"search-[0-9a-f]{10}\.jsonl", results[0]), results
    return Search(str(folder), preprocessed_corpus, tokenizer_model, base, os.path.join(base, "iter_0000004"), output,
                  work_dir, os.path.join(work_dir, results[0]), completed.stdout)


def _expert_checkpoints(search: Search, domain: str) -> str:
    return os.path.join(search.work_dir, "experts", domain, "checkpoints")


# ---------------------------------------------------------------- --pretrained-checkpoint


def _tiny_step_arguments(search: Search, save: str, *extra) -> list[str]:
    """A run whose steps move no weight by more than ~1e-12 (Adam at an LR of at most 1e-12), evaluated after each."""
    return runs.arguments(search.corpus, search.tokenizer_model, save, "--lr", "1e-12", "--lr-warmup-iters", "0",
                          "--lr-decay-iters", "2", "--eval-interval", "1", *extra)


@pytest.fixture(scope="module")
def from_expert(search, tmp_path_factory) -> tuple[str, subprocess.CompletedProcess]:
    """One step at LR 1e-12 from the code expert's checkpoint (--pretrained-checkpoint), saved."""
    save = str(tmp_path_factory.mktemp("from-expert") / "run")
    arguments = _tiny_step_arguments(search, save, "--train-iters", "1", "--pretrained-checkpoint", _expert_checkpoints(search, "code"))
    return save, runs.train(search.folder, arguments)


def test_a_pretrained_checkpoint_gives_the_weights_and_nothing_else(search, from_expert, tmp_path):
    save, completed = from_expert
    expert = _expert_checkpoints(search, "code")
    assert (f"initialised the model from {expert}/iter_0000002 (--pretrained-checkpoint, iteration 2); "
            f"this run starts at iteration 0") in completed.stdout
    # The weights are the expert's (one step of 1e-12 apart), every tensor of the model.
    loaded, saved = _model_tensors(os.path.join(expert, "iter_0000002"), tmp_path), _model_tensors(os.path.join(save, "iter_0000001"), tmp_path)
    assert sorted(saved) == sorted(loaded) and len(saved) >= 16
    for name, tensor in saved.items():
        assert tensor.shape == loaded[name].shape
        assert (tensor - loaded[name]).abs().max().item() < 1e-6, name
    # Iteration 0, and a new optimizer and LR schedule: the expert's Adam had taken 2 steps, this one 1.
    assert open_checkpoint(expert)[1]["adam_steps"] == [2.0]
    state = open_checkpoint(save)[1]
    assert state["iteration"] == 1 and state["adam_steps"] == [1.0]
    assert state["scheduler"]["num_steps"] == 1 and state["scheduler"]["max_lr"] == 1e-12
    headers, train, _ = read_metrics(os.path.join(save, "metrics.jsonl"))
    assert [header["start_iteration"] for header in headers] == [0] and [record["iteration"] for record in train] == [1]


def test_load_wins_over_a_pretrained_checkpoint_once_it_holds_one(search, from_expert, tmp_path):
    save, _ = from_expert
    resumed_save = str(tmp_path / "run")
    shutil.copytree(save, resumed_save)
    # --pretrained-checkpoint names the base now: were it loaded, the losses would be the base's.
    resumed = runs.train(tmp_path, _tiny_step_arguments(search, resumed_save, "--train-iters", "2", "--load", resumed_save,
                                                        "--pretrained-checkpoint", search.base))
    assert f"resumed from {resumed_save}/iter_0000001 at iteration 1" in resumed.stdout
    assert "initialised the model from" not in resumed.stdout
    losses, base_losses = _valid_losses(resumed_save), _valid_losses(search.base)
    assert sorted(losses) == [1, 2]
    for name in DOMAINS:
        assert losses[2][name] == pytest.approx(losses[1][name], abs=1e-5)
    # The code expert is better on code than the base by far more than the tiny step could move it.
    assert base_losses[4]["code"] - losses[2]["code"] > 0.02


def test_pretrained_checkpoint_errors(search, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    save = str(tmp_path / "run")
    _assert_one_error_line(
        run(runs.ENTRY, runs.arguments(search.corpus, search.tokenizer_model, save, "--train-iters", "4", "--pretrained-checkpoint", str(empty)),
            cwd=str(tmp_path)),
        f"error: --pretrained-checkpoint {empty}: no checkpoint there (no latest_checkpointed_iteration.txt); "
        f"give the --save folder of a pretrain_acodm.py run",
    )
    _assert_one_error_line(
        run(runs.ENTRY, runs.arguments(search.corpus, search.tokenizer_model, save, "--train-iters", "4", "--pretrained-checkpoint", search.base,
                                       "--hidden-size", "64"), cwd=str(tmp_path)),
        f"error: {search.base_checkpoint}: saved with --hidden-size 32, this run has --hidden-size 64, which changes the "
        f"model's shape; run with --hidden-size 32",
    )
    assert not os.path.exists(os.path.join(save, "latest_checkpointed_iteration.txt"))


# ---------------------------------------------------------------- the experts and the search


def test_experts_train_their_domain_alone_from_the_base(search):
    base_path = search.base_checkpoint
    assert search.stdout.count(f"initialised the model from {base_path} (--pretrained-checkpoint, iteration 4)") == 3
    for number, domain in enumerate(DOMAINS, start=1):
        assert f"[mergemix] expert {number}/3 {domain}: training {EXPERT_ITERS} steps from the base" in search.stdout
        folder = os.path.join(search.work_dir, "experts", domain)
        record = json.loads(_bytes(os.path.join(folder, "expert.json")))
        assert record["base"] == {"path": base_path, "iteration": 4, "fingerprint": checkpoint_fingerprint(base_path)}
        assert record["domain"]["name"] == domain and record["expert_iters"] == EXPERT_ITERS and record["lr"] == 1e-3
        _, train, valid = read_metrics(os.path.join(folder, "metrics.jsonl"))
        assert [entry["iteration"] for entry in train] == [1, 2] and valid == []
        # The base run's LR, constant; the one domain is the whole batch.
        assert [entry["lr"] for entry in train] == [1e-3, 1e-3]
        assert all(list(entry["domains"]) == [domain] and entry["domains"][domain]["share"] == 1.0 for entry in train)


def test_the_search_evaluates_uniform_the_corners_a_sample_then_proposals(search):
    records = _records(search.results)
    assert len(records) == EVALUATED
    assert [record["phase"] for record in records] == ["seed"] * 5 + ["round 1"] * 2
    assert [int(number) for number, _ in PROGRESS.findall(search.stdout)] == list(range(1, EVALUATED + 1))
    mixtures = numpy.array([[record["mixture"][name] for name in DOMAINS] for record in records])
    assert all(list(record["mixture"]) == DOMAINS for record in records)
    numpy.testing.assert_allclose(mixtures.sum(axis=1), 1.0, atol=1e-12)
    assert (mixtures >= 0).all() and (mixtures.max(axis=1) > 0).all()  # the base (a = 0) is no mixture
    numpy.testing.assert_array_equal(mixtures[0], numpy.full(3, 1 / 3))
    numpy.testing.assert_array_equal(mixtures[1:4], numpy.eye(3))
    assert (mixtures[4:].max(axis=1) < 1).all() and (mixtures[4:].min(axis=1) > 0).all()
    assert len({tuple(row) for row in mixtures.round(9)}) == EVALUATED  # nothing evaluated twice
    for record in records:
        losses = [record["domain_loss"][name] for name in DOMAINS]
        assert list(record["domain_loss"]) == DOMAINS and numpy.isfinite(losses).all()
        assert record["objective"] == pytest.approx(numpy.mean(losses), rel=1e-12)  # --objective uniform
        assert (record["predicted"] is None) == (record["phase"] == "seed")
    # Each expert learned its domain: of the corners, its own is the best on it, and better than uniform.
    corners = records[1:4]
    for k, name in enumerate(DOMAINS):
        own = corners[k]["domain_loss"][name]
        others = [corners[j]["domain_loss"][name] for j in range(3) if j != k]
        assert own < min(others) - 0.01, (name, own, others)
        assert own < records[0]["domain_loss"][name]


def test_a_corner_merge_is_exactly_the_expert(search, from_expert):
    """The merge at e_code is theta_code: its losses are those of the code expert's weights, evaluated by the trainer."""
    save, _ = from_expert
    corner = _records(search.results)[1]
    assert corner["mixture"] == {"code": 1.0, "multilingual": 0.0, "prose": 0.0}
    evaluated = _valid_losses(save)[1]
    for name in DOMAINS:
        assert corner["domain_loss"][name] == pytest.approx(evaluated[name], abs=1e-5), name


# ---------------------------------------------------------------- the blend


def test_the_blend_is_the_best_evaluated_mixture_with_its_provenance(search):
    records = _records(search.results)
    best = min(records, key=lambda record: record["objective"])
    uniform = records[0]
    blend, corpus = load_manifest(search.output), load_manifest(search.corpus)
    assert blend.names == DOMAINS and blend.tokenizer == corpus.tokenizer
    weights = [domain.weight for domain in blend.domains]
    assert weights == [best["mixture"][name] for name in DOMAINS]
    assert sum(weights) == pytest.approx(1.0, abs=1e-12)
    assert best["objective"] <= uniform["objective"]
    for domain, source in zip(blend.domains, corpus.domains):
        assert domain.prefix == source.prefix and os.path.isfile(domain.prefix + ".bin")
        assert (domain.tokens, domain.documents) == (source.tokens, source.documents)
    provenance = blend.provenance
    assert provenance["base"] == {"path": search.base_checkpoint, "iteration": 4, "fingerprint": checkpoint_fingerprint(search.base_checkpoint)}
    assert [expert["domain"] for expert in provenance["experts"]] == DOMAINS
    for expert in provenance["experts"]:
        checkpoint = os.path.join(_expert_checkpoints(search, expert["domain"]), "iter_0000002")
        assert expert == {"domain": expert["domain"], "checkpoint": checkpoint, "fingerprint": checkpoint_fingerprint(checkpoint)}
    assert provenance["objective"] == "uniform" and provenance["expert_iters"] == EXPERT_ITERS and provenance["expert_lr"] == 1e-3
    assert provenance["expert_steps"] == 3 * EXPERT_ITERS and provenance["merged_models_evaluated"] == EVALUATED
    assert provenance["merged_objective"] == best["objective"] and provenance["merged_objective_uniform"] == uniform["objective"]
    assert provenance["results"] == search.results
    assert f"[mergemix] wrote {search.output}: " + ", ".join(f"{name} {best['mixture'][name]:.3f}" for name in DOMAINS) in search.stdout


def test_a_static_run_trains_on_the_blend(search, tmp_path):
    save = str(tmp_path / "run")
    runs.train(tmp_path, runs.arguments(search.output, search.tokenizer_model, save, "--train-iters", "3", "--mixer", "static", "--eval-iters", "0"))
    blend = load_manifest(search.output)
    _, train, _ = read_metrics(os.path.join(save, "metrics.jsonl"))
    assert len(train) == 3
    for record in train:
        assert list(record["domains"]) == DOMAINS
        for domain in blend.domains:
            assert record["domains"][domain.name]["weight"] == pytest.approx(domain.weight, abs=1e-6)


def _edited_blend(search: Search, folder, edit) -> str:
    with open(search.output, encoding="utf-8") as stream:
        document = json.load(stream)
    edit(document["domains"])
    path = str(folder / "edited.json")
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(document, stream)
    return path


def test_the_blend_as_a_mixing_prior(search, tmp_path):
    blend = {domain.name: domain.weight for domain in load_manifest(search.output).domains}
    names = list(reversed(DOMAINS))  # matched by name, not position
    expected = [blend[name] for name in names]

    def prior(path, domains=names):
        return mixing_prior(argparse.Namespace(mixing_prior=path), domains, [1 / 3] * 3, [1.0, 2.0, 3.0])

    numpy.testing.assert_allclose(prior(search.output), expected, rtol=1e-12)
    for mixer in ("dga", "ado"):  # the online mixers start from the prior
        args = mixer_args("--mixer", mixer, "--mixing-prior", search.output, "--target-data-path", "unused", train_iters=10)
        built = build_mixer(mixer, names=names, initial_weights=[1 / 3] * 3, domain_tokens=[1.0, 2.0, 3.0], args=args)
        numpy.testing.assert_allclose(built.weights(), expected, rtol=1e-9)

    with pytest.raises(UserError) as other_domains:
        prior(search.output, ["books", "code", "prose"])
    assert str(other_domains.value) == (
        f"--mixing-prior {search.output}: the blend is over domains {DOMAINS}, --data-path has ['books', 'code', 'prose']; "
        f"give a blend found for this corpus (tools/mergemix.py --data-path with the same domains)"
    )
    unweighted = _edited_blend(search, tmp_path, lambda domains: domains[2].pop("weight"))
    with pytest.raises(UserError) as missing:
        prior(unweighted)
    assert str(missing.value) == f"--mixing-prior {unweighted}: domains ['prose'] have no 'weight'; give every domain a weight"
    zero = _edited_blend(search, tmp_path, lambda domains: domains[1].update(weight=0.0))
    with pytest.raises(UserError) as zero_weight:
        prior(zero)
    assert str(zero_weight.value) == (
        f"--mixing-prior {zero!r} gives ['multilingual'] no weight; every domain needs a positive prior weight "
        f"(tools/mergemix.py --min-weight keeps every weight positive)"
    )


# ---------------------------------------------------------------- reuse and resume


def test_a_rerun_reuses_everything_and_a_lost_evaluation_is_made_again_by_two_ranks(search, tmp_path):
    work_dir, output = _copy_work_dir(search, tmp_path)
    results = os.path.join(work_dir, os.path.basename(search.results))
    with open(results, encoding="utf-8") as stream:
        written = stream.read()
    again = _mergemix(tmp_path, *_mergemix_arguments(search, output, "--work-dir", work_dir))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for number, domain in enumerate(DOMAINS, start=1):
        checkpoint = os.path.join(work_dir, "experts", domain, "checkpoints", "iter_0000002")
        assert f"[mergemix] expert {number}/3 {domain}: reused ({checkpoint})" in again.stdout
    assert "steps from the base" not in again.stdout and "initialised the model" not in again.stdout
    assert PROGRESS.findall(again.stdout) == []  # nothing evaluated
    with open(results, encoding="utf-8") as stream:
        assert stream.read() == written
    original, reused = load_manifest(search.output), load_manifest(output)
    assert [domain.weight for domain in reused.domains] == [domain.weight for domain in original.domains]
    assert reused.provenance["merged_objective"] == original.provenance["merged_objective"]
    assert reused.provenance["merged_models_evaluated"] == EVALUATED

    # A search killed while writing its last line: that mixture, and only that one, is evaluated again.
    # Under torchrun with 2 data-parallel ranks this time, which must give the one-process numbers: the
    # surrogate (rank 0's) proposes the same mixture, both ranks merge it and evaluate half the batch.
    lines = written.splitlines(keepends=True)
    with open(results, "w", encoding="utf-8") as stream:
        stream.write("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    resumed = _mergemix(tmp_path, *_mergemix_arguments(search, output, "--work-dir", work_dir, "--nproc-per-node", "2"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert PROGRESS.findall(resumed.stdout) == [("7", "round 1")]
    before, after = _records(search.results), _records(results)
    assert len(after) == EVALUATED and after[:-1] == before[:-1]
    assert after[-1]["mixture"] == before[-1]["mixture"] and after[-1]["predicted"] == before[-1]["predicted"]
    assert after[-1]["objective"] == pytest.approx(before[-1]["objective"], abs=1e-5)
    for name in DOMAINS:
        assert after[-1]["domain_loss"][name] == pytest.approx(before[-1]["domain_loss"][name], abs=1e-5)
    assert [domain.weight for domain in load_manifest(output).domains] == [domain.weight for domain in original.domains]
    assert _bytes(results).count(b"\n") == EVALUATED + 1  # the torn line is gone, not kept beside its redo


def test_a_search_with_min_weight_on_reused_results_writes_a_blend_that_obeys_it(search, tmp_path):
    """--min-weight is not part of the results file's name, so a second search with it reads the first
    one's evaluations back (corners included); its blend must still be one of its own mixtures."""
    work_dir, output = _copy_work_dir(search, tmp_path)
    completed = _mergemix(tmp_path, *_mergemix_arguments(search, output, "--work-dir", work_dir, "--min-weight", "0.2"))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    records = _records(os.path.join(work_dir, os.path.basename(search.results)))
    constrained = [record for record in records if min(record["mixture"].values()) >= 0.2 - 1e-12]
    assert len(constrained) == EVALUATED  # uniform (read back), 4 new seeds, 2 proposals
    best = min(constrained, key=lambda record: record["objective"])
    worker = re.search(r"^best of (\d+) merges: objective (\S+) at (.*)$", completed.stdout, re.MULTILINE)
    assert worker.group(1) == str(EVALUATED) and float(worker.group(2)) == pytest.approx(best["objective"], abs=1e-4)
    blend = load_manifest(output)
    weights = {domain.name: domain.weight for domain in blend.domains}
    assert min(weights.values()) >= 0.2 - 1e-12, f"the blend {weights} breaks --min-weight 0.2"
    assert weights == best["mixture"] and blend.provenance["merged_models_evaluated"] == EVALUATED


@pytest.mark.parametrize("layout", [("--tensor-model-parallel-size", "2"), ("--pipeline-model-parallel-size", "2")], ids=["tp2", "pp2"])
def test_each_rank_merges_its_own_shards_at_another_layout(search, tmp_path, layout):
    """The search worker at TP=2 or PP=2 on the same checkpoints (resharded as they load): every rank
    merges its shards, and the merged models' losses are the one-process ones."""
    (plan_path,) = [os.path.join(search.work_dir, name) for name in os.listdir(search.work_dir) if name.endswith(".plan.json")]
    with open(plan_path, encoding="utf-8") as stream:
        plan = json.load(stream)
    plan.update(arguments=[*plan["arguments"], *layout], rounds=0, seed_mixtures=4, results=str(tmp_path / "search.jsonl"),
                outcome=str(tmp_path / "outcome.json"))
    with open(tmp_path / "plan.json", "w", encoding="utf-8") as stream:
        json.dump(plan, stream)
    completed = subprocess.run(
        command("-m", ["megatron_acodm.mergemix.search_worker", str(tmp_path / "plan.json")], processes=2), cwd=str(tmp_path),
        env=environment(), capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    merged, reference = _records(plan["results"]), _records(search.results)[:4]  # uniform and the 3 corners
    assert [record["mixture"] for record in merged] == [record["mixture"] for record in reference]
    for ours, theirs in zip(merged, reference):
        for name in DOMAINS:
            assert ours["domain_loss"][name] == pytest.approx(theirs["domain_loss"][name], abs=1e-5)


SETTINGS = {"base": {"path": "/b", "iteration": 1, "fingerprint": "f"}, "objective": "uniform"}


def _results_text(*records) -> str:
    return "".join(json.dumps(entry) + "\n" for entry in [{"settings": SETTINGS}, *records])


def test_the_results_file_drops_a_torn_last_line_and_goes_on_after_it(tmp_path):
    first, second = {"mixture": {"a": 1.0, "b": 0.0}, "objective": 2.0}, {"mixture": {"a": 0.5, "b": 0.5}, "objective": 1.5}
    path = str(tmp_path / "search.jsonl")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(_results_text(first) + json.dumps(second)[:20])
    assert read_results(path) == (SETTINGS, [first])
    results = ResultsFile(path, SETTINGS)
    assert _bytes(path).decode() == _results_text(first)  # rewritten whole: appends start on a line of their own
    assert results.find([1.0, 0.0]) == first and results.find([1.0 - 1e-12, 1e-12]) == first and results.find([0.5, 0.5]) is None
    results.append(second)
    assert read_results(path) == (SETTINGS, [first, second]) and ResultsFile(path, SETTINGS).find([0.5, 0.5]) == second
    with pytest.raises(UserError) as other:
        ResultsFile(path, {**SETTINGS, "objective": "tokens"})
    assert str(other.value) == f"{path}: written by a search with other settings; delete it or give another --work-dir"
    assert read_results(path) == (SETTINGS, [first, second])  # and the file is kept


@pytest.mark.parametrize("last", ["whole", "torn"])
def test_a_damaged_line_before_the_last_is_refused(tmp_path, last):
    """Only the line a killed search was writing can be half written; a damaged earlier line is refused,
    never silently dropped (with it, a torn last line must not hide it)."""
    record = {"mixture": {"a": 1.0, "b": 0.0}, "objective": 2.0}
    path = str(tmp_path / "search.jsonl")
    tail = json.dumps(record) + "\n" if last == "whole" else json.dumps(record)[:20]
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(_results_text(record) + '{"mixture": BROKEN}\n' + tail)
    try:
        records, message = read_results(path)[1], None
    except UserError as error:
        records, message = None, str(error)
    # Fails for "torn": megatron_acodm/mergemix/results.py's `number < len(lines) - 1` counts the torn line as
    # the empty one after a final newline, so line 3 passes as "the last" and is dropped.
    assert message is not None, f"the damaged line 3 was dropped silently; read back {records}"
    assert message.startswith(f"{path}:3: not valid JSON ("), message


# ---------------------------------------------------------------- errors


def _mergemix_in_process(capsys, arguments) -> tuple[int, list[str]]:
    """tools/mergemix.py's main in this process (what it checks before it starts anything): its exit
    status and the lines it printed."""
    try:
        status = mergemix.main(arguments)
    except SystemExit as exit_:  # argparse's errors
        status = exit_.code
    captured = capsys.readouterr()
    return status, (captured.out + captured.err).splitlines()


def test_a_base_without_a_checkpoint_is_refused(search, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, lines = _mergemix_in_process(capsys, ["--base", str(empty), "--data-path", search.corpus, "--output", str(tmp_path / "blend.json")])
    assert status == 2 and lines == [
        f"error: --base {empty}: no checkpoint there (no latest_checkpointed_iteration.txt); give the --save folder of "
        f"a pretrain_acodm.py run, e.g. a short uniform run"
    ]
    assert os.listdir(tmp_path) == ["empty"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--objective", "target"], "mergemix.py: error: --objective target needs --target-data-path (the target sets to lower) (see --help)"),
        (["--objective", "nosuchdomain"], "error: --objective 'nosuchdomain': no domains ['nosuchdomain'] in --data-path; give one "
         "of uniform, tokens, data-path, a blend file (BLEND.json) or domain names from ['code', 'multilingual', 'prose']"),
        (["--min-weight", "0.4"], "error: --min-weight 0.4: give a value in [0, 1/3) for 3 domains"),
        (["--seed-mixtures", "3"], "error: --seed-mixtures 3: at least 4 (uniform and the 3 corners)"),
        (["--output", "blend.txt"], "mergemix.py: error: --output blend.txt: give a .json file name (the blend is a domains.json) (see --help)"),
    ],
    ids=["target-without-target-sets", "unknown-domain", "min-weight", "too-few-seeds", "output-not-json"],
)
def test_a_bad_search_is_refused_before_any_expert_trains(search, tmp_path, capsys, extra, message):
    status, lines = _mergemix_in_process(capsys, _mergemix_arguments(search, str(tmp_path / "blend.json"), *extra))
    errors = [line for line in lines if "error:" in line]
    assert status == 2 and errors == [message], lines
    assert os.listdir(tmp_path) == []  # no work folder, no blend


def test_an_expert_of_another_base_is_refused_and_kept(search, tmp_path, capsys):
    work_dir, output = _copy_work_dir(search, tmp_path)
    folder = os.path.join(work_dir, "experts", "prose")
    record_path = os.path.join(folder, "expert.json")
    with open(record_path, encoding="utf-8") as stream:
        record = json.load(stream)
    record["base"]["fingerprint"] = "0123456789abcdef"
    with open(record_path, "w", encoding="utf-8") as stream:
        json.dump(record, stream)
    results = os.path.join(work_dir, os.path.basename(search.results))
    before = {path: _bytes(path) for path in (record_path, results)}
    listing = sorted(os.path.relpath(os.path.join(root, name), work_dir) for root, _, names in os.walk(work_dir) for name in names)
    fingerprint = checkpoint_fingerprint(search.base_checkpoint)
    status, lines = _mergemix_in_process(capsys, _mergemix_arguments(search, output, "--work-dir", work_dir))
    assert status == 2 and [line for line in lines if "error:" in line] == [
        f"error: {folder}: this expert was trained from {search.base_checkpoint} (iteration 4, fingerprint 0123456789abcdef), "
        f"not from --base {search.base_checkpoint} (fingerprint {fingerprint}); delete {folder} to train it again, or give "
        f"another --work-dir"
    ], lines
    assert not any("training" in line for line in lines), lines  # every expert is checked before any trains
    assert sorted(os.path.relpath(os.path.join(root, name), work_dir) for root, _, names in os.walk(work_dir) for name in names) == listing
    assert all(_bytes(path) == content for path, content in before.items())
    assert open_checkpoint(os.path.join(folder, "checkpoints"))[1]["iteration"] == EXPERT_ITERS
    assert not os.path.exists(output)


def test_a_target_objective_searches_on_the_steering_examples_and_records_the_held_out_ones(search, tmp_path, tokenizer_model):
    """--objective target: the experts are reused, each merge's objective is its loss on the target's
    steering examples, and the held-out examples' loss is recorded beside it."""
    target = index_corpus(tmp_path / "target", tokenizer_model, {"task": _generated_texts("code", 30, seed=5)})
    work_dir, output = _copy_work_dir(search, tmp_path)
    completed = _mergemix(tmp_path, *_mergemix_arguments(search, output, "--work-dir", work_dir, "--objective", "target",
                                                         "--target-data-path", target))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "steps from the base" not in completed.stdout  # the experts do not depend on the objective
    (results,) = [os.path.join(work_dir, name) for name in os.listdir(work_dir)
                  if name.endswith(".jsonl") and name != os.path.basename(search.results)]
    records = _records(results)
    assert len(records) == EVALUATED
    for record in records:
        assert record["objective"] == record["target_steering_loss"]["task"]
        assert numpy.isfinite(record["target_held_out_loss"]["task"])
    corners = {name: next(record for record in records if record["mixture"][name] == 1.0) for name in DOMAINS}
    assert min(corners, key=lambda name: corners[name]["objective"]) == "code"  # the target is code-like
    blend = load_manifest(output)
    best = min(records, key=lambda record: record["objective"])
    assert {domain.name: domain.weight for domain in blend.domains} == best["mixture"]
    assert blend.provenance["objective"] == "target"


def test_a_second_search_in_a_busy_work_folder_is_refused(search, tmp_path, capsys):
    """Two searches in one folder would train the same experts at once: the second one is refused."""
    work_dir, output = _copy_work_dir(search, tmp_path)
    with open(os.path.join(work_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running tools/mergemix.py holds it
        status, lines = _mergemix_in_process(capsys, _mergemix_arguments(search, output, "--work-dir", work_dir))
    assert status == 2 and [line for line in lines if "error:" in line] == [
        f"error: --work-dir {work_dir}: another tools/mergemix.py is working there; wait for it or give another --work-dir"
    ], lines
    assert not any("[mergemix]" in line for line in lines) and not os.path.exists(output)


# ---------------------------------------------------------------- command_line, parse_args' inverse


def test_argument_names_are_the_groups_options_in_order():
    assert argument_names("model") == [
        "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "seq_length",
        "max_position_embeddings", "position_embedding_type", "rotary_base", "rotary_percent", "normalization", "swiglu",
        "untie_embeddings_and_output_weights", "init_method_std", "hidden_dropout", "attention_dropout",
        "make_vocab_size_divisible_by", "bf16", "fp16",
    ]
    assert argument_names("parallelism") == [
        "tensor_model_parallel_size", "pipeline_model_parallel_size", "use_distributed_optimizer", "sequence_parallel",
    ]


REQUIRED = ["--data-path", "domains.json", "--train-iters", "3", "--tokenizer-model", "tokenizer.model"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--num-layers", "4", "--hidden-size", "48", "--num-attention-heads", "6", "--swiglu", "--normalization", "RMSNorm",
         "--position-embedding-type", "rope", "--rotary-percent", "0.25", "--untie-embeddings-and-output-weights", "--bf16",
         "--init-method-std", "1e-05", "--hidden-dropout", "0", "--num-query-groups", "2", "--seq-length", "64"],
    ],
    ids=["defaults", "changed"],
)
def test_command_line_round_trips_the_model_arguments(argv):
    first = parse_args(argv + REQUIRED)
    values = {name: getattr(first, name) for name in argument_names("model")}
    words = command_line(values)
    again = parse_args(words + REQUIRED)
    assert {name: getattr(again, name) for name in values} == values
    assert vars(again) == vars(first)  # nothing else depends on how the values were spelled
    # A flag appears only when set; every other option with its value.
    assert ("--swiglu" in words) == first.swiglu and "--fp16" not in words
    assert words.count("--hidden-size") == 1 and words[words.index("--hidden-size") + 1] == str(first.hidden_size)


def test_command_line_renders_lists_and_leaves_out_none_and_false():
    values = {
        "data_path": ["0.3", "/data/a_text_document", "0.7", "/data/b_text_document"],
        "target_data_path": ["/targets/t.json"],
        "tokenizer_model": "tokenizer.model",
        "train_iters": 5,
        "lr": 1e-12,
        "eod_mask_loss": True,
        "reset_position_ids": False,
        "data_cache_path": None,
        "override_opt_param_scheduler": True,
    }
    words = command_line(values)
    assert words == [
        "--data-path", "0.3", "/data/a_text_document", "0.7", "/data/b_text_document", "--target-data-path", "/targets/t.json",
        "--tokenizer-model", "tokenizer.model", "--train-iters", "5", "--lr", "1e-12", "--eod-mask-loss",
        "--override-opt_param-scheduler",
    ]
    parsed = parse_args(words)
    assert {name: getattr(parsed, name) for name in values} == {**values, "reset_position_ids": False}
    with pytest.raises(KeyError):
        command_line({"no_such_argument": 1})
