"""The quality benchmarks' protocol (bench/): which code a run's key covers, the git record of a run,
the paired statistics every report uses, and where a trade-off point lies against another curve.

The bench modules run as scripts with bench/ on their path; here each is loaded from its file and
registered under its own name for the test's duration (the ones it imports first)."""

from __future__ import annotations

import argparse
import json
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(REPO, "bench")


def _load(monkeypatch: pytest.MonkeyPatch, *names: str):
    """The bench modules `names`, in order (each may import the ones before it); returns the last."""
    module = None
    for name in names:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def code_version(monkeypatch):
    return _load(monkeypatch, "code_version")


@pytest.fixture
def significance(monkeypatch):
    return _load(monkeypatch, "significance")


def _write(root, files: dict[str, str]) -> None:
    for path, text in files.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as stream:
            stream.write(text)


# A package in miniature: the registry imports both mixers; mixer `a` imports a shared module by a
# `from package import name` and another inside a function; mixer `b` imports relatively, a
# subpackage among them; `unused` is imported by nothing.
TOY = {
    "run.py": "import megatron_acodm.training.loop\n",
    "megatron_acodm/__init__.py": "",
    "megatron_acodm/training/__init__.py": "",
    "megatron_acodm/training/loop.py": "from megatron_acodm.mixing import MIXERS\n",
    "megatron_acodm/mixing/__init__.py": "from megatron_acodm.mixing.registry import MIXERS\n",
    "megatron_acodm/mixing/registry.py": "from megatron_acodm.mixing.a import A\nfrom megatron_acodm.mixing.b import B\nMIXERS = [A, B]\n",
    "megatron_acodm/mixing/base.py": "class Mixer: pass\n",
    "megatron_acodm/mixing/a.py": ("from megatron_acodm.mixing.base import Mixer\nfrom megatron_acodm.mixing import shared\n"
                                   "class A(Mixer):\n    def later(self):\n        import megatron_acodm.mixing.lazy\n"),
    "megatron_acodm/mixing/shared.py": "import math\n",
    "megatron_acodm/mixing/lazy.py": "",
    "megatron_acodm/mixing/b.py": "from .base import Mixer\nfrom .pkg import thing\nclass B(Mixer): pass\n",
    "megatron_acodm/mixing/pkg/__init__.py": "from .inner import thing\n",
    "megatron_acodm/mixing/pkg/inner.py": "thing = 1\n",
    "megatron_acodm/mixing/unused.py": "",
}
EVERY_RUN = ["megatron_acodm/__init__.py", "megatron_acodm/mixing/__init__.py", "megatron_acodm/mixing/base.py",
             "megatron_acodm/mixing/registry.py", "megatron_acodm/training/__init__.py", "megatron_acodm/training/loop.py", "run.py"]


def test_a_run_counts_its_mixers_imports_and_no_other_mixers_modules(code_version, tmp_path):
    _write(tmp_path, TOY)
    files_a = code_version.run_files(str(tmp_path), ["run.py"], "megatron_acodm.mixing.a")
    files_b = code_version.run_files(str(tmp_path), ["run.py"], "megatron_acodm.mixing.b")
    assert files_a == sorted(EVERY_RUN + ["megatron_acodm/mixing/a.py", "megatron_acodm/mixing/lazy.py", "megatron_acodm/mixing/shared.py"])
    assert files_b == sorted(EVERY_RUN + ["megatron_acodm/mixing/b.py", "megatron_acodm/mixing/pkg/__init__.py",
                                          "megatron_acodm/mixing/pkg/inner.py"])


def test_bytecode_is_not_code(code_version, tmp_path):
    _write(tmp_path, {**TOY, "megatron_acodm/mixing/__pycache__/a.cpython-311.pyc": "x", "megatron_acodm/stale.pyc": "x"})
    before = code_version.code_hash(str(tmp_path), ["run.py"], "megatron_acodm.mixing.a")
    _write(tmp_path, {"megatron_acodm/mixing/__pycache__/a.cpython-311.pyc": "y", "megatron_acodm/stale.pyc": "y"})
    assert code_version.code_hash(str(tmp_path), ["run.py"], "megatron_acodm.mixing.a") == before


