#!/usr/bin/env python
"""Mixing quality: does online mixing beat static blends on real text? Side by side, several seeds.

    python bench/mixing_quality.py [--quick] [--data-path domains.json --tokenizer-model M]
        [--target-data-path T] [--seeds 1,2,3] [--steps N] [--mixers uniform,temperature,odm,acodm,acodm_proxy]
        [--work-dir data/mixing_quality] [--output-dir bench/results] [--fresh]

Trains the same small GPT on CPU under each mixer, with identical seeds, data, steps and optimiser
settings, one `python pretrain_acodm.py` subprocess at a time:

- `uniform` (the static reference), `temperature` (T = 2 on corpus tokens), `odm`, `acodm`
  (non-proxy, the agent learns online), and `acodm_proxy`: a smaller proxy model trains AC-ODM with
  `--acodm-export-policy`, and its frozen actor drives the target (`--acodm-policy`); the proxy's
  steps are part of that mixer's cost and reported beside it. `static` (tokens-proportional) can be
  added with `--mixers`.
- `--seed` changes the model's initialisation, the data order and the held-out samples; each seed
  runs every mixer, so differences are also reported paired by seed.

Reports, per mixer, the mean and spread over seeds of: the steps needed to reach uniform's final
mean validation loss (uniform mean over domains and corpus-token-weighted mean; linear
interpolation between evaluations; the ratio to uniform's steps), the final per-domain and mean
validation losses, the realised mixture over the run, and the per-step time and peak RSS (each
subprocess's own `ru_maxrss`) against uniform. Writes `<output-dir>/mixing_quality.json` (with every
per-seed curve), `mixing_quality.md` (also printed), `mixing_quality_curves.png` and
`mixing_quality_weights.png`.

Without `--data-path` it uses the demo corpus, building it first (`tools/build_demo_corpus.py`,
`tools/preprocess_domains.py`) when `data/demo/indexed/domains.json` is missing. Runs go to
`<work-dir>/<quick|full>-<hash of the settings>/<mixer>-seed<S>/`; a run whose metrics are complete
is not run again (`--fresh` reruns everything). `--target-data-path` (a held-out target set for a
task-aligned mixer) is recorded but no mixer here reads it yet.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

from megatron_acodm.data.tokenizers import file_sha256
from megatron_acodm.training.metrics import MetricsFileError, read_metrics
from results_file import REPO, write_json

DEMO_DIR = "data/demo"
DEMO_DATA = f"{DEMO_DIR}/indexed/domains.json"
DEMO_TOKENIZER = f"{DEMO_DIR}/tokenizer.model"
ALL_MIXERS = ("static", "uniform", "temperature", "odm", "acodm", "acodm_proxy")
DEFAULT_MIXERS = ("uniform", "temperature", "odm", "acodm", "acodm_proxy")
REFERENCE = "uniform"  # a static blend: the reference of steps, time and memory
DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
MIB = 1024.0

# (full, quick) defaults
PRESETS = {
    "full": dict(steps=450, seeds="1,2,3", layers=4, hidden=128, heads=4, seq_length=128, global_batch=16,
                 micro_batch=8, proxy_layers=2, proxy_hidden=64, evaluations=10, eval_iters=8, log_points=45),
    "quick": dict(steps=40, seeds="1,2", layers=2, hidden=64, heads=4, seq_length=64, global_batch=16,
                  micro_batch=8, proxy_layers=1, proxy_hidden=32, evaluations=4, eval_iters=2, log_points=20),
}


# ------------------------------------------------------------------------------------------ setup


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a minutes-long smoke run: tiny model, 2 seeds, 40 steps")
    add("--data-path", default=None, help=f"a preprocessed corpus' domains.json (default {DEMO_DATA}, built when missing)")
    add("--tokenizer-model", default=None, help=f"the corpus' tokenizer (default {DEMO_TOKENIZER} with the demo corpus)")
    add("--tokenizer-type", default="SentencePieceTokenizer")
    add("--target-data-path", default=None,
        help="held-out target set for a task-aligned mixer: recorded in the results, read by no mixer yet")
    add("--mixers", default=",".join(DEFAULT_MIXERS), help=f"comma-separated, from {','.join(ALL_MIXERS)}")
    add("--seeds", default=None, help="comma-separated --seed values (full: 1,2,3; quick: 1,2)")
    add("--steps", type=int, default=None, help="training steps of every run (full: 450; quick: 40)")
    add("--layers", type=int, default=None)
    add("--hidden", type=int, default=None)
    add("--heads", type=int, default=None)
    add("--seq-length", type=int, default=None)
    add("--global-batch", type=int, default=None)
    add("--micro-batch", type=int, default=None)
    add("--proxy-layers", type=int, default=None, help="the AC-ODM proxy model's layers")
    add("--proxy-hidden", type=int, default=None, help="the AC-ODM proxy model's hidden size")
    add("--evaluations", type=int, default=None, help="validation points per run (every steps/N)")
    add("--eval-iters", type=int, default=None, help="global batches of held-out samples per validation")
    add("--log-points", type=int, default=None, help="train records per run (the mixture's time resolution)")
    add("--lr", type=float, default=1e-3)
    add("--min-lr", type=float, default=1e-4)
    add("--temperature", type=float, default=2.0, help="the temperature mixer's T")
    add("--threads", type=int, default=1,
        help="OMP_NUM_THREADS of each run (1 by default: the cores are shared, and a second thread "
             "that waits on a busy core slows a step by 10x)")
    add("--work-dir", default="data/mixing_quality", help="scratch folder of the runs")
    add("--output-dir", default="bench/results")
    add("--fresh", action="store_true", help="rerun every run, even complete ones")
    args = parser.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full"]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.seeds = [int(seed) for seed in str(args.seeds).split(",") if seed.strip()]
    args.mixers = [mixer.strip() for mixer in args.mixers.split(",") if mixer.strip()]
    unknown = [mixer for mixer in args.mixers if mixer not in ALL_MIXERS]
    if unknown:
        parser.error(f"unknown mixers {unknown}; choose from {', '.join(ALL_MIXERS)}")
    if REFERENCE not in args.mixers:
        parser.error(f"--mixers must include {REFERENCE}: it is the reference of every ratio")
    if not args.seeds:
        parser.error("--seeds needs at least one seed")
    if args.steps < args.evaluations or args.steps < 2:
        parser.error("--steps must be at least --evaluations and 2")
    return args


def _run_tool(arguments: list[str]) -> None:
    print("$ " + " ".join(arguments), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, *arguments], cwd=REPO, check=True)


def ensure_corpus(args: argparse.Namespace) -> None:
    """Default to the demo corpus, building and indexing it when it is missing."""
    if args.data_path is not None:
        if args.tokenizer_model is None:
            sys.exit("error: --data-path needs --tokenizer-model (the tokenizer the corpus was made with)")
        return
    args.data_path = os.path.join(REPO, DEMO_DATA)
    args.tokenizer_model = args.tokenizer_model or os.path.join(REPO, DEMO_TOKENIZER)
    if os.path.exists(args.data_path):
        return
    print(f"{DEMO_DATA} is missing: building the demo corpus", file=sys.stderr, flush=True)
    if not os.path.exists(os.path.join(REPO, DEMO_TOKENIZER)) or not os.path.isdir(os.path.join(REPO, DEMO_DIR, "jsonl")):
        _run_tool(["tools/build_demo_corpus.py", "--output-dir", DEMO_DIR])
    _run_tool(["tools/preprocess_domains.py", "--input", f"{DEMO_DIR}/jsonl", "--output-dir", f"{DEMO_DIR}/indexed",
               "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", DEMO_TOKENIZER,
               "--workers", str(os.cpu_count() or 1), "--append-eod"])


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that changes a run's numbers; its hash names the folder of the runs."""
    return {
        "data_path": os.path.abspath(args.data_path),
        "data_sha256": file_sha256(args.data_path),
        "tokenizer_model": os.path.abspath(args.tokenizer_model),
        "steps": args.steps, "layers": args.layers, "hidden": args.hidden, "heads": args.heads,
        "seq_length": args.seq_length, "global_batch": args.global_batch, "micro_batch": args.micro_batch,
        "proxy_layers": args.proxy_layers, "proxy_hidden": args.proxy_hidden,
        "eval_interval": eval_interval(args), "eval_iters": args.eval_iters, "log_interval": log_interval(args),
        "lr": args.lr, "min_lr": args.min_lr, "temperature": args.temperature, "threads": args.threads,
    }


