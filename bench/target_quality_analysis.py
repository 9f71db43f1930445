"""Target quality, the numbers, the markdown page and the figures, from the runs' curves."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from common import save_figure
from mixing_quality_analysis import clock, effective_domains, mean_lists, paired_differences, spread, standard_error, steps_to_reach

REFERENCE = "uniform"
COST_REFERENCE = "static"  # the per-step time of a run without any target pass or sketch
COLOURS = {"uniform": "black", "static": "tab:gray", "importance": "tab:blue", "dga": "tab:green", "acodm_target": "tab:red"}
# What of `analyse`'s result is a value per evaluation or log record: the results' side file holds it
# (`result_files.save_results`), the summary JSON the rest.
CURVES = ("per_target/*/iterations", "per_target/*/mixers/*/target_loss/mean_curve",
          "per_target/*/mixers/*/weights/iteration", "per_target/*/mixers/*/weights/mean_curve")


def run_name(mixer: str, target: str, seed: int) -> str:
    return f"{mixer}-seed{seed}" if mixer in ("uniform", "static") else f"{mixer}-{target}-seed{seed}"


def _mixer_entry(args, target: str, mixer: str, curves: dict, reference: dict[int, dict], importance: dict[int, dict]) -> dict[str, Any]:
    runs = {seed: curves[name] for seed in args.seeds if (name := run_name(mixer, target, seed)) in curves}
    if not runs:
        return {"seeds_ok": []}
    target_final = {seed: run["valid"]["target_loss"][target][-1] for seed, run in runs.items()}
    general_final = {seed: run["valid"]["lm_loss_uniform"][-1] for seed, run in runs.items()}
    goal = statistics.mean(run["valid"]["target_loss"][target][-1] for run in reference.values())
    iterations = next(iter(runs.values()))["valid"]["iteration"]
    mean_curve = mean_lists([run["valid"]["target_loss"][target] for run in runs.values()])
    names = list(next(iter(runs.values()))["train"]["weight"])
    weight_curves = {name: mean_lists([run["train"]["weight"][name] for run in runs.values()]) for name in names}
    last_third = len(next(iter(weight_curves.values()))) * 2 // 3
    final_weights = {name: statistics.mean(curve[last_third:]) for name, curve in weight_curves.items()}
    return {
        "seeds_ok": sorted(runs),
        "target_loss": {"mean_curve": mean_curve, "final": spread(list(target_final.values())),
                        "vs_uniform": spread(paired_differences(target_final, {s: r["valid"]["target_loss"][target][-1] for s, r in reference.items()})),
                        "vs_importance": spread(paired_differences(target_final, {s: r["valid"]["target_loss"][target][-1] for s, r in importance.items()}))},
        "steps_to_uniform_final": {"mean_curve": steps_to_reach(iterations, mean_curve, goal),
                                   "per_seed": [steps_to_reach(iterations, run["valid"]["target_loss"][target], goal) for run in runs.values()]},
        "general_loss": {"final": spread(list(general_final.values())),
                         "vs_uniform": spread(paired_differences(general_final, {s: r["valid"]["lm_loss_uniform"][-1] for s, r in reference.items()}))},
        "weights": {"iteration": next(iter(runs.values()))["train"]["iteration"], "mean_curve": weight_curves,
                    "last_third": final_weights, "effective_domains_last_third": effective_domains(list(final_weights.values()))},
        "median_step_ms": spread([run["median_step_ms"] for run in runs.values()]),
    }


def analyse(args: argparse.Namespace, runs: list, results: dict, curves: dict) -> dict[str, Any]:
    """Per target set and mixer: see the benchmark's docstring."""
    failed = sorted(name for name, result in results.items() if result.get("returncode") != 0)
    per_target: dict[str, Any] = {}
    for target in args.targets:
        reference = {seed: curves[name] for seed in args.seeds if (name := run_name(REFERENCE, target, seed)) in curves}
        if not reference:
            raise SystemExit(f"error: every {REFERENCE} run failed; nothing to compare against")
        importance = {seed: curves[name] for seed in args.seeds if (name := run_name("importance", target, seed)) in curves}
        entries = {mixer: _mixer_entry(args, target, mixer, curves, reference, importance) for mixer in args.mixers}
        own = entries[REFERENCE]["steps_to_uniform_final"]["mean_curve"]
        cost = entries.get(COST_REFERENCE, entries[REFERENCE])["median_step_ms"]["mean"]
        for entry in entries.values():
            if entry["seeds_ok"]:
                steps = entry["steps_to_uniform_final"]["mean_curve"]
                entry["steps_to_uniform_final"]["ratio"] = steps / own if steps is not None and own else None
                entry["step_time_ratio"] = entry["median_step_ms"]["mean"] / cost
        per_target[target] = {"iterations": next(iter(reference.values()))["valid"]["iteration"], "mixers": entries}
    return {"per_target": per_target, "failed_runs": failed, "cost_reference": COST_REFERENCE if COST_REFERENCE in args.mixers else REFERENCE}


