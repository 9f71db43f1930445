"""The training runs the quality benchmarks compare: one cached `pretrain_acodm.py` subprocess per
mixer and seed, and the loop that runs the missing ones.

A run lives in `<root>/<label or mixer>-seed<S>/` (`root` names the benchmark's settings by their
hash): `metrics.jsonl`, `result.json` (wall time, peak RSS, exit status, command) and the logs. A run
whose result and metrics reach the last step is complete and is not run again, so a benchmark
interrupted or rerun with the same settings reuses every finished run. Used by
`mixing_quality.py`, `target_quality.py` and `mergemix_quality.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from common import REPO, child_env, progress, run_process, say, tail, write_json
from megatron_acodm.errors import UserError
from megatron_acodm.metrics import validation_means
from megatron_acodm.metrics.reader import read_metrics
from megatron_acodm.mixing import MIXERS
from mixing_quality_analysis import clock, eval_interval, log_interval

# The runs' sizes and schedule, (full, quick): every benchmark's defaults, so that they train the same GPT.
PRESETS = {
    "full": dict(steps=450, seeds="1,2,3", layers=4, hidden=128, heads=4, seq_length=128, global_batch=16,
                 micro_batch=8, proxy_layers=2, proxy_hidden=64, evaluations=10, eval_iters=8, log_points=45),
    "quick": dict(steps=40, seeds="1,2", layers=2, hidden=64, heads=4, seq_length=64, global_batch=16,
                  micro_batch=8, proxy_layers=1, proxy_hidden=32, evaluations=4, eval_iters=2, log_points=20),
}


class Run:
    """One training subprocess: a mixer (or the AC-ODM proxy) at one seed."""

    def __init__(self, root: str, mixer: str, seed: int, args: argparse.Namespace, label: Optional[str] = None):
        """`label` (default: the mixer) names the run's folder, for a mixer run in several settings."""
        self.mixer, self.seed = mixer, seed
        self.is_proxy = mixer == "proxy"
        self.name = f"{label or mixer}-seed{seed}"
        self.folder = os.path.join(root, self.name)
        self.metrics = os.path.join(self.folder, "metrics.jsonl")
        self.result_path = os.path.join(self.folder, "result.json")
        self.policy = os.path.join(root, f"proxy-seed{seed}", "policy.pt")
        self.args = args
        self.steps = args.steps

    def arguments(self) -> list[str]:
        return self.training_arguments() + self.mixer_arguments()

    def training_arguments(self) -> list[str]:
        """What every run of the comparison shares: data, model, schedule, logging."""
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
        return arguments

    def mixer_arguments(self) -> list[str]:
        """The mixer and its options."""
        args = self.args
        arguments = []
        if self.mixer == "temperature":
            arguments += ["--mixer", "temperature", "--mixing-temperature", str(args.temperature)]
        elif self.is_proxy:
            arguments += ["--mixer", "acodm", "--acodm-export-policy", os.path.abspath(self.policy)]
        elif self.mixer == "acodm_proxy":
            arguments += ["--mixer", "acodm", "--acodm-policy", os.path.abspath(self.policy)]
        elif self.mixer == "aioli" and args.quick:  # 40 steps hold no default round (5 of them, 2 sweeps each)
            arguments += ["--mixer", "aioli", "--aioli-rounds", "1", "--aioli-sweeps", "1", "--aioli-segment-steps", "1"]
        else:
            arguments += ["--mixer", self.mixer]
        # Only the mixers that read an objective are given one (the trainer refuses it to the others).
        if args.mixing_objective and "mixing_objective" in MIXERS[arguments[1]].reads:
            arguments += ["--mixing-objective", ",".join(args.mixing_objective)]
        return arguments

    def command(self) -> list[str]:
        return [sys.executable, os.path.join(REPO, "pretrain_acodm.py"), *self.arguments()]

    def complete(self) -> bool:
        """Its result file is there and its metrics reach the last step (and the policy, for a proxy)."""
        if not os.path.exists(self.result_path):
            return False
        try:
            _, train, valid = read_metrics(self.metrics)
        except UserError:
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
        except UserError:
            return 0
        return train[-1]["iteration"] if train else 0

    def curves(self) -> tuple[list[str], dict[str, Any]]:
        """A finished run's domain names and curves: validation per evaluation, mixture and step time per log record.

        The validation means are the trainer's own (`validation_means`) taken over the real domains
        (`args.evaluated`): over every domain, as the trainer logs them, unless the corpus has noise."""
        headers, train, valid = read_metrics(self.metrics)
        names = headers[-1]["domains"]
        corpus_tokens = [valid[-1]["domains"][name]["corpus_tokens"] for name in names] if valid else []
        step_ms = [record["iteration_ms"] for record in train[1:]] or [record["iteration_ms"] for record in train]
        means = [validation_means([record["domains"][name]["loss"] for name in self.args.evaluated],
                                  [record["domains"][name]["corpus_tokens"] for name in self.args.evaluated])
                 for record in valid]
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
            "corpus_tokens": corpus_tokens,
            # the first log interval holds the first steps' one-off costs; the median resists the shared cores' bursts
            "median_step_ms": statistics.median(step_ms) if step_ms else None,
        }

    def execute(self, on_poll) -> dict[str, Any]:
        """Run it to the end (from scratch); returns its result: wall time, ru_maxrss, exit status."""
        if os.path.isdir(self.folder):
            for leftover in ("metrics.jsonl", "result.json", "policy.pt"):
                if os.path.exists(os.path.join(self.folder, leftover)):
                    os.remove(os.path.join(self.folder, leftover))
        os.makedirs(self.folder, exist_ok=True)
        error_log = os.path.join(self.folder, "stderr.log")
        child = run_process(self.command(), cwd=self.folder, env=child_env(self.args.threads),
                            log=os.path.join(self.folder, "stdout.log"), error_log=error_log, on_poll=on_poll)
        result = {
            "name": self.name, "mixer": self.mixer, "seed": self.seed, **child,
            "command": ["python", "pretrain_acodm.py", *self.arguments()],
        }
        if child["returncode"] != 0:
            result["stderr_tail"] = tail(error_log)
            return result
        write_json(self.result_path, result)
        return result


