"""The training runs the quality benchmarks compare: one cached `pretrain_acodm.py` subprocess per
mixer (or variant) and seed, its final evaluation, and the loop that runs the missing ones.

A run lives in `<root>/<label or mixer>-seed<S>/` (`root` names the settings every run of a
benchmark shares by their hash): `metrics.jsonl`, the final checkpoint (`checkpoint/`),
`final_eval.jsonl`, `result.json` and the logs. Its key is a hash of the code it runs (`code_version`:
the package and the entry point, of mixing/ only what its mixer imports; a proxy's also
`transfers.py`, which writes its exports, and what that imports), its whole command line
(paths inside the benchmark's root written relative to it, other repository paths relative to the
repository) and the content of every file it names outside its own folder (a corpus manifest, a
blend, an AC-ODM policy, the checkpoint it starts from). A run whose `result.json` holds its
current key and whose records reach the last step is complete and reused; any other is run again
from scratch, so a table never mixes code versions or settings. A benchmark interrupted and
started again reuses every complete run, and a run whose training finished keeps it and only
evaluates again. A complete run's records (not its checkpoint) are also archived under the output
folder (`run_archive`: `<output-dir>/runs/<work folder>/<root>/<run>.tar.gz`, committed with the
reports), and a run missing from the work folder is restored from its archive where that holds the
run's current keys: a benchmark run in parts on machines that do not keep their scratch folders
loses no complete run.

The final evaluation: after training, a second child loads the final checkpoint with
`--skip-train` and evaluates it once on `final_eval_iters` global batches of held-out samples (many
more than the periodic evaluations read) into `final_eval.jsonl`; the tables' final losses come
from it, with each domain's sampling error (`loss_se`). Its key is the run's key and its own
command line.

Held-out documents (`--split`, per domain, by document): every run trains on the first 96.9% and
evaluates on the next 3% (`SPLIT`). A benchmark that selects something on held-out loss (MergeMix's
search) does it on `SELECTION_SPLIT`'s validation documents, 95.3% to 96.9%: runs on `SPLIT` train on
them but never evaluate on them, so what was selected is reported on documents it was not selected on.

Each run's `result.json` records the git commit it ran at and whether the package differed from it.
Used by `mixing_quality.py`, `target_quality.py` and `mergemix_quality.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

from code_version import code_hash, digest, git_commit, portable
from common import REPO, child_env, progress, run_process, say, tail, write_json
from megatron_acodm.data.manifest import Manifest
from megatron_acodm.data.tokenizers import file_sha256
from megatron_acodm.errors import UserError
from megatron_acodm.mergemix.experts import checkpoint_fingerprint
from megatron_acodm.metrics import validation_means
from megatron_acodm.metrics.reader import read_metrics
from megatron_acodm.mixing import MIXERS
from megatron_acodm.training.checkpoint import open_checkpoint
from mixing_quality_analysis import clock, eval_interval, log_interval
import run_archive
from significance import combined_error
from transfers import POLICY, PROXIES, TRANSFERS, proxy_exports, proxy_products, transfer_arguments, transfer_corpus, write_exports

ENTRY_POINT = "pretrain_acodm.py"
EXPORTER = "bench/transfers.py"  # writes a proxy's exports after its training: part of the proxy's code
SPLIT = "969,30,1"  # train, validation (periodic and final evaluations), test: shares of each domain's documents
SELECTION_SPLIT = "953,16,31"  # its validation documents (95.3%-96.9%) are what a search may select on
TUNED_TEMPERATURE = 5.59  # the temperature mixer's T the benchmarks run, chosen by bench/tune_mixers.py
# Our variants of a published method, each under its own name beside the method (which runs at its defaults).
VARIANTS = {
    "acodm_bounded": ["--mixer", "acodm", "--acodm-action", "bounded", "--acodm-reward", "alignment", "--acodm-train-actor"],
}

# The runs' sizes and schedule, (full, quick): every benchmark's defaults, so that they train the same GPT.
# `final_eval_iters`: global batches of the final evaluation; the full preset's 128 x 16 sequences read
# 256 per domain of the demo corpus's 8 (227 of the noisy corpus's 9; a domain with fewer held-out
# sequences gives all it has: the demo's smallest, dialogue, 229).
PRESETS = {
    "full": dict(steps=450, seeds="1,2,3,4,5", layers=4, hidden=128, heads=4, seq_length=128, global_batch=16,
                 micro_batch=8, proxy_layers=2, proxy_hidden=64, evaluations=10, eval_iters=8, final_eval_iters=128,
                 log_points=45),
    "quick": dict(steps=40, seeds="1,2", layers=2, hidden=64, heads=4, seq_length=64, global_batch=16,
                  micro_batch=8, proxy_layers=1, proxy_hidden=32, evaluations=4, eval_iters=2, final_eval_iters=16,
                  log_points=20),
}


def write_blend(path: str, manifest: Manifest, mixture: dict[str, float]) -> str:
    """A blend file: `manifest`'s domains with the weights `mixture` (by name), for `--data-path BLEND --mixer static`."""
    manifest.with_weights(mixture).save(path)
    return path


