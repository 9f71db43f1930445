#!/usr/bin/env python
"""MergeMix quality: does the blend found by merging domain experts train better than uniform and static?

    python bench/mergemix_quality.py [--quick] [--corpus demo|noisy] [--expert-iters 50] [--base-steps N]
        [--rank-mixtures 10] [--seeds 1,2,3,4,5] [--jobs 1] [--work-dir data/mixing_quality]
        [--output-dir bench/results] [--fresh]

The GPT, data, optimiser, steps, seeds and final evaluation of `bench/mixing_quality.py` (its runs of
`uniform` and `static` are reused when complete, in the same folder). The search selects on held-out
documents that the reported evaluations never read: everything it sees is trained with `--split
953,16,31` (`runs.SELECTION_SPLIT`), so its validation documents are 95.3% to 96.9% of each domain,
while every reported figure is evaluated on 96.9% to 99.9% (`runs.SPLIT`, whose runs train on the
selection documents but never evaluate on them).

1. The base: a uniform run of seed 1 on the selection split, stopped and saved at `--base-steps` (a
   third of the steps by default) of the full schedule: the "short uniform run" MergeMix starts from.
2. `tools/mergemix.py` from that base: one expert per domain (`--expert-iters` steps at the base's
   peak learning rate, constant), the seed mixtures, 3 rounds of surrogate proposals; the objective is
   the uniform mean validation loss over the real domains (the noise of the noisy corpus excluded),
   on the selection documents. Its whole cost (expert steps, merged models evaluated, wall time) is
   reported.
3. Rank consistency (`--rank-mixtures` M, 0 to skip): for the uniform mixture and the first M - 1
   Dirichlet seed mixtures of the search, a real run from the same base, `--expert-iters` steps at
   the experts' learning rate on that mixture (seed 1, the selection split: evaluated on the very
   sequences the search evaluated); Spearman's rho between the merged model's objective and the real
   run's, with a 95% interval (Fisher's z with the variance 1.06/(M - 3) of a rank correlation), and a
   scatter plot.
4. The horizon check: does the search's winner hold at the search's own horizon? The found blend and
   the uniform mixture, each `--expert-iters` real steps from the base at the experts' learning rate,
   for every seed, on `runs.SPLIT` (their training documents include the selection block, which the
   experts did not see), evaluated by the final evaluation on the reported documents: blend minus
   uniform paired by seed, with its 95% t interval.
5. The found blend trained from scratch as `--mixer static` (`mergemix`) for every seed, against
   `uniform` and `static` (tokens-proportional): final loss paired by seed and steps to each
   reference's last periodic loss, by `mixing_quality_analysis`.

Every run and the search are cached under a key of the code they run and their command line
(`runs.py`). Writes `<output-dir>/mergemix_quality[_noisy].{json,md}`, the curves beside them in
`mergemix_quality[_noisy].curves.json.gz` (`result_files.py`), `..._curves.png`, `..._weights.png`
and `..._rank.png`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from typing import Any, Optional, Sequence

from scipy import stats

from code_version import code_hash, git_commit
from common import REPO, child_env, describe_machine, run_process, save_figure, say, write_json, write_text
from corpora import ensure_corpus
from megatron_acodm.data.manifest import Manifest, load_manifest
from megatron_acodm.mergemix.results import read_results
from megatron_acodm.mixing import MIXERS
from mixing_quality import parse_args as mixing_quality_args, settings
from mixing_quality_analysis import CURVES, METRIC_TITLES, METRICS, analyse, clock, final_values, parameter_count
from mixing_quality_plots import plot_curves, plot_weights
from mixing_quality_report import markdown
from result_files import save_results
from runs import ENTRY_POINT, SELECTION_SPLIT, SPLIT, Run, code_versions, digest, execute_runs, portable, read_json, wall_s, write_blend
from significance import LEVEL, compare, interval_text, p_text, seeds_lower

OUTPUT_STEMS = {"demo": "mergemix_quality", "noisy": "mergemix_quality_noisy"}
MIXERS_COMPARED = ("uniform", "static", "mergemix")
TOOL = "tools/mergemix.py"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a minutes-long smoke run: mixing_quality's quick preset")
    add("--corpus", choices=("demo", "noisy"), default="demo")
    add("--expert-iters", type=int, default=None, help="steps of each expert and of each short run from the base (full: 50; quick: 4)")
    add("--base-steps", type=int, default=None, help="steps of the base run (default: a third of the steps)")
    add("--rank-mixtures", type=int, default=None, help="mixtures of the rank check, 0 to skip (full: 10; quick: 5)")
    add("--seeds", default=None, help="comma-separated --seed values of the horizon check and the final comparison (full: 1,2,3,4,5)")
    add("--jobs", type=int, default=1, help="runs at a time (one core each)")
    add("--work-dir", default="data/mixing_quality", help="the mixing benchmark's scratch folder (its runs are reused)")
    add("--output-dir", default="bench/results")
    add("--fresh", action="store_true", help="rerun every run and the search")
    own = parser.parse_args(argv)
    forwarded = ["--corpus", own.corpus, "--mixers", "uniform,static", "--work-dir", own.work_dir, "--output-dir", own.output_dir]
    forwarded += ["--quick"] if own.quick else []
    forwarded += ["--seeds", own.seeds] if own.seeds else []
    args = mixing_quality_args(forwarded)
    args.mixers, args.references = list(MIXERS_COMPARED), ["uniform", "static"]
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


class BaseRun(Run):
    """The uniform run of seed 1 on the selection split, saved where it stops: `--base-steps` of the full schedule."""

    def __init__(self, root: str, args: argparse.Namespace):
        super().__init__(root, "uniform", 1, args, label="base", split=SELECTION_SPLIT)
        self.final_evaluation = False

    @property
    def last_step(self) -> int:
        return self.args.base_steps

    @property
    def saves_checkpoint(self) -> bool:
        return True

    def arguments(self) -> list[str]:
        return [*super().arguments(), "--exit-interval", str(self.last_step)]

    def _trained(self, key: str) -> bool:
        """Its record under `key` and its checkpoint at the step it stops at (it need not log or evaluate there)."""
        record = read_json(self.training_path)
        return record is not None and record.get("key") == key and self.checkpoint_at_last_step()


class ShortRun(Run):
    """A run from the base for `expert_iters` steps at the experts' constant learning rate on a fixed mixture."""

    def __init__(self, root: str, label: str, seed: int, args: argparse.Namespace, blend: str, base: BaseRun, split: str):
        super().__init__(root, "static", seed, args, label=label, split=split)
        self.blend, self.base, self.steps = blend, base.checkpoint, args.expert_iters
        self.final_evaluation = split == SPLIT  # on the selection split its own last evaluation is what counts

    def arguments(self) -> list[str]:
        steps = str(self.steps)
        return [*self.training_arguments(), "--data-path", self.blend, "--mixer", "static", "--pretrained-checkpoint", self.base,
                "--lr-decay-style", "constant", "--lr-warmup-iters", "0", "--min-lr", "0",
                "--eval-interval", steps, "--log-interval", str(max(1, self.steps // 10))]


def run_mergemix(args: argparse.Namespace, folder: str, base: BaseRun) -> dict[str, Any]:
    """tools/mergemix.py from the base, again whenever its key (its code, command line and base) changed;
    its blend, provenance, key, commit and wall time."""
    blend, work = os.path.join(folder, "blend.json"), os.path.join(folder, "search")
    record_path = os.path.join(folder, "search_record.json")
    objective = ",".join(args.evaluated) if args.corpus == "noisy" else "uniform"
    arguments = ["--base", base.checkpoint, "--data-path", os.path.abspath(args.data_path), "--output", blend,
                 "--expert-iters", str(args.expert_iters), "--eval-iters", str(args.eval_iters), "--objective", objective, "--work-dir", work]
    code = code_hash(REPO, [TOOL, ENTRY_POINT], MIXERS["static"].__module__)  # the experts train under --mixer static
    places = ((folder, "<search>"), (base.root, "<root>"), (REPO, "<repo>"))
    key = digest({"code": code, "command": [TOOL, *(portable(word, places) for word in arguments)], "base": base.keys()["key"]})
    record = read_json(record_path)
    if args.fresh or record is None or record.get("key") != key or not os.path.exists(blend):
        for stale in (record_path, blend):
            if os.path.exists(stale):
                os.remove(stale)
        if os.path.isdir(work):  # experts of other code or settings are not reused
            shutil.rmtree(work)
        say(f"mergemix: {len(args.evaluated) + (args.corpus == 'noisy')} experts of {args.expert_iters} steps, then the search")
        result = run_process([sys.executable, os.path.join(REPO, TOOL), *arguments], cwd=folder, env=child_env(args.threads),
                             log=os.path.join(folder, "mergemix.log"), check=True)
        record = {"key": key, "code_hash": code, **git_commit(REPO), "wall_s": result["wall_s"], "peak_rss_mib": result["peak_rss_mib"],
                  "command": ["python", TOOL, *arguments]}
        write_json(record_path, record)
    else:
        say(f"mergemix: complete already ({blend})")
    return {"blend": blend, "provenance": load_manifest(blend).provenance, **record}


def spearman_with_interval(merged: Sequence[float], real: Sequence[float]) -> dict[str, float]:
    """Spearman's rho and its 95% interval by Fisher's z (Fieller, Hartley and Pearson's variance 1.06/(n - 3))."""
    rho = float(stats.spearmanr(merged, real).statistic)
    half = 1.96 * math.sqrt(1.06 / (len(merged) - 3))
    z = math.atanh(max(min(rho, 0.999999), -0.999999))
    return {"rho": rho, "low": math.tanh(z - half), "high": math.tanh(z + half), "n": len(merged),
            "pearson": float(stats.pearsonr(merged, real).statistic)}


def short_runs(args: argparse.Namespace, folder: str, manifest: Manifest, search: dict[str, Any], base: BaseRun) -> dict[str, Any]:
    """The runs from the base: the rank check's mixtures and the blend at seed 1 on the selection split,
    and the horizon check's blend and uniform mixture at every seed on the reported split."""
    _, records = read_results(search["provenance"]["results"])
    seeds = [record for record in records if record["phase"] == "seed" and max(record["mixture"].values()) < 1.0 - 1e-9]
    chosen = seeds[: max(args.rank_mixtures, 1)]  # uniform first, then the Dirichlet samples (the corners left out)
    files = [write_blend(os.path.join(folder, f"mixture{index:02d}.json"), manifest, record["mixture"]) for index, record in enumerate(chosen)]
    rank = [ShortRun(folder, f"rank-mixture{index:02d}", 1, args, path, base, SELECTION_SPLIT) for index, path in enumerate(files)]
    rank = rank[: args.rank_mixtures]
    rank_blend = ShortRun(folder, "rank-blend", 1, args, search["blend"], base, SELECTION_SPLIT)
    horizon = {name: [ShortRun(folder, f"horizon-{name}", seed, args, path, base, SPLIT) for seed in args.seeds]
               for name, path in (("blend", search["blend"]), ("uniform", files[0]))}
    runs = [*rank, *([rank_blend] if rank else []), *horizon["blend"], *horizon["uniform"]]
    return {"chosen": chosen, "rank": rank, "rank_blend": rank_blend, "horizon": horizon,
            "results": execute_runs(runs, args.fresh, "runs from the base", jobs=args.jobs)}


def rank_check(args: argparse.Namespace, short: dict[str, Any], search: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The merged objective against the real runs' last evaluation (the search's own sequences)."""
    if not args.rank_mixtures:
        return None
    results = short["results"]
    last = lambda run: run.curves()[1]["valid"]["lm_loss_uniform"][-1] if results[run.name].get("returncode") == 0 else None
    pairs = [{"mixture": record["mixture"], "merged": record["objective"], "real": last(run)}
             for run, record in zip(short["rank"], short["chosen"]) if last(run) is not None]
    blend = {"merged": search["provenance"]["merged_objective"], "real": last(short["rank_blend"])}
    return {"pairs": pairs, "blend": blend, **spearman_with_interval([pair["merged"] for pair in pairs], [pair["real"] for pair in pairs])}


def horizon_check(short: dict[str, Any]) -> dict[str, Any]:
    """The blend against the uniform mixture at the search's horizon, on the reported documents, paired by seed."""
    results = short["results"]
    finished = {name: [{"seed": run.seed, **run.curves()[1]} for run in runs if results[run.name].get("returncode") == 0]
                for name, runs in short["horizon"].items()}
    return {metric: compare(final_values(finished["blend"], metric), final_values(finished["uniform"], metric)) for metric in METRICS}


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


def search_markdown(args: argparse.Namespace, search: dict[str, Any], rank: Optional[dict[str, Any]], horizon: dict[str, Any]) -> str:
    provenance = search["provenance"]
    lines = ["## The search", "",
             f"- Base: a uniform run of seed 1 at step {args.base_steps} of {args.steps}, trained with `--split {SELECTION_SPLIT}`: "
             f"the base, the experts and the search never see the documents the figures above are evaluated on "
             f"(`--split {SPLIT}`'s validation documents); the search selects on the 95.3%-96.9% block of each domain.",
             f"- Cost: the base's {args.base_steps} steps, {provenance['expert_steps']} expert steps ({len(provenance['experts'])} experts x {provenance['expert_iters']}, "
             f"lr {provenance['expert_lr']} constant), {provenance['merged_models_evaluated']} merged models evaluated, "
             f"{clock(search['wall_s'])} of wall time for tools/mergemix.py (one process, experts' start-ups included), "
             f"against {args.steps} steps per training run.",
             f"- Merged objective: {provenance['merged_objective']:.4f} at the blend, "
             f"{provenance['merged_objective_uniform']:.4f} at the uniform mixture.", "",
             "## The blend at the search's horizon", "",
             f"The blend and the uniform mixture, each {args.expert_iters} real steps from the base at the experts' learning rate, "
             f"seeds {', '.join(map(str, args.seeds))}, evaluated like every figure above (final evaluation, reported documents); "
             f"blend minus uniform paired by seed, mean and {LEVEL:.0%} t interval (negative: the blend is better):", ""]
    lines += [f"- {METRIC_TITLES[metric]}: {interval_text(paired)} (p {p_text(paired)}, lower on {seeds_lower(paired)} of "
              f"{paired['n']} seeds): **{paired['verdict']}**." for metric, paired in horizon.items()]
    lines.append("")
    if rank is not None:
        lines += ["## Rank consistency", "",
                  f"{rank['n']} mixtures (uniform and the first Dirichlet seed mixtures of the search), each merged and each "
                  f"trained for real from the base ({args.expert_iters} steps at the experts' learning rate, seed 1, evaluated "
                  f"on the search's own sequences): Spearman rho **{rank['rho']:.2f}** (95% interval {rank['low']:.2f} to "
                  f"{rank['high']:.2f}), Pearson {rank['pearson']:.2f}.", "",
                  "| mixture | merged | real |", "|---|---|---|"]
        lines += [f"| {index} | {pair['merged']:.4f} | {pair['real']:.4f} |" for index, pair in enumerate(rank["pairs"])]
        blend, uniform = rank["blend"], rank["pairs"][0]
        lines += [f"| the blend | {blend['merged']:.4f} | {blend['real']:.4f} |", "",
                  f"On the search's own sequences at seed 1 the blend is merged {blend['merged'] - uniform['merged']:+.4f} and real "
                  f"{blend['real'] - uniform['real']:+.4f} against the uniform mixture (mixture 0).", ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    ensure_corpus(args)
    mode = "quick" if args.quick else "full"
    config = settings(args)
    root = os.path.join(args.work_dir, f"{mode}-{hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]}")
    folder = os.path.join(root, f"mergemix-e{args.expert_iters}-b{args.base_steps}")
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(root, "settings.json"), config)
    started = time.perf_counter()
    base = BaseRun(folder, args)
    base_result = execute_runs([base], args.fresh, "mergemix base")[base.name]
    if base_result.get("returncode") != 0:
        sys.exit(f"error: the base run failed; see {base.folder}")
    search = run_mergemix(args, folder, base)
    manifest = load_manifest(args.data_path)
    short = short_runs(args, os.path.join(folder, "from_base"), manifest, search, base)
    rank, horizon = rank_check(args, short, search), horizon_check(short)
    runs = []
    for seed in args.seeds:
        runs += [Run(root, "uniform", seed, args), Run(root, "static", seed, args), BlendRun(root, seed, args, search["blend"])]
    results = execute_runs(runs, args.fresh, "mergemix quality", jobs=args.jobs)
    curves, names = {}, []
    for run in runs:
        if results[run.name].get("returncode") == 0:
            names, curves[run.name] = run.curves()
    analysis = analyse(args, results, curves, names)
    run_wall = sum(wall_s(result) for result in [*results.values(), *short["results"].values(), base_result])
    stem = os.path.join(args.output_dir, OUTPUT_STEMS[args.corpus])
    title, body = markdown(args, analysis, run_wall, mode).split("\n", 1)
    report = f"# MergeMix quality ({mode} run): a blend found offline against uniform and static\n{body}"
    report += "\n" + search_markdown(args, search, rank, horizon)
    document = {
        "benchmark": "mergemix_quality", "mode": mode, "corpus": args.corpus, "settings": config,
        "run_folder": os.path.relpath(root, REPO), "seeds": args.seeds, "expert_iters": args.expert_iters,
        "base_steps": args.base_steps, "split": SPLIT, "selection_split": SELECTION_SPLIT, "search": search, "rank": rank,
        "horizon": horizon, "parameters": parameter_count(args.layers, args.hidden, args), "metric_titles": METRIC_TITLES,
        "code": code_versions({**results, **short["results"], base.name: base_result}),
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