def execute_runs(runs: list[Run], fresh: bool, description: str = "mixing quality", jobs: int = 1) -> dict[str, dict[str, Any]]:
    """The runs in order (seed by seed, so partial results cover every mixer), with a progress bar
    over the steps still to run; a complete run is not run again unless `fresh`. With `jobs` > 1,
    each of `jobs` threads takes every jobs-th run (for runs that do not depend on one another,
    i.e. no proxy and its target; each child does its own work)."""
    if jobs > 1:
        with ThreadPoolExecutor(jobs) as pool:
            shards = pool.map(lambda shard: execute_runs(shard, fresh, description), [runs[job::jobs] for job in range(jobs)])
            return {name: result for shard in shards for name, result in shard.items()}
    proxies_to_run = {run.seed for run in runs if run.is_proxy and (fresh or not run.complete())}

    def to_run(run: Run) -> bool:  # a proxy trained now has a new policy: its target runs again
        return fresh or not run.complete() or (run.mixer == "acodm_proxy" and run.seed in proxies_to_run)

    pending = {run.name for run in runs if to_run(run)}
    results: dict[str, dict[str, Any]] = {}
    with progress(sum(run.steps for run in runs if run.name in pending), description, "step") as bar:
        for index, run in enumerate(runs):
            label = f"[{index + 1}/{len(runs)}] {run.name}"
            if run.mixer == "acodm_proxy" and results.get(f"proxy-seed{run.seed}", {}).get("returncode", 0) != 0:
                say(f"{label}: skipped, its proxy run failed")
                results[run.name] = {"name": run.name, "mixer": run.mixer, "seed": run.seed, "returncode": None,
                                     "error": "the proxy run failed"}
                if run.name in pending:
                    bar.total -= run.steps
                    bar.refresh()
                continue
            if run.name not in pending:
                results[run.name] = run.result()
                say(f"{label}: complete already, skipped ({run.folder})")
                continue
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
            bar.update(run.steps - done)
            results[run.name] = result
            if result["returncode"] != 0:
                say(f"{label}: FAILED (exit {result['returncode']}), see {run.folder}/stderr.log:\n"
                    f"{result.get('stderr_tail', '')[-1500:]}")
                continue
            say(f"{label}: done in {clock(result['wall_s'])} ({1000 * result['wall_s'] / run.steps:.0f} ms/step "
                f"with start-up), peak RSS {result['peak_rss_mib']:.0f} MiB")
    return results
