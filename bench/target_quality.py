#!/usr/bin/env python
"""Target quality: does a task-aligned mixer specialise the model to a task known from a few examples,
and what does the specialisation cost?

    python bench/target_quality.py [--quick] [--targets quiz,gsm8k,humaneval] [--seeds 1,2,3,4,5] [--jobs 1]
        [--mixers uniform,static,importance,dga,acodm_target] [--dga-step-sizes 1,3,30]
        [--importance-shares 0.25,0.5,1] [--work-dir data/target_quality] [--output-dir bench/results] [--fresh]

Trains the GPT of `bench/mixing_quality.py` (same presets, data, optimiser, seeds and final
evaluation) on the demo corpus under each mixer, and reports the held-out loss of each demo target
set (`data/demo/targets`, indexed into `data/demo/targets-indexed/` when missing; each split once
into steering and held-out examples by `--target-split`'s default):

- `uniform` and `static` (tokens-proportional) read no target: one run per seed evaluates every
  target set, and serves as the reference of each;
- per target set: `importance` (static weights from the steering examples' n-gram posterior),
  `dga` at its defaults, and `acodm_target` (our bounded AC-ODM, `runs.VARIANTS`, with `--mixing-objective
  target`: the published reward reads no objective);
- the trade-off, per target set: DGA at each `--dga-step-sizes` value (the default step size is the
  `dga` run itself), and the importance weights blended with uniform, `a * importance + (1 - a) *
  uniform` for each `--importance-shares` value a, trained as a static blend (`--mixer static` on a
  blend file; a = 1 is the `importance` run).

Per target set and mixer, from each run's final evaluation: the held-out target loss paired by seed
against uniform and importance, and the general loss (uniform mean over the domains: what the
specialisation costs) against uniform, each with its 95% t interval (`significance.py`); the steps
to reach uniform's last periodic target loss (linear between evaluations) and the ratio; the
mixture over time; and the per-step time against static (the target pass's cost). The trade-off:
each point's general and target loss against uniform, and, at the same general loss, whether one
curve lies below the other (`target_quality_analysis.py`). Runs go to
`<work-dir>/<quick|full>-<hash of the settings>/<mixer>[-<variant>][-<target>]-seed<S>/`, complete
runs under their current key are reused (`runs.py`). Writes `<output-dir>/target_quality.{json,md}`,
the curves beside them in `target_quality.curves.json.gz` (`result_files.py`), and
`target_quality_curves.png`, `target_quality_weights.png`, `target_quality_tradeoff.png`.
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
from megatron_acodm.arguments import build_parser
from megatron_acodm.data.manifest import load_manifest
from megatron_acodm.data.tokenizers import file_sha256
from megatron_acodm.mixing.importance import importance_weights, steering_examples
from megatron_acodm.mixing.registry import MIXERS, own_options
from mixing_quality_analysis import clock, eval_interval, log_interval, parameter_count
from result_files import save_results
from runs import PRESETS, SPLIT, TUNED_TEMPERATURE, VARIANTS, Run, add_run_options, code_versions, execute_runs, wall_s, write_blend
from target_quality_analysis import CURVES, Row, analyse
from target_quality_plots import plot_curves, plot_tradeoff, plot_weights
from target_quality_report import markdown

TARGETS_DIR = f"{DEMO_DIR}/targets"
TARGETS_DATA = f"{DEMO_DIR}/targets-indexed/domains.json"
SHARED = ("uniform", "static")  # read no target: one run evaluates every target set
PER_TARGET = ("importance", "dga", "acodm_target")
MIXER_FLAGS = {"acodm_target": [*VARIANTS["acodm_bounded"], "--mixing-objective", "target"]}
DGA_STEP_SIZE = own_options(MIXERS["dga"])["dga_step_size"]  # DGA's default: the `dga` row
DGA_CURVE, BLEND_CURVE = "dga", "importance blend"


def _numbers(text: str, option: str, parser: argparse.ArgumentParser) -> list[float]:
    try:
        return sorted({float(value) for value in text.split(",") if value.strip()})
    except ValueError:
        parser.error(f"{option} {text!r}: give comma-separated numbers")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a minutes-long smoke run: tiny model, 2 seeds, 40 steps")
    add("--targets", default="quiz,gsm8k,humaneval", help="comma-separated target sets of the demo corpus")
    add("--mixers", default=",".join(SHARED + PER_TARGET), help=f"comma-separated, from {','.join(SHARED + PER_TARGET)}")
    add("--dga-step-sizes", default="1,3,30",
        help=f"DGA's step sizes on the trade-off curve (with dga in --mixers; {DGA_STEP_SIZE:g}, the default, is the dga run)")
    add("--importance-shares", default="0.25,0.5,1",
        help="shares a of the blends a * importance + (1 - a) * uniform on the trade-off curve, in (0, 1] "
             "(with importance in --mixers; 1 is the importance run)")
    add("--seeds", default=None, help="comma-separated --seed values (full: 1,2,3,4,5; quick: 1,2)")
    add_run_options(parser, "data/target_quality")
    args = parser.parse_args(argv)
    for key, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.seeds = [int(seed) for seed in str(args.seeds).split(",") if seed.strip()]
    args.targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    args.mixers = [name.strip() for name in args.mixers.split(",") if name.strip()]
    args.dga_step_sizes = _numbers(args.dga_step_sizes, "--dga-step-sizes", parser)
    args.importance_shares = _numbers(args.importance_shares, "--importance-shares", parser)
    unknown = [mixer for mixer in args.mixers if mixer not in SHARED + PER_TARGET]
    if unknown:
        parser.error(f"unknown mixers {unknown}; choose from {', '.join(SHARED + PER_TARGET)}")
    if "uniform" not in args.mixers:
        parser.error("--mixers must include uniform: the reference of every ratio")
    if any(step < 0 for step in args.dga_step_sizes):
        parser.error("--dga-step-sizes must be >= 0")
    if any(not 0 < share <= 1 for share in args.importance_shares):
        parser.error("--importance-shares must be in (0, 1]")
    # What the runs (`runs.Run`) read besides the presets.
    args.tokenizer_type, args.tokenizer_model, args.data_path = "SentencePieceTokenizer", None, None
    args.lr, args.min_lr, args.temperature, args.mixing_objective = 1e-3, 1e-4, TUNED_TEMPERATURE, None
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


def build_rows(args: argparse.Namespace) -> list[Row]:
    """The table's rows: the mixers, then DGA at its other step sizes and the importance blends."""
    rows = []
    for mixer in args.mixers:
        curve, parameter = {"dga": (DGA_CURVE, DGA_STEP_SIZE), "importance": (BLEND_CURVE, 1.0)}.get(mixer, (None, None))
        rows.append(Row(mixer, mixer, mixer, shared=mixer in SHARED, curve=curve, parameter=parameter))
    if "dga" in args.mixers:
        rows += [Row(f"dga, step {step:g}", "dga", f"dga-step{step:g}", options=("--dga-step-size", str(step)), curve=DGA_CURVE, parameter=step)
                 for step in args.dga_step_sizes if step != DGA_STEP_SIZE]
    if "importance" in args.mixers:
        rows += [Row(f"importance x {share:g}", "blend", f"importance-blend{share:g}", share=share, curve=BLEND_CURVE, parameter=share)
                 for share in args.importance_shares if share != 1.0]
    return rows