MIXER_MODULES = {"uniform": "megatron_acodm.mixing.static", "odm": "megatron_acodm.mixing.odm", "ado": "megatron_acodm.mixing.ado"}
# A file changed -> the runs whose key changes.
CHANGES = {
    "megatron_acodm/mixing/ado.py": {"ado"},  # another mixer's module: the others keep their key
    "megatron_acodm/mixing/odm.py": {"odm"},  # the run's own mixer
    "megatron_acodm/training/loop.py": {"uniform", "odm", "ado"},  # outside mixing/: every run
    "megatron_acodm/mixing/registry.py": {"uniform", "odm", "ado"},  # it imports every mixer: every run
    "pretrain_acodm.py": {"uniform", "odm", "ado"},  # the entry point
}


def test_a_changed_file_changes_the_keys_of_the_runs_that_import_it(code_version, tmp_path):
    # This repository's package and entry point, copied: the copy's files change.
    shutil.copytree(os.path.join(REPO, "megatron_acodm"), tmp_path / "megatron_acodm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "pretrain_acodm.py"), tmp_path / "pretrain_acodm.py")
    hashes = lambda: {mixer: code_version.code_hash(str(tmp_path), ["pretrain_acodm.py"], module) for mixer, module in MIXER_MODULES.items()}
    before = hashes()
    for changed, rerun in CHANGES.items():
        original = (tmp_path / changed).read_text(encoding="utf-8")
        (tmp_path / changed).write_text(original + "\n# changed\n", encoding="utf-8")
        after = hashes()
        assert {mixer for mixer in MIXER_MODULES if after[mixer] != before[mixer]} == rerun, changed
        (tmp_path / changed).write_text(original, encoding="utf-8")
    assert hashes() == before


def test_the_key_holds_paths_relative_to_where_they_live(code_version):
    places = (("/a/root/uniform-seed1", "<run>"), ("/a/root", "<root>"), ("/a/repo", "<repo>"))
    moved = (("/b/root/uniform-seed1", "<run>"), ("/b/root", "<root>"), ("/elsewhere/repo", "<repo>"))
    words = ["--metrics-path", "/a/root/uniform-seed1/metrics.jsonl", "--acodm-policy", "/a/root/proxy-seed1/policy.pt",
             "--data-path", "/a/repo/data/demo/indexed/domains.json", "--seed", "1", "--tokenizer-model", "/opt/tok.model"]
    moved_words = [word.replace("/a/root", "/b/root").replace("/a/repo", "/elsewhere/repo") for word in words]
    expected = ["--metrics-path", "<run>/metrics.jsonl", "--acodm-policy", "<root>/proxy-seed1/policy.pt",
                "--data-path", "<repo>/data/demo/indexed/domains.json", "--seed", "1", "--tokenizer-model", "/opt/tok.model"]
    assert [code_version.portable(word, places) for word in words] == expected
    assert [code_version.portable(word, moved) for word in moved_words] == expected
    assert code_version.portable("/a/rootless/x", places) == "/a/rootless/x"  # a prefix is not a folder


def test_the_git_record_names_the_commit_and_a_changed_package(code_version, tmp_path):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    git = lambda *arguments: subprocess.run(["git", "-c", "commit.gpgsign=false", "-C", str(tmp_path), *arguments], check=True, capture_output=True, text=True, env=env).stdout
    _write(tmp_path, {"megatron_acodm/x.py": "a = 1\n", "notes.txt": "n\n"})
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    head = git("rev-parse", "HEAD").strip()
    assert code_version.git_commit(str(tmp_path)) == {"commit": head, "package_modified": False}
    _write(tmp_path, {"notes.txt": "other\n"})  # outside the package: not the run's code
    assert code_version.git_commit(str(tmp_path)) == {"commit": head, "package_modified": False}
    _write(tmp_path, {"megatron_acodm/x.py": "a = 2\n"})
    assert code_version.git_commit(str(tmp_path)) == {"commit": head, "package_modified": True}
    git("checkout", "-q", "--", "megatron_acodm/x.py")
    _write(tmp_path, {"megatron_acodm/new.py": ""})  # a new, untracked module
    assert code_version.git_commit(str(tmp_path)) == {"commit": head, "package_modified": True}
    assert code_version.git_commit(str(tmp_path / "missing")) == {"commit": None, "package_modified": None}


# ------------------------------------------------------------------------------------------ proxies and transfers


def _option(arguments: list[str], flag: str) -> str:
    return arguments[arguments.index(flag) + 1]


@pytest.fixture
def quick_runs(monkeypatch, tmp_path):
    """(runs.py, a Run factory `run(mixer, seed=3)` of the quick preset under tmp_path/root, the corpus path)."""
    runs = _load(monkeypatch, "common", "code_version", "significance", "transfers", "mixing_quality_analysis", "run_archive", "runs")
    corpus = tmp_path / "domains.json"
    corpus.write_text("{}", encoding="utf-8")
    args = argparse.Namespace(**runs.PRESETS["quick"], data_path=str(corpus), tokenizer_type="SentencePieceTokenizer",
                              tokenizer_model=str(tmp_path / "tok.model"), work_dir=str(tmp_path), threads=1,
                              lr=1e-3, min_lr=1e-4, temperature=2.0, mixing_objective=None, quick=True,
                              output_dir=str(tmp_path / "results"), evaluated=["a", "b"])
    return runs, lambda mixer, seed=3: runs.Run(str(tmp_path / "root"), mixer, seed, args), corpus


def test_each_transfer_reads_its_proxys_products_and_its_key_follows_them(quick_runs, tmp_path):
    _, run, corpus = quick_runs
    root = tmp_path / "root"
    ado_proxy, acodm_proxy = run("proxy_ado").arguments(), run("proxy").arguments()
    for proxy in (ado_proxy, acodm_proxy):  # the proxy model, trained for the target's steps, no checkpoint
        assert (_option(proxy, "--num-layers"), _option(proxy, "--hidden-size")) == ("1", "32")
        assert _option(proxy, "--train-iters") == "40" and "--save" not in proxy
    assert _option(ado_proxy, "--mixer") == "ado" and "--acodm-export-policy" not in ado_proxy
    assert _option(acodm_proxy, "--acodm-export-policy") == str(root / "proxy-seed3" / "policy.pt")

    replay, mean, policy = run("ado_proxy_replay").arguments(), run("ado_proxy_mean").arguments(), run("acodm_proxy").arguments()
    assert (_option(replay, "--mixer"), _option(replay, "--mixing-schedule")) == ("schedule", str(root / "proxy_ado-seed3" / "schedule.json"))
    assert _option(replay, "--data-path") == str(corpus)
    assert (_option(mean, "--mixer"), _option(mean, "--data-path")) == ("static", str(root / "proxy_ado-seed3" / "mean_blend.json"))
    assert _option(policy, "--acodm-policy") == str(root / "proxy-seed3" / "policy.pt")
    assert _option(run("acodm_proxy_replay").arguments(), "--mixing-schedule") == str(root / "proxy-seed3" / "schedule.json")
    assert (_option(mean, "--num-layers"), "--save" in mean) == ("2", True)  # the target model, evaluated at its end

    # A transfer's key holds its proxy's product: another schedule is another run.
    (root / "proxy_ado-seed3").mkdir(parents=True)
    schedule = root / "proxy_ado-seed3" / "schedule.json"
    keys = []
    for text in ('{"points": [1]}', '{"points": [2]}', '{"points": [1]}'):
        schedule.write_text(text, encoding="utf-8")
        keys.append(run("ado_proxy_replay").keys()["key"])
    assert keys[0] != keys[1] and keys[0] == keys[2]
    assert run("ado_proxy_replay").identity()["inputs"]["<root>/proxy_ado-seed3/schedule.json"] is not None


def test_a_proxys_key_counts_the_code_that_writes_its_exports(quick_runs, monkeypatch):
    runs, run, _ = quick_runs
    hashed = {}

    def code_hash(repo, entry_points, module):
        hashed[module] = list(entry_points)
        return "hash"
    monkeypatch.setattr(runs, "code_hash", code_hash)
    for mixer in ("proxy_ado", "ado_proxy_mean"):  # ADO on the proxy, and a transfer of its mean blend
        run(mixer).identity()
    assert hashed == {"megatron_acodm.mixing.ado": ["pretrain_acodm.py", "bench/transfers.py"],
                      "megatron_acodm.mixing.static": ["pretrain_acodm.py"]}
    # and so the module it writes them with, which no mixer imports
    run_files = sys.modules["code_version"].run_files
    assert {"bench/transfers.py", "megatron_acodm/mixing/schedule_export.py"} <= set(
        run_files(runs.REPO, ["pretrain_acodm.py", "bench/transfers.py"], "megatron_acodm.mixing.ado"))
    assert "megatron_acodm/mixing/schedule_export.py" not in run_files(runs.REPO, ["pretrain_acodm.py"], "megatron_acodm.mixing.ado")


def test_an_objective_goes_only_to_the_mixers_that_read_it_and_a_variant_runs_its_options(quick_runs):
    runs, run, _ = quick_runs
    objective = ["code", "prose"]
    for mixer, reads in (("acodm", False), ("acodm_bounded", True), ("odm", False), ("aioli", True), ("ado", False)):
        made = run(mixer)
        made.args.mixing_objective = objective
        arguments = made.mixer_arguments()
        assert ("--mixing-objective" in arguments) == reads, mixer
    bounded = run("acodm_bounded").mixer_arguments()
    assert bounded[:2] == ["--mixer", "acodm"] and _option(bounded, "--acodm-action") == "bounded"
    assert _option(bounded, "--acodm-reward") == "alignment" and "--acodm-train-actor" in bounded
    assert _option(bounded, "--mixing-objective") == "code,prose"


def test_parallel_runs_keep_each_proxy_with_its_transfers_and_share_the_steps(quick_runs):
    runs, run, _ = quick_runs
    mixers = ["uniform", "ado", "acodm", "acodm_proxy", "acodm_proxy_replay", "acodm_proxy_mean", "ado_proxy_replay", "ado_proxy_mean"]
    planned = [run(name, seed) for seed in (1, 2, 3) for name in ["proxy", "proxy_ado", *mixers]]  # as mixing_quality.py orders them
    for jobs in (2, 3):
        split = runs.shards(planned, jobs)
        assert sorted(r.name for shard in split for r in shard) == sorted(r.name for r in planned)
        for shard in split:
            order = [planned.index(r) for r in shard]
            assert order == sorted(order)  # seed by seed, a proxy before its transfers
            names = [r.name for r in shard]
            assert all(r.reads in names for r in shard if r.reads)
        # each seed: the AC-ODM proxy's group of 4 runs, ADO's of 3 and 3 runs alone, each of 40 steps
        steps = sorted(sum(r.last_step for r in shard) for shard in split)
        assert sum(steps) == 3 * 10 * 40 and steps[-1] - steps[0] <= 4 * 40  # apart by at most the largest group


def test_a_search_of_some_mixers_keeps_the_others_results_from_the_same_protocol(monkeypatch):
    tune = _load(monkeypatch, "common", "code_version", "significance", "transfers", "mixing_quality_analysis", "run_archive",
                 "runs", "corpora", "tuning_corpus", "tune_mixers")
    protocol = {"mode": "full", "seeds": [101, 102], "configurations": 5, "draw_seed": tune.DRAW_SEED, "search": dict(tune.SEARCH)}
    earlier = {**protocol, "mixers": {"dga": {"chosen": "d"}, "ado": {"chosen": "a-old"}, "aioli": {"chosen": "i"}},
               "code": {"commits": {"old": ["uniform-seed101", "dga-c0-seed101", "ado-c1-seed102", "aioli-c4-seed101"]}}}
    earlier = json.loads(json.dumps(earlier))  # as the file gives it back: the ranges are lists
    document = lambda: {**protocol, "mixers": {"ado": {"chosen": "a-new"}}, "code": {"commits": {"new": ["uniform-seed101", "ado-c0-seed101"]}}}

    merged = document()
    assert tune.keep_earlier(merged, earlier) == ["dga", "aioli"]
    assert list(merged["mixers"]) == ["dga", "ado", "aioli"]  # the search's order
    assert merged["mixers"]["ado"] == {"chosen": "a-new"} and merged["mixers"]["dga"] == {"chosen": "d"}
    # the kept mixers' runs keep their commit; the earlier uniform and the searched mixer's earlier runs do not
    assert merged["code"]["commits"] == {"new": ["uniform-seed101", "ado-c0-seed101"], "old": ["aioli-c4-seed101", "dga-c0-seed101"]}

    other_ranges = document()
    other_ranges["search"] = {**tune.SEARCH, "dga": {"--dga-step-size": (1.0, 0.1, 3.0)}}
    assert tune.keep_earlier(other_ranges, earlier) == ["aioli"]
    for key, value in (("seeds", [1, 2]), ("configurations", 3), ("mode", "quick")):
        changed = document()
        changed[key] = value
        assert tune.keep_earlier(changed, earlier) == [] and list(changed["mixers"]) == ["ado"]
    assert tune.keep_earlier(document(), None) == []


# ------------------------------------------------------------------------------------------ statistics

# Student's t with 2 degrees of freedom has closed forms: CDF F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so
# the two-sided p of |t| is 1 - |t| / sqrt(2 + t^2), and the quantile of p is (2p - 1) / sqrt(2 p (1 - p)).
T_975_DF2 = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)  # 4.3027
T_975_DF4 = 2.7764451051977987  # tables of Student's t: 97.5th percentile, 4 degrees of freedom