# ------------------------------------------------------------------------------------------ the page


def _paired(value: dict) -> str:
    if not value["n"]:
        return ""
    error = standard_error(value)
    return f"{value['mean']:+.3f} ± {error:.3f}" if error != float("inf") else f"{value['mean']:+.3f}"


def _top_weights(weights: dict[str, float], count: int = 3) -> str:
    return ", ".join(f"{name} {weight:.2f}" for name, weight in sorted(weights.items(), key=lambda item: -item[1])[:count])


def _steps(entry: dict) -> str:
    steps, ratio = entry["steps_to_uniform_final"]["mean_curve"], entry["steps_to_uniform_final"].get("ratio")
    return "not reached" if steps is None else f"{steps:.0f} ({ratio:.2f}x)"


def markdown(args: argparse.Namespace, analysis: dict, run_wall: float, mode: str) -> str:
    lines = [
        f"# Target quality ({mode})", "",
        f"{args.layers}x{args.hidden} GPT, seq {args.seq_length}, global batch {args.global_batch}, {args.steps} steps, "
        f"seeds {args.seeds}, on the demo corpus; {clock(run_wall)} of runs on {args.threads} thread(s) each. "
        "Held-out target loss at the end (mean over seeds), paired by seed against uniform and importance "
        "(mean ± standard error; negative is better); steps to reach uniform's final target loss on the mean curve; "
        "the general validation loss (uniform mean over the domains) against uniform: what the specialisation costs; "
        "the mixture's largest weights over the last third; the per-step time against "
        f"{analysis['cost_reference']}.", "",
    ]
    for target, result in analysis["per_target"].items():
        lines += [f"## {target}", "",
                  "| mixer | target loss | vs uniform | vs importance | steps to uniform's final | general loss vs uniform | "
                  "largest weights, last third | effective domains | step time |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for mixer, entry in result["mixers"].items():
            if not entry["seeds_ok"]:
                lines.append(f"| {mixer} | every run failed | | | | | | | |")
                continue
            lines.append(
                f"| {mixer} | {entry['target_loss']['final']['mean']:.4f} | {_paired(entry['target_loss']['vs_uniform'])} | "
                f"{'' if mixer == 'importance' else _paired(entry['target_loss']['vs_importance'])} | {_steps(entry)} | {_paired(entry['general_loss']['vs_uniform'])} | "
                f"{_top_weights(entry['weights']['last_third'])} | {entry['weights']['effective_domains_last_third']:.1f} | "
                f"x{entry['step_time_ratio']:.3f} |"
            )
        lines.append("")
    if analysis["failed_runs"]:
        lines += [f"Failed runs: {', '.join(analysis['failed_runs'])}.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(args: argparse.Namespace, analysis: dict, path: str) -> None:
    """The held-out target loss over steps, one panel per target set, one line per mixer (mean over seeds)."""
    plt = _pyplot()
    targets = list(analysis["per_target"])
    figure, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4.5), squeeze=False)
    for axis, target in zip(axes[0], targets):
        result = analysis["per_target"][target]
        for mixer, entry in result["mixers"].items():
            if entry["seeds_ok"]:
                axis.plot(result["iterations"], entry["target_loss"]["mean_curve"], marker="o", markersize=3,
                          color=COLOURS.get(mixer), label=f"{mixer} (n={len(entry['seeds_ok'])})")
        axis.set_title(f"{target}: held-out target loss")
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"Target loss by mixer ({args.layers}x{args.hidden} GPT, {args.steps} steps, seeds {args.seeds})")
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    plt.close(figure)


def plot_weights(args: argparse.Namespace, analysis: dict, path: str) -> None:
    """Each target-reading mixer's weights over steps (mean over seeds), one row per target set."""
    plt = _pyplot()
    targets = list(analysis["per_target"])
    mixers = [mixer for mixer in args.mixers if mixer not in ("uniform", "static")]
    if not mixers:
        return
    figure, axes = plt.subplots(len(targets), len(mixers), figsize=(5 * len(mixers), 3.6 * len(targets)), squeeze=False)
    for row, target in enumerate(targets):
        for column, mixer in enumerate(mixers):
            axis, entry = axes[row][column], analysis["per_target"][target]["mixers"].get(mixer, {})
            if entry.get("seeds_ok"):
                weights = entry["weights"]
                axis.stackplot(weights["iteration"], *weights["mean_curve"].values(), labels=list(weights["mean_curve"]))
            axis.set_title(f"{target}: {mixer}")
            axis.set_ylim(0, 1)
            axis.set_xlabel("step")
            if row == 0 and column == len(mixers) - 1:
                axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.suptitle("Mixture weights over the run (mean over seeds)")
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
    plt.close(figure)