def write_importance_blends(args: argparse.Namespace, rows: list[Row], folder: str) -> dict[tuple[str, float], str]:
    """Per target set and blend share a: a blend file of a * importance + (1 - a) * uniform, the
    importance weights computed as `--mixer importance` computes them (its steering examples at the
    trainer's default `--target-split`)."""
    shares = [row.share for row in rows if row.mixer == "blend"]
    if not shares:
        return {}
    manifest = load_manifest(args.data_path)
    split = build_parser().get_default("target_split")
    os.makedirs(folder, exist_ok=True)
    blends = {}
    for target in args.targets:
        say(f"importance weights for {target}")
        weights = importance_weights([domain.prefix for domain in manifest.domains], steering_examples([args.target_prefixes[target]], split))
        for share in shares:
            mixture = {name: share * float(weight) + (1 - share) / len(manifest.names) for name, weight in zip(manifest.names, weights)}
            blends[target, share] = write_blend(os.path.join(folder, f"importance-{target}-a{share:g}.json"), manifest, mixture)
    return blends


class TargetRun(Run):
    """A run of the comparison with target sets: `targets` are evaluated, the row's mixer may read them."""

    def __init__(self, root: str, row: Row, seed: int, args: argparse.Namespace, targets: list[str], blend: Optional[str] = None):
        super().__init__(root, row.mixer, seed, args, label=row.label(targets[0]), options=row.options)
        self.targets, self.blend = targets, blend

    def mixer_arguments(self) -> list[str]:
        paths = [self.args.target_prefixes[name] for name in self.targets]
        mixer = ["--data-path", self.blend, "--mixer", "static"] if self.blend else MIXER_FLAGS.get(self.mixer, ["--mixer", self.mixer])
        return [*mixer, *self.options, "--target-data-path", *paths]  # a blend's --data-path comes last: argparse keeps it


def settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("steps", "layers", "hidden", "heads", "seq_length", "global_batch", "micro_batch", "eval_iters", "lr", "min_lr", "threads")
    return {"data_sha256": file_sha256(args.data_path), "targets_sha256": args.targets_sha256,
            "eval_interval": eval_interval(args), "log_interval": log_interval(args), **{key: getattr(args, key) for key in keys}}


def build_runs(root: str, args: argparse.Namespace, rows: list[Row], blends: dict[tuple[str, float], str]) -> list[TargetRun]:
    runs = []
    for seed in args.seeds:
        runs += [TargetRun(root, row, seed, args, args.targets) for row in rows if row.shared]
        runs += [TargetRun(root, row, seed, args, [target], blends.get((target, row.share)))
                 for target in args.targets for row in rows if not row.shared]
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
    rows = build_rows(args)
    blends = write_importance_blends(args, rows, os.path.join(root, "blends"))
    runs = build_runs(root, args, rows, blends)
    say(f"target quality ({mode}): {len(runs)} runs of {args.steps} steps in {root}")
    started = time.perf_counter()
    results = execute_runs(runs, args.fresh, "target quality", jobs=args.jobs)
    curves = {run.name: run.curves()[1] for run in runs if results[run.name].get("returncode") == 0}
    analysis = analyse(args, rows, results, curves)
    run_wall = sum(wall_s(result) for result in results.values())
    document = {
        "benchmark": "target_quality", "mode": mode, "settings": config, "run_folder": os.path.relpath(root, REPO),
        "targets": args.targets, "mixers": args.mixers, "seeds": args.seeds, "split": SPLIT,
        "dga_step_sizes": args.dga_step_sizes, "dga_default_step_size": DGA_STEP_SIZE, "importance_shares": args.importance_shares,
        "final_eval_iters": args.final_eval_iters, "code": code_versions(results),
        "parameters": parameter_count(args.layers, args.hidden, args),
        "wall_s": {"this_invocation": time.perf_counter() - started, "sum_of_runs": run_wall},
        "environment": describe_machine(("python", "torch", "cpus", "threads_per_run", "machine"), threads_per_run=args.threads),
        "runs": {name: {key: result.get(key) for key in ("label", "seed", "returncode", "commit", "package_modified", "code_hash", "key", "wall_s")}
                 for name, result in results.items()},
        **analysis,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.join(args.output_dir, "target_quality")
    report = markdown(args, analysis, run_wall, mode)
    save_results(stem, document, CURVES)
    write_text(f"{stem}.md", report)
    plot_curves(args, analysis, f"{stem}_curves.png")
    plot_weights(args, analysis, f"{stem}_weights.png")
    plot_tradeoff(args, analysis, f"{stem}_tradeoff.png")
    print(report)
    say(f"wrote {stem}.{{json,curves.json.gz,md}}, {stem}_curves.png, {stem}_weights.png, {stem}_tradeoff.png "
        f"(runs: {root}, {clock(run_wall)} of runs)")
    return 1 if any(result.get("returncode") != 0 for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