def test_a_paired_comparison_over_three_seeds_matches_the_closed_form(significance):
    values = {1: 5.50, 2: 5.65, 3: 5.70}
    reference = {1: 5.80, 2: 5.90, 3: 6.00, 4: 7.0}  # seed 4 has no partner: left out
    # differences -0.30, -0.25, -0.30: mean -0.28333, deviations -1/60, +2/60, -1/60 -> variance (6/3600)/2
    mean, std = -0.85 / 3, math.sqrt((6 / 3600) / 2)
    se = std / math.sqrt(3)
    t = mean / se
    result = significance.compare(values, reference)
    assert result["seeds"] == [1, 2, 3]
    assert result["differences"] == pytest.approx([-0.30, -0.25, -0.30])
    assert (result["n"], result["mean"], result["std"], result["se"]) == (3, pytest.approx(mean), pytest.approx(std), pytest.approx(se))
    assert result["low"] == pytest.approx(mean - T_975_DF2 * se)
    assert result["high"] == pytest.approx(mean + T_975_DF2 * se)
    assert result["p"] == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))
    assert result["verdict"] == "better"
    assert significance.seeds_lower(result) == 3


def test_an_interval_that_holds_zero_is_no_detectable_difference(significance):
    # differences -0.1, +0.1, -0.2, 0.0, +0.2: mean 0, variance 0.1 / 4
    result = significance.compare({s: 5.0 + d for s, d in zip(range(1, 6), (-0.1, 0.1, -0.2, 0.0, 0.2))}, {s: 5.0 for s in range(1, 6)})
    half = T_975_DF4 * math.sqrt(0.1 / 4) / math.sqrt(5)
    assert (result["low"], result["high"]) == (pytest.approx(-half), pytest.approx(half))
    assert result["p"] == pytest.approx(1.0)
    assert result["verdict"] == "no detectable difference"


