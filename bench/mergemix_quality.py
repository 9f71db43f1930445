#!/usr/bin/env python
"""MergeMix quality: does the blend found by merging domain experts train better than uniform and static?

    python bench/mergemix_quality.py [--quick] [--corpus demo|noisy] [--expert-iters 50] [--base-steps N]
        [--rank-mixtures 10] [--jobs 1] [--work-dir data/mixing_quality] [--output-dir bench/results] [--fresh]

The GPT, data, optimiser, steps and seeds of `bench/mixing_quality.py` (its runs of `uniform` and
`static` are reused when complete, in the same folder):

1. The base: the uniform run of seed 1 stopped at `--base-steps` (a third of the steps by default),
   checkpointed: the "short uniform run" MergeMix starts from.
2. `tools/mergemix.py` from that base: one expert per domain (`--expert-iters` steps at the base's
   peak learning rate, constant), the seed mixtures, 3 rounds of surrogate proposals; the objective is
   the uniform mean validation loss over the real domains (the noise of the noisy corpus excluded).
   Its whole cost (expert steps, merged models evaluated, wall time) is reported.
3. Rank consistency (`--rank-mixtures` M, 0 to skip): for the uniform mixture and the first M - 1
   Dirichlet seed mixtures of the search, a real run from the same base, `--expert-iters` steps at
   the experts' learning rate on that mixture; Spearman's rho between the merged model's objective and
   the real run's, with a 95% interval (Fisher's z with the variance 1.06/(M - 3) of a rank
   correlation), and a scatter plot; and the found blend the same way, apart from rho: does the
   search's winner hold at the search's own horizon?
4. The found blend trained from scratch as `--mixer static` (`mergemix`) for every seed, against
   `uniform` and `static` (tokens-proportional): final loss paired by seed and steps to each
   reference's final loss, by `mixing_quality_analysis`.

Writes `<output-dir>/mergemix_quality[_noisy].{json,md}`, the curves beside them in
`mergemix_quality[_noisy].curves.json.gz` (`result_files.py`), `..._curves.png`, `..._weights.png`
and `..._rank.png`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from typing import Any, Optional, Sequence

from scipy import stats

from common import REPO, child_env, describe_machine, run_process, save_figure, say, write_json, write_text
from corpora import ensure_corpus
from megatron_acodm.data.manifest import Manifest, load_manifest
from megatron_acodm.mergemix.results import read_results
from megatron_acodm.training.checkpoint import open_checkpoint
from mixing_quality import parse_args as mixing_quality_args, settings
from mixing_quality_analysis import CURVES, METRIC_TITLES, analyse, clock, parameter_count
from mixing_quality_plots import plot_curves, plot_weights
from mixing_quality_report import markdown
from result_files import save_results
from runs import Run, execute_runs

OUTPUT_STEMS = {"demo": "mergemix_quality", "noisy": "mergemix_quality_noisy"}
MIXERS = ("uniform", "static", "mergemix")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a minutes-long smoke run: mixing_quality's quick preset")
    add("--corpus", choices=("demo", "noisy"), default="demo")
    add("--expert-iters", type=int, default=None, help="steps of each expert and of each rank-check run (full: 50; quick: 4)")
    add("--base-steps", type=int, default=None, help="steps of the base run (default: a third of the steps)")
    add("--rank-mixtures", type=int, default=None, help="mixtures of the rank check, 0 to skip (full: 10; quick: 5)")
    add("--seeds", default=None, help="comma-separated --seed values of the final comparison (full: 1,2,3)")
    add("--jobs", type=int, default=1, help="runs at a time (one core each)")
    add("--work-dir", default="data/mixing_quality", help="the mixing benchmark's scratch folder (its runs are reused)")
    add("--output-dir", default="bench/results")
    add("--fresh", action="store_true", help="rerun every run and the search")
    own = parser.parse_args(argv)
    forwarded = ["--corpus", own.corpus, "--mixers", "uniform,static", "--work-dir", own.work_dir, "--output-dir", own.output_dir]
    forwarded += ["--quick"] if own.quick else []
    forwarded += ["--seeds", own.seeds] if own.seeds else []
    args = mixing_quality_args(forwarded)
    args.mixers, args.references = list(MIXERS), ["uniform", "static"]
    args.expert_iters = own.expert_iters or (4 if own.quick else 50)
    args.base_steps = own.base_steps or args.steps // 3
    args.rank_mixtures = own.rank_mixtures if own.rank_mixtures is not None else (5 if own.quick else 10)
    args.jobs, args.fresh = max(1, own.jobs), own.fresh
    if args.rank_mixtures and args.rank_mixtures < 4:
        parser.error("--rank-mixtures must be 0 or at least 4 (a rank correlation's interval needs n > 3)")
    return args


class BlendRun(Run):
    """A run of the comparison on a blend file (`--data-path BLEND.json --mixer static`)."""

    def __init__(self, root: str, seed: int, args: argparse.Namespace, blend: str):
        super().__init__(root, "mergemix", seed, args)
        self.blend = blend

    def mixer_arguments(self) -> list[str]:
        return ["--data-path", self.blend, "--mixer", "static"]  # the last --data-path wins


class ShortRun(Run):
    """A run from the base for `expert_iters` steps at the experts' constant learning rate on a fixed mixture."""

    def __init__(self, root: str, label: str, args: argparse.Namespace, blend: str, base: str):
        super().__init__(root, "static", 1, args, label=label)
        self.blend, self.base, self.steps = blend, base, args.expert_iters

    def arguments(self) -> list[str]:
        steps = str(self.steps)
        return [*self.training_arguments(), "--data-path", self.blend, "--mixer", "static", "--pretrained-checkpoint", self.base,
                "--train-iters", steps, "--lr-decay-style", "constant", "--lr-warmup-iters", "0", "--min-lr", "0",
                "--eval-interval", steps, "--log-interval", str(max(1, self.steps // 10))]


def write_mixture(path: str, manifest: Manifest, mixture: dict[str, float]) -> str:
    manifest.with_weights(mixture).save(path)
    return path


def ensure_base(args: argparse.Namespace, folder: str) -> str:
    """The uniform run of seed 1, stopped and saved at `--base-steps`; its --save folder."""
    checkpoints = os.path.join(folder, "checkpoints")
    opened = None if args.fresh else open_checkpoint(checkpoints) if os.path.isdir(checkpoints) else None
    if opened is not None and opened[1]["iteration"] == args.base_steps:
        say(f"base: complete already ({opened[0]})")
        return checkpoints
    run = Run(folder, "uniform", 1, args, label="base")
    command = [*run.command(), "--save", checkpoints, "--exit-interval", str(args.base_steps)]
    say(f"base: uniform, seed 1, {args.base_steps} of {args.steps} steps")
    os.makedirs(folder, exist_ok=True)
    run_process(command, cwd=folder, env=child_env(args.threads), log=os.path.join(folder, "base.log"), check=True)
    return checkpoints


def run_mergemix(args: argparse.Namespace, folder: str, base: str) -> dict[str, Any]:
    """tools/mergemix.py from the base; its blend, provenance and (when it ran now) wall time."""
    blend = os.path.join(folder, "blend.json")
    cost_path = os.path.join(folder, "search_cost.json")
    objective = ",".join(args.evaluated) if args.corpus == "noisy" else "uniform"
    command = [sys.executable, os.path.join(REPO, "tools", "mergemix.py"), "--base", base, "--data-path", args.data_path,
               "--output", blend, "--expert-iters", str(args.expert_iters), "--eval-iters", str(args.eval_iters),
               "--objective", objective, "--work-dir", os.path.join(folder, "search")]
    if args.fresh or not os.path.exists(cost_path):
        say(f"mergemix: {len(args.evaluated) + (args.corpus == 'noisy')} experts of {args.expert_iters} steps, then the search")
        result = run_process(command, cwd=folder, env=child_env(args.threads), log=os.path.join(folder, "mergemix.log"), check=True)
        write_json(cost_path, {"wall_s": result["wall_s"], "peak_rss_mib": result["peak_rss_mib"]})
    else:
        say(f"mergemix: complete already ({blend})")
    with open(cost_path, encoding="utf-8") as stream:
        cost = json.load(stream)
    provenance = load_manifest(blend).provenance
    return {"blend": blend, "command": ["python", "tools/mergemix.py", *command[2:]], "provenance": provenance, **cost}


def spearman_with_interval(merged: Sequence[float], real: Sequence[float]) -> dict[str, float]:
    """Spearman's rho and its 95% interval by Fisher's z (Fieller, Hartley and Pearson's variance 1.06/(n - 3))."""
    rho = float(stats.spearmanr(merged, real).statistic)
    half = 1.96 * math.sqrt(1.06 / (len(merged) - 3))
    z = math.atanh(max(min(rho, 0.999999), -0.999999))
    return {"rho": rho, "low": math.tanh(z - half), "high": math.tanh(z + half), "n": len(merged),
            "pearson": float(stats.pearsonr(merged, real).statistic)}


def rank_check(args: argparse.Namespace, folder: str, manifest: Manifest, search: dict[str, Any], base: str) -> Optional[dict[str, Any]]:
    if not args.rank_mixtures:
        return None
    _, records = read_results(search["provenance"]["results"])
    seeds = [record for record in records if record["phase"] == "seed" and max(record["mixture"].values()) < 1.0 - 1e-9]
    chosen = seeds[: args.rank_mixtures]  # uniform first, then the Dirichlet samples (the corners left out)
    runs = [ShortRun(folder, f"mixture{index:02d}", args, write_mixture(os.path.join(folder, f"mixture{index:02d}.json"), manifest, record["mixture"]), base)
            for index, record in enumerate(chosen)]
    blend_run = ShortRun(folder, "blend", args, search["blend"], base)  # the winner at the search's own horizon
    results = execute_runs([*runs, blend_run], args.fresh, "rank check", jobs=args.jobs)
    final = lambda run: run.curves()[1]["valid"]["lm_loss_uniform"][-1] if results[run.name].get("returncode") == 0 else None
    pairs = [{"mixture": record["mixture"], "merged": record["objective"], "real": final(run)}
             for run, record in zip(runs, chosen) if final(run) is not None]
    blend = {"merged": search["provenance"]["merged_objective"], "real": final(blend_run)}
    return {"pairs": pairs, "blend": blend, **spearman_with_interval([pair["merged"] for pair in pairs], [pair["real"] for pair in pairs])}


def plot_rank(rank: dict[str, Any], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(5.5, 4.5))
    merged = [pair["merged"] for pair in rank["pairs"]]
    real = [pair["real"] for pair in rank["pairs"]]
    axes.scatter(merged, real, color="tab:blue")
    axes.scatter(merged[:1], real[:1], color="tab:red", label="uniform mixture")
    axes.scatter([rank["blend"]["merged"]], [rank["blend"]["real"]], color="tab:green", marker="*", s=120, label="the blend (not in rho)")
    axes.set_xlabel("merged model: validation loss (uniform mean)")
    axes.set_ylabel("real run from the base: validation loss")
    axes.set_title(f"{title}\nSpearman rho {rank['rho']:.2f} [{rank['low']:.2f}, {rank['high']:.2f}], n = {rank['n']}", fontsize=10)
    axes.legend(loc="best", fontsize=8)
    axes.grid(alpha=0.3)
    save_figure(figure, path, dpi=120)


def rank_and_cost_markdown(args: argparse.Namespace, search: dict[str, Any], rank: Optional[dict[str, Any]]) -> str:
    provenance = search["provenance"]
    lines = ["## The search", "",
             f"- Base: the uniform run of seed 1 at step {args.base_steps} of {args.steps}.",
             f"- Cost: the base's {args.base_steps} steps, {provenance['expert_steps']} expert steps ({len(provenance['experts'])} experts x {provenance['expert_iters']}, "
             f"lr {provenance['expert_lr']} constant), {provenance['merged_models_evaluated']} merged models evaluated, "
             f"{clock(search['wall_s'])} of wall time for tools/mergemix.py (one process, experts' start-ups included), "
             f"against {args.steps} steps per training run.",
             f"- Merged objective: {provenance['merged_objective']:.4f} at the blend, "
             f"{provenance['merged_objective_uniform']:.4f} at the uniform mixture.", ""]
    if rank is not None:
        lines += ["## Rank consistency", "",
                  f"{rank['n']} mixtures (uniform and the first Dirichlet seed mixtures of the search), each merged and each "
                  f"trained for real from the base ({args.expert_iters} steps at the experts' learning rate): Spearman rho "
                  f"**{rank['rho']:.2f}** (95% interval {rank['low']:.2f} to {rank['high']:.2f}), Pearson {rank['pearson']:.2f}.", "",
                  "| mixture | merged | real |", "|---|---|---|"]
        lines += [f"| {index} | {pair['merged']:.4f} | {pair['real']:.4f} |" for index, pair in enumerate(rank["pairs"])]
        blend, uniform = rank["blend"], rank["pairs"][0]
        lines += [f"| the blend | {blend['merged']:.4f} | {blend['real']:.4f} |", "",
                  f"The blend at the search's own horizon (the same {args.expert_iters} real steps from the base): merged "
                  f"{blend['merged'] - uniform['merged']:+.4f} against the uniform mixture, real {blend['real'] - uniform['real']:+.4f} "
                  f"(mixture 0 is uniform; one run each, seed 1).", ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    ensure_corpus(args)
    mode = "quick" if args.quick else "full"
    config = settings(args)
    root = os.path.join(os.path.abspath(args.work_dir), f"{mode}-{hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]}")
    folder = os.path.join(root, f"mergemix-e{args.expert_iters}-b{args.base_steps}")
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(root, "settings.json"), config)
    started = time.perf_counter()
    base = ensure_base(args, os.path.join(folder, "base"))
    search = run_mergemix(args, folder, base)
    manifest = load_manifest(args.data_path)
    rank = rank_check(args, os.path.join(folder, "rank"), manifest, search, base)
    runs = []
    for seed in args.seeds:
        runs += [Run(root, "uniform", seed, args), Run(root, "static", seed, args), BlendRun(root, seed, args, search["blend"])]
    results = execute_runs(runs, args.fresh, "mergemix quality", jobs=args.jobs)
    curves, names = {}, []
    for run in runs:
        if results[run.name].get("returncode") == 0:
            names, curves[run.name] = run.curves()
    analysis = analyse(args, results, curves, names)
    run_wall = sum(result.get("wall_s", 0.0) for result in results.values())
    stem = os.path.join(args.output_dir, OUTPUT_STEMS[args.corpus])
    title, body = markdown(args, analysis, run_wall, mode).split("\n", 1)
    report = f"# MergeMix quality ({mode} run): a blend found offline against uniform and static\n{body}"
    report += "\n" + rank_and_cost_markdown(args, search, rank)
    document = {
        "benchmark": "mergemix_quality", "mode": mode, "corpus": args.corpus, "settings": config,
        "run_folder": os.path.relpath(root, REPO), "seeds": args.seeds, "expert_iters": args.expert_iters,
        "base_steps": args.base_steps, "search": search, "rank": rank,
        "parameters": parameter_count(args.layers, args.hidden, args), "metric_titles": METRIC_TITLES,
        "wall_s": {"this_invocation": time.perf_counter() - started, "sum_of_runs": run_wall},
        "environment": describe_machine(("python", "torch", "cpus", "threads_per_run", "machine"), threads_per_run=args.threads),
        **analysis,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    save_results(stem, document, CURVES)
    write_text(f"{stem}.md", report)
    plot_curves(args, analysis, f"{stem}_curves.png", mode)
    plot_weights(args, analysis, f"{stem}_weights.png", mode)
    if rank is not None:
        plot_rank(rank, f"{stem}_rank.png", f"MergeMix rank consistency ({args.corpus} corpus)")
    print(report)
    say(f"wrote {stem}.{{json,curves.json.gz,md}} and its figures (runs: {root})")
    return 1 if any(result.get("returncode") != 0 for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
