"""Mixing quality, the figures: validation curves by mixer, and each mixer's realised mixture over the run."""

from __future__ import annotations

import argparse
import math

from common import save_figure
from mixing_quality_analysis import METRIC_TITLES, METRICS, excluded, log_interval, noise_first

COLOURS = {"static": "tab:gray", "uniform": "black", "temperature": "tab:blue", "odm": "tab:orange",
           "ado": "tab:green", "aioli": "tab:brown", "acodm": "tab:red", "acodm_bounded": "darkred",
           "acodm_proxy": "tab:purple", "acodm_proxy_replay": "tab:pink", "acodm_proxy_mean": "tab:olive",
           "ado_proxy_replay": "tab:cyan", "ado_proxy_mean": "darkgreen"}


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
                mark = "†" if entry.get("reads_objective") else ""  # given --mixing-objective, as in the report
                axis.plot(iterations, mean, marker="o", markersize=3, label=f"{mixer}{mark} (n={len(curves)})", color=colour)
                axis.fill_between(iterations, lower, upper, alpha=0.15, color=colour)
                start = len(iterations) * 2 // 5
                low_values += lower[start:] + upper[start:]
            for reference in args.references:
                axis.axhline(analysis["targets"][reference][metric], color=COLOURS[reference], linestyle=":", linewidth=1,
                             label=f"{reference}'s last periodic loss")
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
    left_out = f"; means over the real domains, {', '.join(excluded(analysis))} left out" if excluded(analysis) else ""
    figure.suptitle(f"Validation loss by mixer ({mode}: {args.layers}x{args.hidden} GPT, {args.steps} steps, "
                    f"seeds {args.seeds}{left_out})")
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    plt.close(figure)


def plot_weights(args: argparse.Namespace, analysis: dict, path: str, mode: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = analysis["summary"]
    # the noise at the bottom of the stack, in black (tab10 has a grey): its share reads off the axis
    names = noise_first(analysis)
    panels = [(mixer, summary[mixer]["mixture"]) for mixer in args.mixers if summary.get(mixer, {}).get("seeds_ok")]
    panels += [(f"proxy {proxy['layers']}x{proxy['hidden']} ({proxy['mixer']})", proxy["mixture"]) for proxy in analysis["proxies"].values()]
    columns = 3
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    colours = ["black"] * len(excluded(analysis)) + list(plt.get_cmap("tab10").colors)
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
    save_figure(figure, path, dpi=110)
    plt.close(figure)