def test_worse_needs_the_whole_interval_above_zero(significance):
    worse = significance.compare({1: 1.2, 2: 1.3, 3: 1.25}, {1: 1.0, 2: 1.0, 3: 1.0})
    assert worse["low"] > 0 and worse["verdict"] == "worse"
    single = significance.compare({1: 1.2}, {1: 1.0})
    assert (single["mean"], single["low"], single["p"], single["verdict"]) == (pytest.approx(0.2), None, None, "too few seeds")
    assert significance.interval_text(single) == "+0.2000"
    assert significance.interval_text(significance.compare({}, {})) == "-"


def test_differences_that_do_not_vary_have_a_point_interval_and_no_p(significance):
    result = significance.compare({1: 2.0, 2: 3.0}, {1: 1.5, 2: 2.5})
    assert (result["low"], result["high"], result["p"], result["verdict"]) == (pytest.approx(0.5), pytest.approx(0.5), None, "worse")


def test_the_error_of_a_mean_over_domains(significance):
    # uniform mean of three domains with standard errors 0.3, 0.4, 1.2: sqrt(0.09 + 0.16 + 1.44) / 3
    assert significance.combined_error([0.3, 0.4, 1.2], [1 / 3] * 3) == pytest.approx(math.sqrt(1.69) / 3)
    assert significance.combined_error([0.3, None], [0.5, 0.5]) is None