def read_json(path: str) -> Optional[dict[str, Any]]:
    """A record this module wrote, or None where there is none (or only a damaged one: it is redone)."""
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def _option_value(arguments: Sequence[str], flag: str) -> Optional[str]:
    """The value of the last `flag` in `arguments` (argparse's last one wins), or None."""
    positions = [index for index, word in enumerate(arguments[:-1]) if word == flag]
    return arguments[positions[-1] + 1] if positions else None


def _without(arguments: Sequence[str], flags: Sequence[str]) -> list[str]:
    """`arguments` without each of `flags` and its value."""
    kept, skip = [], False
    for word in arguments:
        if skip:
            skip = False
        elif word in flags:
            skip = True
        else:
            kept.append(word)
    return kept


def reads_objective(mixer_arguments: Sequence[str]) -> bool:
    """Whether the mixer of these options reads `--mixing-objective` (the trainer refuses it to the
    others): AC-ODM's published reward reads none, its alignment reward does."""
    mixer = _option_value(mixer_arguments, "--mixer")
    if mixer == "acodm" and _option_value(mixer_arguments, "--acodm-reward") in (None, "published"):
        return False
    return "mixing_objective" in MIXERS[mixer].reads


class Run:
    """One training subprocess (a mixer, or a proxy: `transfers.PROXIES`, at one seed) and its final evaluation.

    `label` (default: the mixer) names the run's folder, for a mixer run in several settings;
    `options` are extra mixer options (e.g. `["--dga-step-size", "3"]`); `split` is its `--split`."""

    def __init__(self, root: str, mixer: str, seed: int, args: argparse.Namespace, label: Optional[str] = None,
                 options: Sequence[str] = (), split: str = SPLIT):
        self.mixer, self.seed, self.options, self.split = mixer, seed, list(options), split
        self.label = label or mixer
        self.is_proxy = mixer in PROXIES
        # the proxy run a transfer reads (`transfers.TRANSFERS`): its products are this run's inputs
        self.reads = f"{TRANSFERS[mixer].proxy}-seed{seed}" if mixer in TRANSFERS else None
        self.root = os.path.abspath(root)
        self.name = f"{self.label}-seed{seed}"
        self.folder = os.path.join(self.root, self.name)
        self.metrics = os.path.join(self.folder, "metrics.jsonl")
        self.final_metrics = os.path.join(self.folder, "final_eval.jsonl")
        self.checkpoint = os.path.join(self.folder, "checkpoint")
        self.training_path = os.path.join(self.folder, "training.json")
        self.result_path = os.path.join(self.folder, "result.json")
        self.args = args
        self.steps = args.steps
        self.final_evaluation = not self.is_proxy  # a proxy's products are what its transfers read, not its loss

    @property
    def last_step(self) -> int:
        """The step its records and its checkpoint reach."""
        return self.steps

    @property
    def saves_checkpoint(self) -> bool:
        """Whether it saves its last step (what the final evaluation loads)."""
        return self.final_evaluation

    # ---------------------------------------------------------------- the command lines

    def arguments(self) -> list[str]:
        return self.training_arguments() + self.mixer_arguments()

    def training_arguments(self) -> list[str]:
        """What every run of the comparison shares: data, model, schedule, logging, the final checkpoint."""
        args = self.args
        layers, hidden = (args.proxy_layers, args.proxy_hidden) if self.is_proxy else (args.layers, args.hidden)
        arguments = [
            "--data-path", os.path.abspath(self.data_path()), "--split", self.split,
            "--data-cache-path", os.path.abspath(os.path.join(args.work_dir, "cache")),
            "--tokenizer-type", args.tokenizer_type, "--tokenizer-model", os.path.abspath(args.tokenizer_model),
            "--num-layers", str(layers), "--hidden-size", str(hidden), "--num-attention-heads", str(args.heads),
            "--seq-length", str(args.seq_length), "--hidden-dropout", "0", "--attention-dropout", "0",
            "--micro-batch-size", str(args.micro_batch), "--global-batch-size", str(args.global_batch),
            "--train-iters", str(self.steps), "--lr", str(args.lr), "--min-lr", str(args.min_lr),
            "--lr-warmup-iters", str(max(1, self.steps // 10)), "--lr-decay-style", "cosine",
            "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", str(self.seed),
            "--log-interval", str(log_interval(args)), "--eval-interval", str(eval_interval(args)),
            "--eval-iters", str(args.eval_iters), "--metrics-path", self.metrics,
        ]
        if self.saves_checkpoint:
            arguments += ["--save", self.checkpoint, "--save-interval", str(self.last_step)]
        return arguments

    def data_path(self) -> str:
        """The corpus, or for a transfer of a proxy's mean mixture the blend of it the proxy wrote."""
        blend = transfer_corpus(self.mixer, os.path.join(self.root, self.reads)) if self.reads else None
        return blend or self.args.data_path

    def mixer_arguments(self) -> list[str]:
        """The mixer and its options."""
        args = self.args
        arguments = []
        if self.mixer == "temperature":
            arguments += ["--mixer", "temperature", "--mixing-temperature", str(args.temperature)]
        elif self.is_proxy:
            arguments += ["--mixer", PROXIES[self.mixer]]
            if PROXIES[self.mixer] == "acodm":
                arguments += ["--acodm-export-policy", os.path.join(self.folder, POLICY)]
        elif self.reads:
            arguments += transfer_arguments(self.mixer, os.path.join(self.root, self.reads))
        elif self.mixer == "aioli" and args.quick:  # 40 steps hold no default round (5 of them, 2 sweeps each)
            arguments += ["--mixer", "aioli", "--aioli-rounds", "1", "--aioli-sweeps", "1", "--aioli-segment-steps", "1"]
        else:
            arguments += VARIANTS.get(self.mixer, ["--mixer", self.mixer])
        if args.mixing_objective and reads_objective(arguments):
            arguments += ["--mixing-objective", ",".join(args.mixing_objective)]
        return arguments + self.options

    def evaluation_arguments(self) -> list[str]:
        """The final evaluation: the run's own arguments, its checkpoint loaded, no training, many more held-out samples."""
        return [*_without(self.arguments(), ("--save", "--save-interval")), "--skip-train", "--load", self.checkpoint,
                "--eval-iters", str(self.args.final_eval_iters), "--metrics-path", self.final_metrics]

    def command(self, arguments: Optional[list[str]] = None) -> list[str]:
        return [sys.executable, os.path.join(REPO, ENTRY_POINT), *(self.arguments() if arguments is None else arguments)]

    # ---------------------------------------------------------------- the key

    @property
    def places(self) -> tuple[tuple[str, str], ...]:
        """Where the key and the archive write a path from: the run's folder, else the root, else the repository."""
        return (self.folder, "<run>"), (self.root, "<root>"), (REPO, "<repo>")

    def _portable(self, word: str) -> str:
        """A path as the key holds it (`places`)."""
        return portable(word, self.places)

    def _inputs(self, arguments: Sequence[str]) -> dict[str, Optional[str]]:
        """The content of what the command reads from outside its folder: files by sha256, checkpoints
        by their fingerprint (None: missing; the run will fail on it)."""
        inputs = {}
        for word in arguments:
            if not os.path.isabs(word) or word.startswith(self.folder + os.sep):
                continue
            if os.path.isfile(word):
                inputs[self._portable(word)] = file_sha256(word)
            elif os.path.isdir(word) and os.path.exists(os.path.join(word, "latest_checkpointed_iteration.txt")):
                opened = open_checkpoint(word)
                inputs[self._portable(word)] = None if opened is None else checkpoint_fingerprint(opened[0])
        return inputs

    def mixer_module(self) -> str:
        """The module of the mixer the command runs (`--mixer`, default static)."""
        return MIXERS[_option_value(self.arguments(), "--mixer") or "static"].__module__

    def identity(self) -> dict[str, Any]:
        """What decides the run's numbers: the code, the command line and the content of its inputs."""
        arguments = self.arguments()
        entry_points = [ENTRY_POINT, EXPORTER] if self.is_proxy else [ENTRY_POINT]
        return {"code": code_hash(REPO, entry_points, self.mixer_module()),
                "command": ["python", ENTRY_POINT, *map(self._portable, arguments)],
                "inputs": self._inputs(arguments)}

    def keys(self) -> dict[str, Optional[str]]:
        """`key` (the training's) and `final_key` (the final evaluation's: the training's key and its own command)."""
        key = digest(self.identity())
        final = None
        if self.final_evaluation:
            final = digest({"run": key, "command": [self._portable(word) for word in self.evaluation_arguments()]})
        return {"key": key, "final_key": final}

    # ---------------------------------------------------------------- state on disk

    def _reaches_end(self, path: str, train_too: bool) -> bool:
        """Whether the metrics file `path` has an evaluation (and, with `train_too`, a train record) at the last step."""
        try:
            _, train, valid = read_metrics(path)
        except UserError:
            return False
        ends = bool(valid) and valid[-1]["iteration"] == self.last_step
        return ends and (not train_too or (bool(train) and train[-1]["iteration"] == self.last_step))

    def _logged(self, key: str) -> bool:
        """The training finished under `key`: its record, its metrics to the last step (a proxy: its products)."""
        record = read_json(self.training_path)
        if record is None or record.get("key") != key or not self._reaches_end(self.metrics, train_too=True):
            return False
        return not self.is_proxy or all(os.path.exists(path) for path in proxy_products(self.mixer, self.folder))

    def _trained(self, key: str) -> bool:
        """The training finished under `key` and left what comes after it needs: its checkpoint, where it saves one."""
        return self._logged(key) and (not self.saves_checkpoint or self.checkpoint_at_last_step())

    def checkpoint_at_last_step(self) -> bool:
        opened = open_checkpoint(self.checkpoint) if os.path.isdir(self.checkpoint) else None
        return opened is not None and opened[1]["iteration"] == self.last_step

    def _final_complete(self) -> bool:
        if not self._reaches_end(self.final_metrics, train_too=False):
            return False
        _, _, valid = read_metrics(self.final_metrics)
        return all("loss_se" in entry for entry in valid[-1]["domains"].values())

    def complete(self) -> bool:
        """Its result holds its current keys, and its records (training, final evaluation) reach the last step."""
        result = read_json(self.result_path)
        if result is None:
            return False
        keys = self.keys()
        if result.get("key") != keys["key"] or result.get("final_key") != keys["final_key"]:
            return False
        if self.final_evaluation:  # its checkpoint served that evaluation only: a run restored from its archive has none
            return self._logged(keys["key"]) and self._final_complete()
        return self._trained(keys["key"])

    def result(self) -> dict[str, Any]:
        return read_json(self.result_path)

    # ---------------------------------------------------------------- its archive

    @property
    def archive(self) -> Optional[str]:
        """Where a complete run's records are kept (`run_archive`): under the output folder, at the
        place of its folder in the work folder. None for a run whose checkpoint is what it is for (the
        MergeMix base, which other runs start from): an archive keeps no checkpoint."""
        if self.saves_checkpoint and not self.final_evaluation:
            return None
        work = os.path.abspath(self.args.work_dir)
        place = os.path.join(os.path.basename(work), os.path.relpath(self.folder, work))
        return os.path.join(os.path.abspath(self.args.output_dir), "runs", f"{place}.tar.gz")

    def records(self) -> list[str]:
        """The files of its folder that its archive keeps. A proxy's exports but not the AC-ODM actor:
        at the reference's size (5 x 1024) it is 17 MB of weights per seed, too much to commit, so a
        proxy restored without it is incomplete and runs again (about 2 minutes), to the same bytes."""
        paths = [self.training_path, self.result_path, self.metrics, *([self.final_metrics] if self.final_evaluation else []),
                 *(proxy_exports(self.folder) if self.is_proxy else [])]
        return [os.path.relpath(path, self.folder) for path in paths]

    def keep(self) -> None:
        """Archive a complete run's records."""
        if self.archive is not None:
            run_archive.pack(self.archive, self.folder, self.records(), self.places)

    def restore(self) -> bool:
        """Whether its folder, which held no complete run, now holds the one its archive kept under its current keys."""
        if self.archive is None or not os.path.exists(self.archive) or self.complete():
            return False
        if run_archive.keys(self.archive) != self.keys():
            return False
        self._start_over()
        return run_archive.unpack(self.archive, self.folder, self.places) and self.complete()

    def progress(self) -> int:
        """The last train iteration logged so far (0 when none)."""
        try:
            _, train, _ = read_metrics(self.metrics)
        except UserError:
            return 0
        return train[-1]["iteration"] if train else 0

    # ---------------------------------------------------------------- the numbers

    def curves(self) -> tuple[list[str], dict[str, Any]]:
        """A finished run's domain names and curves: validation per evaluation, mixture and step time per
        log record, and its final evaluation (`final`, None for a run without one).

        The validation means are the trainer's own (`validation_means`) taken over the real domains
        (`args.evaluated`): over every domain, as the trainer logs them, unless the corpus has noise."""
        headers, train, valid = read_metrics(self.metrics)
        names = headers[-1]["domains"]
        corpus_tokens = [valid[-1]["domains"][name]["corpus_tokens"] for name in names] if valid else []
        step_ms = [record["iteration_ms"] for record in train[1:]] or [record["iteration_ms"] for record in train]
        means = [self._means(record)[:2] for record in valid]
        return names, {
            "valid": {
                "iteration": [record["iteration"] for record in valid],
                "lm_loss": [token_weighted for token_weighted, _ in means],
                "lm_loss_uniform": [uniform for _, uniform in means],
                "domain_loss": {name: [record["domains"][name]["loss"] for record in valid] for name in names},
                # the held-out loss of each target set, for runs given --target-data-path
                "target_loss": {name: [record["targets"][name]["loss"] for record in valid] for name in (valid[-1].get("targets", {}) if valid else {})},
            },
            "train": {
                "iteration": [record["iteration"] for record in train],
                "lm_loss": [record["lm_loss"] for record in train],
                "iteration_ms": [record["iteration_ms"] for record in train],
                "weight": {name: [record["domains"][name]["weight"] for record in train] for name in names},
                "share": {name: [record["domains"][name]["share"] for record in train] for name in names},
            },
            "final": self._final(names) if self.final_evaluation else None,
            "corpus_tokens": corpus_tokens,
            # the first log interval holds the first steps' one-off costs; the median resists the shared cores' bursts
            "median_step_ms": statistics.median(step_ms) if step_ms else None,
        }

    def _means(self, record: dict[str, Any]) -> tuple[Optional[float], Optional[float], Optional[float], Optional[float]]:
        """(token-weighted mean, uniform mean, and their standard errors) of an evaluation over `args.evaluated`;
        the errors None where the record has no `loss_se`."""
        domains = [record["domains"][name] for name in self.args.evaluated]
        token_weighted, uniform = validation_means([domain["loss"] for domain in domains], [domain["corpus_tokens"] for domain in domains])
        tokens = [domain["corpus_tokens"] for domain in domains]
        errors = [domain.get("loss_se") for domain in domains]
        return (token_weighted, uniform, combined_error(errors, [count / sum(tokens) for count in tokens]),
                combined_error(errors, [1 / len(domains)] * len(domains)))

    def _final(self, names: list[str]) -> dict[str, Any]:
        """The final evaluation's losses, means and sampling errors (`loss_se`: over its sequences)."""
        _, _, valid = read_metrics(self.final_metrics)
        record = valid[-1]
        token_weighted, uniform, token_weighted_se, uniform_se = self._means(record)
        targets = record.get("targets", {})
        return {
            "iteration": record["iteration"], "eval_iters": self.args.final_eval_iters,
            "lm_loss": token_weighted, "lm_loss_uniform": uniform, "lm_loss_se": token_weighted_se, "lm_loss_uniform_se": uniform_se,
            "domain_loss": {name: record["domains"][name]["loss"] for name in names},
            "domain_loss_se": {name: record["domains"][name]["loss_se"] for name in names},
            "target_loss": {name: target["loss"] for name, target in targets.items()},
            "target_loss_se": {name: target.get("loss_se") for name, target in targets.items()},
        }

    # ---------------------------------------------------------------- running it

    def _start_over(self) -> None:
        """Remove what an earlier run in this folder left (its products too, for a proxy)."""
        for leftover in (self.metrics, self.final_metrics, self.training_path, self.result_path,
                         *(proxy_products(self.mixer, self.folder) if self.is_proxy else [])):
            if os.path.exists(leftover):
                os.remove(leftover)
        if os.path.isdir(self.checkpoint):
            shutil.rmtree(self.checkpoint)

    def execute(self, on_poll) -> dict[str, Any]:
        """Train it (unless its training under the current key finished) and evaluate it; returns its
        result: keys, code hash, commit, wall time, ru_maxrss, exit status, the commands."""
        keys = self.keys()
        os.makedirs(self.folder, exist_ok=True)
        training = read_json(self.training_path) if self._trained(keys["key"]) else None
        if training is None:  # the commit and code hash are the training's: the final evaluation reruns alone only under the same key
            self._start_over()
            training = {"name": self.name, "mixer": self.mixer, "label": self.label, "seed": self.seed, "key": keys["key"],
                        "code_hash": self.identity()["code"], **git_commit(REPO)}
            error_log = os.path.join(self.folder, "stderr.log")
            child = run_process(self.command(), cwd=self.folder, env=child_env(self.args.threads),
                                log=os.path.join(self.folder, "stdout.log"), error_log=error_log, on_poll=on_poll)
            training.update(child, command=["python", ENTRY_POINT, *self.arguments()])
            if child["returncode"] != 0:
                return {**training, "stderr_tail": tail(error_log)}
            if self.is_proxy:  # what its transfers read
                write_exports(self.metrics, self.folder)
            write_json(self.training_path, training)
        result = {**training, "final_key": keys["final_key"]}
        if self.final_evaluation:
            if os.path.exists(self.final_metrics):
                os.remove(self.final_metrics)
            error_log = os.path.join(self.folder, "final_eval.stderr.log")
            child = run_process(self.command(self.evaluation_arguments()), cwd=self.folder, env=child_env(self.args.threads),
                                log=os.path.join(self.folder, "final_eval.stdout.log"), error_log=error_log)
            result["final_evaluation"] = {**child, "command": ["python", ENTRY_POINT, *self.evaluation_arguments()]}
            if child["returncode"] != 0:
                return {**result, "returncode": child["returncode"], "stderr_tail": tail(error_log)}
        write_json(self.result_path, result)
        return result


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_run_options(parser: argparse.ArgumentParser, work_dir: str) -> None:
    """The options every quality benchmark's runs take: threads, parallel runs, scratch and output
    folders, and --fresh."""
    add = parser.add_argument
    add("--threads", type=positive_int, default=1,
        help="OMP_NUM_THREADS of each run (1 by default: the cores are shared, and a second thread "
             "that waits on a busy core slows a step by 10x)")
    add("--jobs", type=positive_int, default=1, help="runs at a time (one core each at --threads 1)")
    # absolute: each run starts in its own folder, and a key holds the content of absolute inputs only
    add("--work-dir", type=os.path.abspath, default=work_dir, help="scratch folder of the runs")
    add("--output-dir", default="bench/results")
    add("--fresh", action="store_true", help="rerun every run, even complete ones")


def shards(runs: list[Run], jobs: int) -> list[list[Run]]:
    """`runs` split over `jobs` threads: a proxy and the transfers that read it in one shard, in
    their order (a transfer waits for its proxy), the rest dealt out so each shard gets about the
    same number of steps; each shard keeps the order of `runs`."""
    groups: dict[str, list[int]] = {}
    for index, run in enumerate(runs):
        groups.setdefault(run.reads or run.name, []).append(index)
    loads, assigned = [0] * jobs, [[] for _ in range(jobs)]
    for members in groups.values():  # in the order of their first run: seed by seed
        lightest = loads.index(min(loads))
        assigned[lightest] += members
        loads[lightest] += sum(runs[index].last_step for index in members)
    return [[runs[index] for index in sorted(indices)] for indices in assigned if indices]


def execute_runs(runs: list[Run], fresh: bool, description: str = "mixing quality", jobs: int = 1) -> dict[str, dict[str, Any]]:
    """The runs in order (seed by seed, so partial results cover every mixer), with a progress bar
    over the steps still to run; a complete run is not run again unless `fresh`. With `jobs` > 1,
    `jobs` threads each take a shard (`shards`: a transfer in its proxy's); each child does its own
    work. A run's archive and completeness are checked again when its turn comes: the proxy it
    reads from may have run meanwhile."""
    if jobs > 1:
        with ThreadPoolExecutor(jobs) as pool:
            done = pool.map(lambda shard: execute_runs(shard, fresh, description), shards(runs, jobs))
            return {name: result for shard in done for name, result in shard.items()}
    if fresh:
        for run in runs:
            if os.path.exists(run.result_path):
                os.remove(run.result_path)
            if os.path.exists(run.training_path):
                os.remove(run.training_path)
    restored = set() if fresh else {run.name for run in runs if run.restore()}  # in order: a proxy before its transfers
    proxies_to_run = {run.name for run in runs if run.is_proxy and not run.complete()}
    pending = {run.name for run in runs if not run.complete() or run.reads in proxies_to_run}
    results: dict[str, dict[str, Any]] = {}
    with progress(sum(run.last_step for run in runs if run.name in pending), description, "step") as bar:
        for index, run in enumerate(runs):
            label = f"[{index + 1}/{len(runs)}] {run.name}"
            planned = run.name in pending
            if run.reads and results.get(run.reads, {}).get("returncode", 0) != 0:
                say(f"{label}: skipped, its proxy run {run.reads} failed")
                results[run.name] = {"name": run.name, "mixer": run.mixer, "seed": run.seed, "returncode": None,
                                     "error": "the proxy run failed"}
                if planned:
                    bar.total -= run.last_step
                    bar.refresh()
                continue
            if not fresh and run.restore():  # a transfer whose proxy ran just now: its inputs, and so its key, are back
                restored.add(run.name)
            if run.complete():
                results[run.name] = run.result()
                run.keep()  # the same bytes where its archive is current; written where it is missing or stale
                say(f"{label}: complete already, skipped ({run.folder}{', restored from ' + run.archive if run.name in restored else ''})")
                if planned:
                    bar.total -= run.last_step
                    bar.refresh()
                continue
            if not planned:
                bar.total += run.last_step
                bar.refresh()
            say(f"{label}: starting")
            bar.set_postfix_str(run.name)
            done = 0

            def on_poll(_: float) -> None:
                nonlocal done
                step = run.progress()
                if step > done:
                    bar.update(step - done)
                    done = step

            result = run.execute(on_poll)
            bar.update(run.last_step - done)
            results[run.name] = result
            if result["returncode"] != 0:
                say(f"{label}: FAILED (exit {result['returncode']}), see {run.folder}:\n{result.get('stderr_tail', '')[-1500:]}")
                continue
            run.keep()
            evaluation = result.get("final_evaluation")
            say(f"{label}: done in {clock(result['wall_s'])} ({1000 * result['wall_s'] / run.last_step:.0f} ms/step "
                f"with start-up), peak RSS {result['peak_rss_mib']:.0f} MiB"
                + (f"; final evaluation {clock(evaluation['wall_s'])}" if evaluation else ""))
    return results


def code_versions(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Which commits the runs ran at (run names by commit), and the runs whose package differed from its commit."""
    commits: dict[str, list[str]] = {}
    for name, result in results.items():
        if result.get("returncode") == 0:
            commits.setdefault(str(result.get("commit")), []).append(name)
    modified = sorted(name for name, result in results.items() if result.get("returncode") == 0 and result.get("package_modified"))
    return {"commits": commits, "runs_with_modified_package": modified, "report_commit": git_commit(REPO)}


def wall_s(result: dict[str, Any]) -> float:
    """A run's wall time: its training and its final evaluation (0 for a run that never started)."""
    return result.get("wall_s", 0.0) + result.get("final_evaluation", {}).get("wall_s", 0.0)
