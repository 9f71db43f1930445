#!/usr/bin/env python
"""Target quality: does a task-aligned mixer specialise the model to a task known from a few examples?

    python bench/target_quality.py [--quick] [--targets quiz,gsm8k,humaneval] [--seeds 1,2,3] [--jobs 1]
        [--mixers uniform,static,importance,dga,acodm_target] [--work-dir data/target_quality]
        [--output-dir bench/results] [--fresh]

Trains the GPT of `bench/mixing_quality.py` (same presets, data, optimiser and seeds) on the demo
corpus under each mixer, and reports the held-out loss of each demo target set (`data/demo/targets`,
indexed into `data/demo/targets-indexed/` when missing; each split once into steering and held-out
examples by `--target-split`'s default):

- `uniform` and `static` (tokens-proportional) read no target: one run per seed evaluates every
  target set, and serves as the reference of each;
- per target set: `importance` (static weights from the steering examples' n-gram posterior),
  `dga`, and `acodm_target` (AC-ODM with `--mixing-objective target`), each at its defaults.

Per target set and mixer: the held-out target loss over steps, its final value paired by seed
against uniform and importance, the steps to reach uniform's final target loss (linear between
evaluations) and the ratio, the general validation loss at the end (uniform mean over the domains:
what the specialisation costs), the mixture over time, and the per-step time against static (the
target pass's cost). Runs go to `<work-dir>/<quick|full>-<hash of the settings>/<mixer>[-<target>]-seed<S>/`
and complete runs are reused (`runs.py`). Writes `<output-dir>/target_quality.{json,md}`, the curves
beside them in `target_quality.curves.json.gz` (`result_files.py`), and `target_quality_curves.png`,
`target_quality_weights.png`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

from common import REPO, describe_machine, say, write_json, write_text
from corpora import DEMO_DIR, DEMO_TOKENIZER, ensure_demo_corpus, run_tool
from megatron_acodm.data.manifest import load_manifest
from megatron_acodm.data.tokenizers import file_sha256
from mixing_quality_analysis import clock, eval_interval, log_interval, parameter_count
from result_files import save_results
from runs import PRESETS, Run, execute_runs
from target_quality_analysis import CURVES, analyse, markdown, plot_curves, plot_weights

TARGETS_DIR = f"{DEMO_DIR}/targets"
TARGETS_DATA = f"{DEMO_DIR}/targets-indexed/domains.json"
SHARED = ("uniform", "static")  # read no target: one run evaluates every target set
PER_TARGET = ("importance", "dga", "acodm_target")
MIXER_FLAGS = {"acodm_target": ["--mixer", "acodm", "--mixing-objective", "target"]}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a minutes-long smoke run: tiny model, 2 seeds, 40 steps")
    add("--targets", default="quiz,gsm8k,humaneval", help="comma-separated target sets of the demo corpus")
    add("--mixers", default=",".join(SHARED + PER_TARGET), help=f"comma-separated, from {','.join(SHARED + PER_TARGET)}")
    add("--seeds", default=None, help="comma-separated --seed values (full: 1,2,3; quick: 1,2)")
    add("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    add("--jobs", type=int, default=1, help="runs at a time (one core each at --threads 1)")
    add("--work-dir", default="data/target_quality", help="scratch folder of the runs")
    add("--output-dir", default="bench/results")
    add("--fresh", action="store_true", help="rerun every run, even complete ones")
    args = parser.parse_args(argv)
    for key, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.seeds = [int(seed) for seed in str(args.seeds).split(",") if seed.strip()]
    args.targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    args.mixers = [name.strip() for name in args.mixers.split(",") if name.strip()]
    unknown = [mixer for mixer in args.mixers if mixer not in SHARED + PER_TARGET]
    if unknown:
        parser.error(f"unknown mixers {unknown}; choose from {', '.join(SHARED + PER_TARGET)}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if "uniform" not in args.mixers:
        parser.error("--mixers must include uniform: the reference of every ratio")
    # What the runs (`runs.Run`) read besides the presets.
    args.tokenizer_type, args.tokenizer_model, args.data_path = "SentencePieceTokenizer", None, None
    args.lr, args.min_lr, args.temperature, args.mixing_objective = 1e-3, 1e-4, 2.0, None
    return args


def ensure_targets(args: argparse.Namespace) -> None:
    """The demo corpus and its target sets, indexed when missing; `args.target_prefixes` by name."""
    ensure_demo_corpus(args)
    manifest_path = os.path.join(REPO, TARGETS_DATA)
    if not os.path.exists(manifest_path):
        run_tool(["tools/preprocess_domains.py", "--input", TARGETS_DIR, "--output-dir", os.path.dirname(TARGETS_DATA),
                   "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", DEMO_TOKENIZER, "--append-eod"])
    prefixes = {domain.name: domain.prefix for domain in load_manifest(manifest_path).domains}
    missing = [name for name in args.targets if name not in prefixes]
    if missing:
        sys.exit(f"error: --targets {missing}: {TARGETS_DATA} has only {sorted(prefixes)}")
    args.target_prefixes = {name: prefixes[name] for name in args.targets}
    args.targets_sha256 = file_sha256(manifest_path)


class TargetRun(Run):
    """A run of the comparison with target sets: `targets` are evaluated, the mixer may read them."""

    def __init__(self, root: str, mixer: str, seed: int, args: argparse.Namespace, targets: list[str]):
        super().__init__(root, mixer, seed, args, label=mixer if mixer in SHARED else f"{mixer}-{targets[0]}")
        self.targets = targets

    def mixer_arguments(self) -> list[str]:
        paths = [self.args.target_prefixes[name] for name in self.targets]
        return [*MIXER_FLAGS.get(self.mixer, ["--mixer", self.mixer]), "--target-data-path", *paths]


def settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("steps", "layers", "hidden", "heads", "seq_length", "global_batch", "micro_batch", "eval_iters", "lr", "min_lr", "threads")
    return {"data_sha256": file_sha256(args.data_path), "targets_sha256": args.targets_sha256,
            "eval_interval": eval_interval(args), "log_interval": log_interval(args), **{key: getattr(args, key) for key in keys}}


def build_runs(root: str, args: argparse.Namespace) -> list[TargetRun]:
    runs = []
    for seed in args.seeds:
        runs += [TargetRun(root, mixer, seed, args, args.targets) for mixer in args.mixers if mixer in SHARED]
        runs += [TargetRun(root, mixer, seed, args, [target]) for target in args.targets for mixer in args.mixers if mixer in PER_TARGET]
    return runs


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    ensure_targets(args)
    args.evaluated = load_manifest(args.data_path).names
    mode = "quick" if args.quick else "full"
    config = settings(args)
    root = os.path.join(args.work_dir, f"{mode}-{hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]}")
    os.makedirs(root, exist_ok=True)
    write_json(os.path.join(root, "settings.json"), config)
    runs = build_runs(root, args)
    say(f"target quality ({mode}): {len(runs)} runs of {args.steps} steps in {root}")
    started = time.perf_counter()
    results = execute_runs(runs, args.fresh, "target quality", jobs=args.jobs)
    curves = {run.name: run.curves()[1] for run in runs if results[run.name].get("returncode") == 0}
    analysis = analyse(args, runs, results, curves)
    run_wall = sum(result.get("wall_s", 0.0) for result in results.values())
    document = {
        "benchmark": "target_quality", "mode": mode, "settings": config, "run_folder": os.path.relpath(root, REPO),
        "targets": args.targets, "mixers": args.mixers, "seeds": args.seeds,
        "parameters": parameter_count(args.layers, args.hidden, args),
        "wall_s": {"this_invocation": time.perf_counter() - started, "sum_of_runs": run_wall},
        "environment": describe_machine(("python", "torch", "cpus", "threads_per_run", "machine"), threads_per_run=args.threads),
        **analysis,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.join(args.output_dir, "target_quality")
    report = markdown(args, analysis, run_wall, mode)
    save_results(stem, document, CURVES)
    write_text(f"{stem}.md", report)
    plot_curves(args, analysis, f"{stem}_curves.png")
    plot_weights(args, analysis, f"{stem}_weights.png")
    print(report)
    say(f"wrote {stem}.{{json,curves.json.gz,md}}, {stem}_curves.png, {stem}_weights.png (runs: {root}, {clock(run_wall)} of runs)")
    return 1 if any(result.get("returncode") != 0 for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