# ------------------------------------------------------------------------------------------ the trade-off


def _point(name: str, general: dict[int, float], target: dict[int, float]) -> dict:
    return {"row": {"name": name}, "general_loss": {"final": {"mean": sum(general.values()) / len(general)}},
            "target_loss": {"final_per_seed": target}}


def test_a_point_is_compared_with_the_other_curve_interpolated_at_its_general_loss(monkeypatch):
    analysis = _load(monkeypatch, "significance", "transfers", "mixing_quality_analysis", "target_quality_analysis")
    other = [_point("far", {1: 5.4, 2: 5.5, 3: 5.6}, {1: 5.6, 2: 5.7, 3: 5.8}),  # general mean 5.5
             _point("uniform", {1: 5.0, 2: 5.1, 3: 5.2}, {1: 6.0, 2: 6.1, 3: 6.2})]  # general mean 5.1
    # general mean 5.3: halfway, so the other curve's target there is {5.8, 5.9, 6.0}; differences
    # -0.30, -0.25, -0.30 as in the three-seed test above: the whole interval below zero
    point = _point("p", {1: 5.2, 2: 5.3, 3: 5.4}, {1: 5.50, 2: 5.65, 3: 5.70})
    found = analysis.against_curve(point, other)
    assert (found["position"], found["between"], found["weight"]) == ("below", ["uniform", "far"], pytest.approx(0.5))
    assert found["paired"]["differences"] == pytest.approx([-0.30, -0.25, -0.30])