def eval_interval(args: argparse.Namespace) -> int:
    return max(1, args.steps // args.evaluations)


def log_interval(args: argparse.Namespace) -> int:
    return max(1, args.steps // args.log_points)


# ------------------------------------------------------------------------------------------ runs


class Run:
    """One training subprocess: a mixer (or the AC-ODM proxy) at one seed."""

    def __init__(self, root: str, mixer: str, seed: int, args: argparse.Namespace):
        self.mixer, self.seed = mixer, seed
        self.is_proxy = mixer == "proxy"
        self.name = f"{mixer}-seed{seed}"
        self.folder = os.path.join(root, self.name)
        self.metrics = os.path.join(self.folder, "metrics.jsonl")
        self.result_path = os.path.join(self.folder, "result.json")
        self.policy = os.path.join(root, f"proxy-seed{seed}", "policy.pt")
        self.args = args
        self.steps = args.steps

    def arguments(self) -> list[str]:
        args = self.args
        layers, hidden = (args.proxy_layers, args.proxy_hidden) if self.is_proxy else (args.layers, args.hidden)
        arguments = [
            "--data-path", os.path.abspath(args.data_path), "--split", "969,30,1",
            "--data-cache-path", os.path.abspath(os.path.join(args.work_dir, "cache")),
            "--tokenizer-type", args.tokenizer_type, "--tokenizer-model", os.path.abspath(args.tokenizer_model),
            "--num-layers", str(layers), "--hidden-size", str(hidden), "--num-attention-heads", str(args.heads),
            "--seq-length", str(args.seq_length), "--hidden-dropout", "0", "--attention-dropout", "0",
            "--micro-batch-size", str(args.micro_batch), "--global-batch-size", str(args.global_batch),
            "--train-iters", str(self.steps), "--lr", str(args.lr), "--min-lr", str(args.min_lr),
            "--lr-warmup-iters", str(max(1, self.steps // 10)), "--lr-decay-style", "cosine",
            "--weight-decay", "0.1", "--clip-grad", "1.0", "--seed", str(self.seed),
            "--log-interval", str(log_interval(args)), "--eval-interval", str(eval_interval(args)),
            "--eval-iters", str(args.eval_iters), "--metrics-path", os.path.abspath(self.metrics),
        ]
        if self.mixer == "temperature":
            arguments += ["--mixer", "temperature", "--mixing-temperature", str(args.temperature)]
        elif self.is_proxy:
            arguments += ["--mixer", "acodm", "--acodm-export-policy", os.path.abspath(self.policy)]
        elif self.mixer == "acodm_proxy":
            arguments += ["--mixer", "acodm", "--acodm-policy", os.path.abspath(self.policy)]
        else:
            arguments += ["--mixer", self.mixer]
        return arguments

    def command(self) -> list[str]:
        return [sys.executable, os.path.join(REPO, "pretrain_acodm.py"), *self.arguments()]

    def complete(self) -> bool:
        """Its result file is there and its metrics reach the last step (and the policy, for a proxy)."""
        if not os.path.exists(self.result_path):
            return False
        try:
            _, train, valid = read_metrics(self.metrics)
        except MetricsFileError:
            return False
        if not train or not valid or train[-1]["iteration"] != self.steps or valid[-1]["iteration"] != self.steps:
            return False
        return not self.is_proxy or os.path.exists(self.policy)

    def result(self) -> dict[str, Any]:
        with open(self.result_path, encoding="utf-8") as stream:
            return json.load(stream)

    def progress(self) -> int:
        """The last train iteration logged so far (0 when none)."""
        try:
            _, train, _ = read_metrics(self.metrics)
        except MetricsFileError:
            return 0
        return train[-1]["iteration"] if train else 0

    def execute(self, on_poll) -> dict[str, Any]:
        """Run it to the end (from scratch); returns its result: wall time, ru_maxrss, exit status."""
        if os.path.isdir(self.folder):
            for leftover in ("metrics.jsonl", "result.json", "policy.pt"):
                if os.path.exists(os.path.join(self.folder, leftover)):
                    os.remove(os.path.join(self.folder, leftover))
        os.makedirs(self.folder, exist_ok=True)
        env = {key: value for key, value in os.environ.items() if key not in DISTRIBUTED_ENV}
        env["OMP_NUM_THREADS"] = str(self.args.threads)
        env["PYTHONUNBUFFERED"] = "1"
        started = time.perf_counter()
        with open(os.path.join(self.folder, "stdout.log"), "w") as out, open(os.path.join(self.folder, "stderr.log"), "w") as err:
            process = subprocess.Popen(self.command(), cwd=self.folder, env=env, stdout=out, stderr=err)
            while True:
                # wait4 returns this child's own resource usage: its peak RSS, not the benchmark's
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid == process.pid:
                    break
                on_poll(self, time.perf_counter() - started)
                time.sleep(1.0)
            process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        result = {
            "name": self.name, "mixer": self.mixer, "seed": self.seed, "returncode": process.returncode,
            "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / MIB,  # Linux reports KiB
            "command": ["python", "pretrain_acodm.py", *self.arguments()],
        }
        if process.returncode != 0:
            with open(os.path.join(self.folder, "stderr.log"), encoding="utf-8", errors="replace") as stream:
                result["stderr_tail"] = stream.read()[-3000:]
            return result
        write_json(self.result_path, result)
        return result


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Schedule:
    """The runs in order (seed by seed, so partial results cover every mixer), with progress and ETA."""

    def __init__(self, runs: list[Run]):
        self.runs = runs
        self.started = time.perf_counter()
        self.last_report = 0.0
        self.measured: dict[str, list[float]] = {"proxy": [], "target": []}
        self.pace: dict[str, float] = {}

    def _kind(self, run: Run) -> str:
        return "proxy" if run.is_proxy else "target"

    def _estimate(self, kind: str) -> float:
        """Seconds per step (start-up included) of a run of this kind: finished runs', else the pace seen."""
        if self.measured[kind]:
            return statistics.mean(self.measured[kind])
        if self.pace.get(kind):
            return self.pace[kind]
        other = "proxy" if kind == "target" else "target"
        return statistics.mean(self.measured[other]) if self.measured[other] else 0.5

    def eta(self, index: int, current_elapsed: float = 0.0, current_step: int = 0) -> float:
        remaining = 0.0
        for position, run in enumerate(self.runs[index:]):
            if run.complete() and position > 0:
                continue
            per_step = self._estimate(self._kind(run))
            if position == 0:
                total = per_step * run.steps
                remaining += max(total - current_elapsed, per_step * (run.steps - current_step))
            else:
                remaining += per_step * run.steps
        return remaining

    def poll(self, run: Run, elapsed: float) -> None:
        now = time.perf_counter()
        if now - self.last_report < 60.0:
            return
        self.last_report = now
        step = run.progress()
        index = self.runs.index(run)
        kind = self._kind(run)
        if not self.measured[kind] and step > 0:  # no finished run of this kind yet: this one's pace
            self.pace[kind] = elapsed / step
        print(f"[{index + 1}/{len(self.runs)}] {run.name}: step {step}/{run.steps} after {_clock(elapsed)} | "
              f"total elapsed {_clock(now - self.started)} | ETA {_clock(self.eta(index, elapsed, step))}",
              file=sys.stderr, flush=True)

    def execute(self, fresh: bool) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        executed: set[str] = set()  # a proxy trained now has a new policy: its target runs again
        for index, run in enumerate(self.runs):
            label = f"[{index + 1}/{len(self.runs)}] {run.name}"
            if run.mixer == "acodm_proxy" and results.get(f"proxy-seed{run.seed}", {}).get("returncode", 0) != 0:
                print(f"{label}: skipped, its proxy run failed", file=sys.stderr, flush=True)
                results[run.name] = {"name": run.name, "mixer": run.mixer, "seed": run.seed, "returncode": None,
                                     "error": "the proxy run failed"}
                continue
            proxy_rerun = run.mixer == "acodm_proxy" and f"proxy-seed{run.seed}" in executed
            if not fresh and not proxy_rerun and run.complete():
                results[run.name] = run.result()
                print(f"{label}: complete already, skipped ({run.folder})", file=sys.stderr, flush=True)
                continue
            print(f"{label}: starting | total elapsed {_clock(time.perf_counter() - self.started)} | "
                  f"ETA {_clock(self.eta(index))}", file=sys.stderr, flush=True)
            self.last_report = time.perf_counter()
            result = run.execute(self.poll)
            results[run.name] = result
            executed.add(run.name)
            if result["returncode"] != 0:
                print(f"{label}: FAILED (exit {result['returncode']}), see {run.folder}/stderr.log:\n"
                      f"{result.get('stderr_tail', '')[-1500:]}", file=sys.stderr, flush=True)
                continue
            self.measured[self._kind(run)].append(result["wall_s"] / run.steps)
            print(f"{label}: done in {_clock(result['wall_s'])} ({1000 * result['wall_s'] / run.steps:.0f} ms/step "
                  f"with start-up), peak RSS {result['peak_rss_mib']:.0f} MiB | total elapsed "
                  f"{_clock(time.perf_counter() - self.started)} | ETA {_clock(self.eta(index + 1))}",
                  file=sys.stderr, flush=True)
        return results


# ------------------------------------------------------------------------------------------ analysis


def steps_to_reach(iterations: Sequence[int], losses: Sequence[Optional[float]], target: float) -> Optional[float]:
    """The first step where the validation curve reaches `target`, linear between evaluations; None if never.

    An evaluation already at or below the target at the first point counts as that point's step
    (no evaluation at step 0 to interpolate from)."""
    previous = None
    for iteration, loss in zip(iterations, losses):
        if loss is None:
            continue
        if loss <= target:
            if previous is None:
                return float(iteration)
            previous_iteration, previous_loss = previous
            return previous_iteration + (previous_loss - target) / (previous_loss - loss) * (iteration - previous_iteration)
        previous = (iteration, loss)
    return None


def _spread(values: Sequence[float]) -> dict[str, Any]:
    values = [float(value) for value in values if value is not None]
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": len(values), "mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def _mean_lists(lists: Sequence[Sequence[Optional[float]]]) -> list[Optional[float]]:
    out = []
    for column in zip(*lists):
        present = [value for value in column if value is not None]
        out.append(statistics.mean(present) if len(present) == len(column) else None)
    return out


def read_run(run: Run, names_holder: dict) -> dict[str, Any]:
    """A finished run's curves: validation per evaluation, mixture and step time per log record."""
    headers, train, valid = read_metrics(run.metrics)
    names = headers[-1]["domains"]
    names_holder.setdefault("names", names)
    corpus_tokens = [valid[-1]["domains"][name]["corpus_tokens"] for name in names] if valid else []
    step_ms = [record["iteration_ms"] for record in train[1:]] or [record["iteration_ms"] for record in train]
    return {
        "valid": {
            "iteration": [record["iteration"] for record in valid],
            "lm_loss": [record["lm_loss"] for record in valid],
            "lm_loss_uniform": [record["lm_loss_uniform"] for record in valid],
            "domain_loss": {name: [record["domains"][name]["loss"] for record in valid] for name in names},
        },
        "train": {
            "iteration": [record["iteration"] for record in train],
            "lm_loss": [record["lm_loss"] for record in train],
            "iteration_ms": [record["iteration_ms"] for record in train],
            "weight": {name: [record["domains"][name]["weight"] for record in train] for name in names},
            "share": {name: [record["domains"][name]["share"] for record in train] for name in names},
        },
        "corpus_tokens": corpus_tokens,
        # the first log interval holds the first steps' one-off costs; the median resists the shared cores' bursts
        "median_step_ms": statistics.median(step_ms) if step_ms else None,
    }


METRICS = ("lm_loss_uniform", "lm_loss")
METRIC_TITLES = {"lm_loss_uniform": "uniform mean over domains", "lm_loss": "corpus-token-weighted mean"}


def analyse(args: argparse.Namespace, runs: list[Run], results: dict[str, dict]) -> dict[str, Any]:
    holder: dict[str, Any] = {}
    per_run: dict[str, dict] = {}
    for run in runs:
        result = results.get(run.name, {})
        if result.get("returncode") == 0:
            per_run[run.name] = {**result, **read_run(run, holder)}
        else:
            per_run[run.name] = {**result, "failed": True}
    names = holder.get("names", [])
    mixers = [mixer for mixer in args.mixers]
    ok = lambda mixer: [per_run[f"{mixer}-seed{seed}"] for seed in args.seeds if not per_run[f"{mixer}-seed{seed}"].get("failed")]
    reference_runs = ok(REFERENCE)
    if not reference_runs:
        raise SystemExit(f"error: every {REFERENCE} run failed; nothing to compare against")
    iterations = reference_runs[0]["valid"]["iteration"]
    targets = {metric: statistics.mean(run["valid"][metric][-1] for run in reference_runs) for metric in METRICS}

    summary: dict[str, Any] = {}
    for mixer in mixers:
        mixer_runs = ok(mixer)
        entry: dict[str, Any] = {"seeds_ok": [run["seed"] for run in mixer_runs],
                                 "seeds_failed": [seed for seed in args.seeds if per_run[f"{mixer}-seed{seed}"].get("failed")]}
        if not mixer_runs:
            summary[mixer] = entry
            continue
        for metric in METRICS:
            mean_curve = _mean_lists([run["valid"][metric] for run in mixer_runs])
            per_seed = [steps_to_reach(run["valid"]["iteration"], run["valid"][metric], targets[metric]) for run in mixer_runs]
            entry[metric] = {
                "mean_curve": mean_curve,
                "steps_to_target_mean_curve": steps_to_reach(iterations, mean_curve, targets[metric]),
                "steps_to_target_per_seed": per_seed,
                "steps_to_target_spread": _spread([steps for steps in per_seed if steps is not None]),
                "reached_seeds": sum(steps is not None for steps in per_seed),
                "final": _spread([run["valid"][metric][-1] for run in mixer_runs]),
                "final_per_seed": [run["valid"][metric][-1] for run in mixer_runs],
            }
            paired = [run["valid"][metric][-1] - per_run[f"{REFERENCE}-seed{run['seed']}"]["valid"][metric][-1]
                      for run in mixer_runs if not per_run[f"{REFERENCE}-seed{run['seed']}"].get("failed")]
            entry[metric]["paired_difference_vs_uniform"] = _spread(paired)
        entry["final_domain_loss"] = {name: _spread([run["valid"]["domain_loss"][name][-1] for run in mixer_runs]) for name in names}
        entry["mixture"] = {
            "iteration": mixer_runs[0]["train"]["iteration"],
            "share_mean": {name: _mean_lists([run["train"]["share"][name] for run in mixer_runs]) for name in names},
            "weight_mean": {name: _mean_lists([run["train"]["weight"][name] for run in mixer_runs]) for name in names},
        }
        entry["median_step_ms"] = _spread([run["median_step_ms"] for run in mixer_runs])
        entry["peak_rss_mib"] = _spread([run["peak_rss_mib"] for run in mixer_runs])
        entry["wall_s"] = _spread([run["wall_s"] for run in mixer_runs])
        summary[mixer] = entry

    reference = summary[REFERENCE]
    for mixer, entry in summary.items():
        if not entry.get("seeds_ok"):
            continue
        for metric in METRICS:
            own, base = entry[metric]["steps_to_target_mean_curve"], reference[metric]["steps_to_target_mean_curve"]
            entry[metric]["ratio_to_uniform"] = own / base if own is not None and base else None
        entry["step_time_ratio"] = entry["median_step_ms"]["mean"] / reference["median_step_ms"]["mean"]
        entry["peak_rss_ratio"] = entry["peak_rss_mib"]["mean"] / reference["peak_rss_mib"]["mean"]

    proxy_runs = [per_run[f"proxy-seed{seed}"] for seed in args.seeds if f"proxy-seed{seed}" in per_run and not per_run[f"proxy-seed{seed}"].get("failed")]
    proxy = None
    if proxy_runs:
        proxy_ms = statistics.mean(run["median_step_ms"] for run in proxy_runs)
        proxy = {
            "layers": args.proxy_layers, "hidden": args.proxy_hidden, "steps_per_policy": args.steps,
            "median_step_ms": _spread([run["median_step_ms"] for run in proxy_runs]),
            "peak_rss_mib": _spread([run["peak_rss_mib"] for run in proxy_runs]),
            "wall_s": _spread([run["wall_s"] for run in proxy_runs]),
            "parameters": parameter_count(args.proxy_layers, args.proxy_hidden, args),
            "target_step_equivalents": args.steps * proxy_ms / reference["median_step_ms"]["mean"],
            "final_lm_loss_uniform": _spread([run["valid"]["lm_loss_uniform"][-1] for run in proxy_runs]),
            "mixture": {
                "iteration": proxy_runs[0]["train"]["iteration"],
                "share_mean": {name: _mean_lists([run["train"]["share"][name] for run in proxy_runs]) for name in names},
            },
        }
    return {"names": names, "targets": targets, "iterations": iterations, "summary": summary, "proxy": proxy, "runs": per_run}


def parameter_count(layers: int, hidden: int, args: argparse.Namespace, vocab: Optional[int] = None) -> int:
    """GPT parameters (tied embeddings, 4h MLP, learned positions, LayerNorms with biases)."""
    if vocab is None:
        with open(args.data_path, encoding="utf-8") as stream:
            vocab = json.load(stream).get("tokenizer", {}).get("vocab_size") or 0
        vocab = int(math.ceil(vocab / 128) * 128)
    per_layer = 12 * hidden * hidden + 13 * hidden
    return layers * per_layer + vocab * hidden + args.seq_length * hidden + 2 * hidden


# ------------------------------------------------------------------------------------------ report


def effective_domains(shares: Sequence[float]) -> float:
    """exp(entropy) of a mixture: K for uniform over K domains, 1 for a single one."""
    total = sum(shares)
    return math.exp(-sum(share / total * math.log(share / total) for share in shares if share > 0))


def _number(value: Optional[float], spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _mean_std(spread: dict, spec: str = ".4f") -> str:
    if not spread or spread.get("mean") is None:
        return "-"
    return f"{spread['mean']:{spec}} ± {spread['std']:{spec.lstrip('+')}}" if spread["n"] > 1 else format(spread["mean"], spec)


def _steps_cell(entry: dict) -> str:
    steps = entry["steps_to_target_mean_curve"]
    per_seed = ", ".join("n/r" if value is None else f"{value:.0f}" for value in entry["steps_to_target_per_seed"])
    head = "not reached" if steps is None else f"{steps:.0f}"
    return f"{head} | {'-' if entry.get('ratio_to_uniform') is None else format(entry['ratio_to_uniform'], '.2f')} | {per_seed}"


def verdict(mixer: str, entry: dict, metric: str) -> tuple[str, str]:
    """(short word, sentence) comparing the mixer's final loss with uniform's, paired by seed."""
    paired = entry[metric]["paired_difference_vs_uniform"]
    if paired["n"] == 0 or paired["mean"] is None:
        return "n/a", "no paired seeds"
    mean, n = paired["mean"], paired["n"]
    error = paired["std"] / math.sqrt(n) if n > 1 else float("inf")
    if n > 1 and mean < -2 * error:
        word = "better"
    elif n > 1 and mean > 2 * error:
        word = "worse"
    else:
        word = "no clear difference"
    return word, f"final loss {mean:+.4f} vs uniform (paired over {n} seeds, std error {error:.4f})"


def markdown(args: argparse.Namespace, analysis: dict, wall_s: float, mode: str) -> str:
    names, summary, proxy, targets = analysis["names"], analysis["summary"], analysis["proxy"], analysis["targets"]
    mixers = [mixer for mixer in args.mixers if summary.get(mixer, {}).get("seeds_ok")]
    tokens = args.steps * args.global_batch * args.seq_length
    lines = [
        f"# Mixing quality ({mode} run): online mixers against static blends",
        "",
        f"Corpus `{os.path.relpath(args.data_path, REPO)}` ({len(names)} domains: {', '.join(names)}). "
        f"Target GPT {args.layers} layers x {args.hidden} hidden ({parameter_count(args.layers, args.hidden, args) / 1e6:.2f}M parameters), "
        f"seq {args.seq_length}, global batch {args.global_batch}, {args.steps} steps ({tokens / 1e6:.2f}M tokens), "
        f"AdamW lr {args.lr:g} -> {args.min_lr:g} cosine, warm-up {max(1, args.steps // 10)}, no dropout; "
        f"seeds {', '.join(map(str, args.seeds))} (each seed: model init, data order, held-out samples); "
        f"validation every {eval_interval(args)} steps on {args.eval_iters} x {args.global_batch} held-out sequences "
        f"split evenly over the domains. CPU, {args.threads} thread(s) per run, one run at a time; "
        f"total wall time {_clock(wall_s)}.",
        "",
        f"Reference: `{REFERENCE}` (a static blend). Its final validation loss, mean over seeds: "
        f"{targets['lm_loss_uniform']:.4f} (uniform mean over domains), {targets['lm_loss']:.4f} (corpus-token-weighted mean).",
        "",
        "## Steps to reach uniform's final validation loss",
        "",
        "Steps on the seed-mean validation curve (linear between evaluations), ratio to uniform's, and "
        "the steps of each seed's own curve (n/r: not reached by the last step). Uniform reaches its own "
        "mean at its last step by construction; its per-seed values show the seed noise.",
        "",
        "| mixer | uniform mean: steps | ratio | per seed | token-weighted: steps | ratio | per seed | extra proxy steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mixer in mixers:
        entry = summary[mixer]
        extra = "-"
        if mixer == "acodm_proxy" and proxy:
            extra = (f"{proxy['steps_per_policy']} on {proxy['layers']}x{proxy['hidden']} "
                     f"(~{proxy['target_step_equivalents']:.0f} target-step times)")
        lines.append(f"| {mixer} | {_steps_cell(entry['lm_loss_uniform'])} | "
                     f"{_steps_cell(entry['lm_loss'])} | {extra} |")
    lines += [
        "",
        "## Final validation loss (mean ± std over seeds)",
        "",
        "Δ: the difference to uniform at the same seed, mean ± std over seeds (negative is better).",
        "",
        "| mixer | uniform mean | Δ | token-weighted | Δ | " + " | ".join(names) + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for mixer in mixers:
        entry = summary[mixer]
        cells = [_mean_std(entry["lm_loss_uniform"]["final"]), _mean_std(entry["lm_loss_uniform"]["paired_difference_vs_uniform"], "+.4f"),
                 _mean_std(entry["lm_loss"]["final"]), _mean_std(entry["lm_loss"]["paired_difference_vs_uniform"], "+.4f")]
        cells += [_mean_std(entry["final_domain_loss"][name], ".3f") for name in names]
        lines.append(f"| {mixer} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Realised mixture (share of training samples, mean over seeds)",
        "",
        "Per third of the run, then the last log interval; eff. domains: exp of the mixture's entropy "
        f"({len(names)} for a uniform mixture, 1 for a single domain).",
        "",
        "| mixer | steps | " + " | ".join(names) + " | eff. domains |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    mixture_rows = [(mixer, summary[mixer]["mixture"]) for mixer in mixers]
    if proxy:
        mixture_rows.append((f"proxy ({proxy['layers']}x{proxy['hidden']}, AC-ODM training)", proxy["mixture"]))
    for label, mixture in mixture_rows:
        iterations = mixture["iteration"]
        bounds = [0, args.steps // 3, 2 * args.steps // 3, args.steps]
        for low, high in zip(bounds, bounds[1:]):
            picked = [i for i, iteration in enumerate(iterations) if low < iteration <= high]
            if not picked:
                continue
            shares = [statistics.mean(mixture["share_mean"][name][i] for i in picked) for name in names]
            lines.append(f"| {label} | {low + 1}-{high} | " + " | ".join(f"{share:.3f}" for share in shares)
                         + f" | {effective_domains(shares):.1f} |")
        shares = [mixture["share_mean"][name][-1] for name in names]
        lines.append(f"| {label} | last {log_interval(args)} | " + " | ".join(f"{share:.3f}" for share in shares)
                     + f" | {effective_domains(shares):.1f} |")

    lines += [
        "",
        "## Cost against the static reference (uniform)",
        "",
        "Median time per step over each run's log intervals (the first left out), mean over seeds; "
        "peak RSS is each subprocess's own `ru_maxrss`. The cores are shared with other work: step "
        "times are noisy.",
        "",
        "| run | step ms | ratio | peak RSS MiB | ratio | wall s per run |",
        "|---|---|---|---|---|---|",
    ]
    for mixer in mixers:
        entry = summary[mixer]
        lines.append(f"| {mixer} | {_mean_std(entry['median_step_ms'], '.0f')} | {entry['step_time_ratio']:.2f} | "
                     f"{_mean_std(entry['peak_rss_mib'], '.0f')} | {entry['peak_rss_ratio']:.2f} | {_mean_std(entry['wall_s'], '.0f')} |")
    if proxy:
        reference = summary[REFERENCE]
        lines.append(f"| proxy {proxy['layers']}x{proxy['hidden']} (AC-ODM, per policy) | {_mean_std(proxy['median_step_ms'], '.0f')} | "
                     f"{proxy['median_step_ms']['mean'] / reference['median_step_ms']['mean']:.2f} | {_mean_std(proxy['peak_rss_mib'], '.0f')} | "
                     f"{proxy['peak_rss_mib']['mean'] / reference['peak_rss_mib']['mean']:.2f} | {_mean_std(proxy['wall_s'], '.0f')} |")

    lines += ["", "## Verdict", ""]
    for mixer in mixers:
        if mixer == REFERENCE:
            continue
        entry = summary[mixer]
        parts = []
        for metric in METRICS:
            word, sentence = verdict(mixer, entry, metric)
            ratio = entry[metric]["ratio_to_uniform"]
            reach = ("does not reach uniform's final loss" if ratio is None
                     else f"reaches uniform's final loss in {ratio:.2f}x its steps")
            parts.append(f"{METRIC_TITLES[metric]}: **{word}**, {sentence}; on the seed-mean curve it {reach}")
        words = [verdict(mixer, entry, metric)[0] for metric in METRICS]
        if all(word == "better" for word in words):
            head = "beats uniform on both means."
        elif "better" in words:
            head = "beats uniform on one mean only."
        else:
            head = "does NOT beat uniform."
        last = {name: statistics.mean(entry["mixture"]["share_mean"][name][-(len(entry["mixture"]["iteration"]) // 3 or 1):])
                for name in names}
        top = sorted(last, key=last.get, reverse=True)[:2]
        parts.append(f"its last third of the run drew {', '.join(f'{name} {last[name]:.2f}' for name in top)} of the samples "
                     f"({effective_domains(list(last.values())):.1f} effective domains of {len(names)})")
        lines.append(f"- `{mixer}` {head} " + "; ".join(parts) + ".")
    if proxy and "acodm_proxy" in mixers:
        lines.append(f"- `acodm_proxy`'s cost includes {proxy['steps_per_policy']} proxy steps per policy "
                     f"({proxy['layers']}x{proxy['hidden']}, {proxy['parameters'] / 1e6:.2f}M parameters), "
                     f"about {proxy['target_step_equivalents']:.0f} target steps of wall time.")
    lines += [
        f"- Verdicts compare the final losses paired by seed: 'better' or 'worse' only where the mean "
        f"difference exceeds twice its standard error over {len(args.seeds)} seeds. At this scale "
        f"({args.steps} steps on a {parameter_count(args.layers, args.hidden, args) / 1e6:.1f}M model) this is "
        f"not the paper's setting (Pythia-1B): a negative result here says what these mixers do on this corpus and budget.",
    ]
    if args.target_data_path:
        lines.append(f"- `--target-data-path {args.target_data_path}` is recorded; no mixer here reads a target set yet.")
    else:
        lines.append("- No target set was given (`--target-data-path`); none of these mixers reads one.")
    failed = [name for name, run in analysis["runs"].items() if run.get("failed")]
    if failed:
        lines.append(f"- Failed runs, left out: {', '.join(failed)}.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ plots

COLOURS = {"static": "tab:gray", "uniform": "black", "temperature": "tab:blue", "odm": "tab:orange",
           "acodm": "tab:red", "acodm_proxy": "tab:purple"}


def plot_curves(args: argparse.Namespace, analysis: dict, path: str, mode: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, runs = analysis["summary"], analysis["runs"]
    figure, axes = plt.subplots(2, 2, figsize=(13, 9))
    for column, metric in enumerate(METRICS):
        for row in range(2):
            axis = axes[row][column]
            low_values = []
            for mixer in args.mixers:
                entry = summary.get(mixer, {})
                if not entry.get("seeds_ok"):
                    continue
                curves = [runs[f"{mixer}-seed{seed}"]["valid"][metric] for seed in entry["seeds_ok"]]
                iterations = runs[f"{mixer}-seed{entry['seeds_ok'][0]}"]["valid"]["iteration"]
                mean = entry[metric]["mean_curve"]
                lower = [min(values) for values in zip(*curves)]
                upper = [max(values) for values in zip(*curves)]
                colour = COLOURS.get(mixer)
                axis.plot(iterations, mean, marker="o", markersize=3, label=f"{mixer} (n={len(curves)})", color=colour)
                axis.fill_between(iterations, lower, upper, alpha=0.15, color=colour)
                start = len(iterations) * 2 // 5
                low_values += lower[start:] + upper[start:]
            axis.axhline(analysis["targets"][metric], color="black", linestyle=":", linewidth=1, label="uniform's final mean")
            axis.set_xlabel("step")
            axis.set_ylabel("validation loss")
            if row == 0:
                axis.set_title(f"{METRIC_TITLES[metric]} (band: min-max over seeds)")
                axis.legend(fontsize=8)
            else:
                axis.set_title(f"{METRIC_TITLES[metric]}: last 60% of the run")
                axis.set_xlim(args.steps * 0.38, args.steps * 1.02)
                if low_values:
                    span = max(low_values) - min(low_values)
                    axis.set_ylim(min(low_values) - 0.05 * span, max(low_values) + 0.05 * span)
            axis.grid(alpha=0.3)
    figure.suptitle(f"Validation loss by mixer ({mode}: {args.layers}x{args.hidden} GPT, {args.steps} steps, seeds {args.seeds})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_weights(args: argparse.Namespace, analysis: dict, path: str, mode: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, summary, proxy = analysis["names"], analysis["summary"], analysis["proxy"]
    panels = [(mixer, summary[mixer]["mixture"]) for mixer in args.mixers if summary.get(mixer, {}).get("seeds_ok")]
    if proxy:
        panels.append((f"proxy {proxy['layers']}x{proxy['hidden']} (AC-ODM training)", proxy["mixture"]))
    columns = 3
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for index, (label, mixture) in enumerate(panels):
        axis = axes[index // columns][index % columns]
        # a record's share covers the log interval that ends at its iteration: drawn from the interval's start
        iterations = [0, *mixture["iteration"]]
        shares = [[mixture["share_mean"][name][0], *mixture["share_mean"][name]] for name in names]
        axis.stackplot(iterations, *shares, labels=names, colors=colours[: len(names)], step="pre")
        axis.set_title(label, fontsize=10)
        axis.set_ylim(0, 1)
        axis.set_xlim(0, args.steps)
        axis.set_xlabel("step")
        axis.set_ylabel("share of samples")
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(names), fontsize=9)
    figure.suptitle(f"Realised mixture per log interval ({log_interval(args)} steps), mean over seeds ({mode})")
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------------------------------ main


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    ensure_corpus(args)
    mode = "quick" if args.quick else "full"
    config = settings(args)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    root = os.path.join(args.work_dir, f"{mode}-{digest}")
    os.makedirs(root, exist_ok=True)
    write_json(os.path.join(root, "settings.json"), config)
    runs: list[Run] = []
    for seed in args.seeds:
        if "acodm_proxy" in args.mixers:
            runs.append(Run(root, "proxy", seed, args))
        runs += [Run(root, mixer, seed, args) for mixer in args.mixers]
    print(f"mixing quality ({mode}): {len(runs)} runs of {args.steps} steps in {root}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    results = Schedule(runs).execute(args.fresh)
    wall = time.perf_counter() - started
    run_wall = sum(result.get("wall_s", 0.0) for result in results.values())

    analysis = analyse(args, runs, results)
    os.makedirs(args.output_dir, exist_ok=True)
    report = markdown(args, analysis, run_wall, mode)
    import torch

    document = {
        "benchmark": "mixing_quality",
        "mode": mode,
        "settings": config,
        "run_folder": os.path.relpath(root, REPO),
        "target_data_path": args.target_data_path,
        "target_data_path_note": "recorded only: no mixer in this comparison reads a target set yet",
        "mixers": args.mixers,
        "seeds": args.seeds,
        "reference": REFERENCE,
        "parameters": {"target": parameter_count(args.layers, args.hidden, args),
                       "proxy": parameter_count(args.proxy_layers, args.proxy_hidden, args)},
        "wall_s": {"this_invocation": wall, "sum_of_runs": run_wall},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                        "threads_per_run": args.threads, "machine": platform.machine()},
        **analysis,
    }
    write_json(os.path.join(args.output_dir, "mixing_quality.json"), document)
    with open(os.path.join(args.output_dir, "mixing_quality.md.tmp"), "w", encoding="utf-8") as stream:
        stream.write(report)
    os.replace(os.path.join(args.output_dir, "mixing_quality.md.tmp"), os.path.join(args.output_dir, "mixing_quality.md"))
    plot_curves(args, analysis, os.path.join(args.output_dir, "mixing_quality_curves.png"), mode)
    plot_weights(args, analysis, os.path.join(args.output_dir, "mixing_quality_weights.png"), mode)
    print(report)
    print(f"wrote {args.output_dir}/mixing_quality.{{json,md}}, mixing_quality_curves.png, mixing_quality_weights.png "
          f"(runs: {root}, {_clock(wall)})", file=sys.stderr, flush=True)
    failed = [name for name, run in analysis["runs"].items() if run.get("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