def test_beyond_the_other_curve_only_dominance_decides(monkeypatch):
    analysis = _load(monkeypatch, "significance", "transfers", "mixing_quality_analysis", "target_quality_analysis")
    other = [_point("uniform", {1: 5.0, 2: 5.1, 3: 5.2}, {1: 6.0, 2: 6.1, 3: 6.2}),  # general mean 5.1
             _point("far", {1: 5.4, 2: 5.5, 3: 5.6}, {1: 5.6, 2: 5.7, 3: 5.8})]  # general mean 5.5
    cheaper = {1: 4.9, 2: 5.0, 3: 5.1}  # general mean 5.0, below the curve's cheapest
    dearer = {1: 5.7, 2: 5.8, 3: 5.9}  # general mean 5.8, above its dearest
    lower = lambda start: {1: start - 0.30, 2: start - 0.15, 3: start - 0.20}  # differences -0.30, -0.25, -0.30 from {start, start+0.1, start+0.2}
    higher = lambda start: {1: start + 0.30, 2: start + 0.35, 3: start + 0.50}  # +0.30, +0.25, +0.30
    cases = [(cheaper, lower(6.0), "below", "uniform"), (cheaper, higher(6.0), "outside its range", "uniform"),
             (dearer, higher(5.6), "above", "far"), (dearer, lower(5.6), "outside its range", "far")]
    for general, target, position, end in cases:
        found = analysis.against_curve(_point("q", general, target), other)
        assert (found["position"], found["between"]) == (position, [end])


def test_a_relative_work_folder_reaches_the_runs_absolute_and_a_blends_content_keys_its_run(monkeypatch, tmp_path):
    # The benchmarks' work folder is relative by default, and each run starts in its own folder.
    target_quality = _load(monkeypatch, "common", "code_version", "significance", "transfers", "mixing_quality_analysis",
                           "run_archive", "runs", "result_files", "corpora", "target_quality_analysis", "target_quality_plots",
                           "target_quality_report", "target_quality")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work" / "blends").mkdir(parents=True)
    blend = tmp_path / "work" / "blends" / "importance-quiz-a0.5.json"
    args = target_quality.parse_args(["--quick", "--work-dir", "work"])
    assert args.work_dir == str(tmp_path / "work")
    args.data_path, args.tokenizer_model = str(tmp_path / "domains.json"), str(tmp_path / "tok.model")
    args.target_prefixes = {"quiz": str(tmp_path / "quiz_text_document")}
    row = target_quality.Row("importance x 0.5", "blend", "importance-blend0.5", share=0.5)
    run = target_quality.TargetRun(os.path.join(args.work_dir, "root"), row, 1, args, ["quiz"], os.path.join(args.work_dir, "blends", blend.name))

    arguments = run.arguments()
    last = len(arguments) - 1 - arguments[::-1].index("--data-path")
    assert arguments[last + 1] == str(blend) and _option(arguments, "--mixer") == "static"
    keys = []
    for text in ('{"domains": [1]}', '{"domains": [2]}'):
        blend.write_text(text, encoding="utf-8")
        keys.append(run.keys()["key"])
    assert keys[0] != keys[1]


# ------------------------------------------------------------------------------------------ archived runs


def _fake_child(runs, children: list):
    """A stand-in for `pretrain_acodm.py` that writes the records a run of domains a and b leaves:
    its training's (loss 5.0 at the last step) or, with --skip-train, its final evaluation's (loss 4.0 and 4.5)."""
    def child(argv, *, cwd, env, log, error_log, on_poll=None):
        arguments = argv[2:]
        children.append("evaluation" if "--skip-train" in arguments else "training")
        step = int(runs._option_value(arguments, "--train-iters"))
        domains = {"a": {"loss": 4.0, "loss_se": 0.1, "corpus_tokens": 300}, "b": {"loss": 4.5, "loss_se": 0.2, "corpus_tokens": 100}}
        records = [{"kind": "run", "domains": ["a", "b"]}, {"kind": "valid", "iteration": step, "domains": domains}]
        if "--skip-train" not in arguments:
            shares = {name: {"weight": 0.5, "share": 0.5} for name in domains}
            records.insert(1, {"kind": "train", "iteration": step, "lm_loss": 5.0, "iteration_ms": 9.0, "domains": shares})
        with open(runs._option_value(arguments, "--metrics-path"), "w", encoding="utf-8") as stream:
            stream.writelines(json.dumps(record) + "\n" for record in records)
        return {"returncode": 0, "wall_s": 1.5, "peak_rss_mib": 10.0}
    return child


def test_a_complete_run_is_archived_and_a_machine_without_it_restores_it_under_the_same_keys_only(quick_runs, monkeypatch, tmp_path):
    runs, run, corpus = quick_runs
    children = []
    monkeypatch.setattr(runs, "run_process", _fake_child(runs, children))
    archive = tmp_path / "results" / "runs" / tmp_path.name / "root" / "uniform-seed3.tar.gz"
    first = runs.execute_runs([run("uniform")], fresh=False)["uniform-seed3"]
    assert children == ["training", "evaluation"]
    with tarfile.open(archive) as stream:  # the records, not the checkpoint
        assert sorted(stream.getnames()) == ["final_eval.jsonl", "metrics.jsonl", "result.json", "training.json"]
    packed = archive.read_bytes()
    run("uniform").keep()
    assert archive.read_bytes() == packed  # archiving it again changes no byte

    # A machine without the work folder: the run comes back from its archive, not from a child.
    shutil.rmtree(tmp_path / "root")
    again = runs.execute_runs([run("uniform")], fresh=False)["uniform-seed3"]
    assert children == ["training", "evaluation"] and again == first and again["commit"] == first["commit"]
    final = run("uniform").curves()[1]["final"]
    assert math.isclose(final["lm_loss"], (4.0 * 300 + 4.5 * 100) / 400) and math.isclose(final["lm_loss_uniform"], 4.25)

    # Another corpus is another key: the archive is not restored, the run runs and its archive is replaced.
    shutil.rmtree(tmp_path / "root")
    corpus.write_text('{"other": 1}', encoding="utf-8")
    changed = run("uniform")
    runs.execute_runs([changed], fresh=False)
    assert children == ["training", "evaluation"] * 2
    assert runs.run_archive.keys(str(archive)) == changed.keys() != {"key": first["key"], "final_key": first["final_key"]}

    # A damaged archive, or one whose member would land outside the run's folder, reads as none: the run runs again.
    for damage in ("garbage", "escape"):
        shutil.rmtree(tmp_path / "root")
        if damage == "garbage":
            archive.write_bytes(b"not an archive")
        else:
            with tarfile.open(archive, "w:gz") as stream:
                stream.add(str(corpus), arcname="../result.json")
        assert runs.run_archive.keys(str(archive)) is None
        runs.execute_runs([run("uniform")], fresh=False)
        assert not (tmp_path / "root" / "result.json").exists() and runs.run_archive.keys(str(archive)) == changed.keys()
    assert children == ["training", "evaluation"] * 4


def test_an_archive_names_paths_from_their_places_and_a_run_restored_elsewhere_names_its_own(monkeypatch, tmp_path):
    run_archive = _load(monkeypatch, "run_archive")

    def place(machine):  # a repository, a benchmark root in it, a run folder in that
        repo = tmp_path / machine / "repo"
        return {"repo": str(repo), "root": str(repo / "data" / "root"), "run": str(repo / "data" / "root" / "uniform-seed1")}

    def places(where):
        return ((where["run"], "<run>"), (where["root"], "<root>"), (where["repo"], "<repo>"))

    def header(where):  # what a run header logs: paths in each place, one outside all, one only looking like the run's folder
        config = {"metrics_path": f"{where['run']}/metrics.jsonl", "save": where["run"], "data_path": [f"{where['root']}/blend.json"],
                  "tokenizer_model": f"{where['repo']}/data/tokenizer.model", "data_cache_path": "/elsewhere/cache",
                  "load": f"{where['run']}-old/checkpoint"}
        return json.dumps({"kind": "run", "config": config}) + "\n"

    archives = []
    for machine in ("first", "second"):
        where = place(machine)
        os.makedirs(where["run"])
        with open(os.path.join(where["run"], "metrics.jsonl"), "w", encoding="utf-8") as stream:
            stream.write(header(where))
        archives.append(str(tmp_path / f"{machine}.tar.gz"))
        run_archive.pack(archives[-1], where["run"], ["metrics.jsonl"], places(where))
    first, second = (open(path, "rb").read() for path in archives)
    assert first == second  # the same records at two places: the same bytes
    with tarfile.open(archives[0]) as stream:
        kept = json.loads(stream.extractfile("metrics.jsonl").read())["config"]
    assert kept == {"metrics_path": "<run>/metrics.jsonl", "save": "<run>", "data_path": ["<root>/blend.json"],
                    "tokenizer_model": "<repo>/data/tokenizer.model", "data_cache_path": "/elsewhere/cache",
                    "load": "<root>/uniform-seed1-old/checkpoint"}
    third = place("third")
    assert run_archive.unpack(archives[0], third["run"], places(third))
    with open(os.path.join(third["run"], "metrics.jsonl"), encoding="utf-8") as stream:
        assert stream.read() == header(third)


def test_an_acodm_proxy_archive_keeps_no_actor_so_the_proxy_runs_again_and_its_transfer_is_restored(quick_runs, monkeypatch, tmp_path):
    runs, run, _ = quick_runs
    children = []
    fake = _fake_child(runs, children)

    def child(argv, **kwargs):  # a proxy's training writes the same actor every time
        outcome = fake(argv, **kwargs)
        arguments = argv[2:]
        if "--acodm-export-policy" in arguments:
            with open(runs._option_value(arguments, "--acodm-export-policy"), "wb") as stream:
                stream.write(b"actor weights")
        return outcome

    def exports(metrics_path, folder):  # the mixtures it followed, the same every time
        for name in ("schedule.json", "mean_blend.json"):
            with open(os.path.join(folder, name), "w", encoding="utf-8") as stream:
                stream.write(name)
    monkeypatch.setattr(runs, "run_process", child)
    monkeypatch.setattr(runs, "write_exports", exports)
    first = runs.execute_runs([run("proxy"), run("acodm_proxy")], fresh=False)
    assert children == ["training", "training", "evaluation"]
    archives = tmp_path / "results" / "runs" / tmp_path.name / "root"
    with tarfile.open(archives / "proxy-seed3.tar.gz") as stream:  # the mixtures its transfers read, not the actor
        assert sorted(stream.getnames()) == ["mean_blend.json", "metrics.jsonl", "result.json", "schedule.json", "training.json"]

    # A machine without the work folder: the proxy runs again (its actor was not kept); the transfer reads the
    # same actor, so its key is unchanged and it comes back from its archive, with no training or evaluation.
    shutil.rmtree(tmp_path / "root")
    again = runs.execute_runs([run("proxy"), run("acodm_proxy")], fresh=False)
    assert children == ["training", "training", "evaluation", "training"]
    assert again["acodm_proxy-seed3"] == first["acodm_proxy-seed3"]


def test_a_run_whose_checkpoint_others_start_from_keeps_no_archive(monkeypatch, tmp_path):
    mergemix_quality = _load(monkeypatch, "common", "code_version", "significance", "transfers", "mixing_quality_analysis",
                             "run_archive", "runs", "result_files", "corpora", "mixing_quality_plots", "mixing_quality_report",
                             "mixing_quality", "mergemix_quality")
    args = argparse.Namespace(work_dir=str(tmp_path), output_dir=str(tmp_path / "results"), steps=30, base_steps=10)
    base = mergemix_quality.BaseRun(str(tmp_path / "root"), args)
    assert base.saves_checkpoint and base.archive is None
