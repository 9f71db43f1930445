"""Target quality, the figures: the held-out target loss over steps, the mixtures over the run, and the
trade-off between target loss and general loss."""

from __future__ import annotations

import argparse

from common import save_figure
from target_quality_analysis import REFERENCE

COLOURS = {"uniform": "black", "static": "tab:gray", "importance": "tab:blue", "blend": "tab:blue", "dga": "tab:green",
           "acodm_target": "tab:red"}
CURVE_COLOURS = {"dga": "tab:green", "importance blend": "tab:blue"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(entry: dict) -> dict:
    """A row's colour by its mixer; the variants of a mixer (other step sizes, blends) dashed."""
    row = entry["row"]
    variant = bool(row["options"]) or row["mixer"] == "blend"
    return {"color": COLOURS.get(row["mixer"]), "linestyle": "--" if variant else "-"}


def plot_curves(args: argparse.Namespace, analysis: dict, path: str) -> None:
    """The held-out target loss over steps (periodic evaluations), one panel per target set, one line per row (mean over seeds)."""
    plt = _pyplot()
    targets = list(analysis["per_target"])
    figure, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4.5), squeeze=False)
    for axis, target in zip(axes[0], targets):
        result = analysis["per_target"][target]
        for name, entry in result["mixers"].items():
            if entry["seeds_ok"]:
                axis.plot(result["iterations"], entry["target_loss"]["mean_curve"], marker="o", markersize=3,
                          label=f"{name} (n={len(entry['seeds_ok'])})", **_style(entry))
        axis.set_title(f"{target}: held-out target loss")
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"Target loss by mixer ({args.layers}x{args.hidden} GPT, {args.steps} steps, seeds {args.seeds})")
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    plt.close(figure)


def plot_weights(args: argparse.Namespace, analysis: dict, path: str) -> None:
    """Each target-reading row's weights over steps (mean over seeds), one row of panels per target set."""
    plt = _pyplot()
    targets = list(analysis["per_target"])
    names = [name for name, entry in next(iter(analysis["per_target"].values()))["mixers"].items() if not entry["row"]["shared"]]
    if not names:
        return
    figure, axes = plt.subplots(len(targets), len(names), figsize=(4.5 * len(names), 3.4 * len(targets)), squeeze=False)
    for row, target in enumerate(targets):
        for column, name in enumerate(names):
            axis, entry = axes[row][column], analysis["per_target"][target]["mixers"][name]
            if entry.get("seeds_ok"):
                weights = entry["weights"]
                axis.stackplot(weights["iteration"], *weights["mean_curve"].values(), labels=list(weights["mean_curve"]))
            axis.set_title(f"{target}: {name}", fontsize=9)
            axis.set_ylim(0, 1)
            axis.set_xlabel("step")
            if row == 0 and column == len(names) - 1:
                axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.suptitle("Mixture weights over the run (mean over seeds)")
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
    plt.close(figure)


def plot_tradeoff(args: argparse.Namespace, analysis: dict, path: str) -> None:
    """Per target set: each row's final target loss against its general loss, both as differences to
    uniform at the same seed (mean and 95% interval), the curves drawn from uniform at the origin."""
    plt = _pyplot()
    targets = list(analysis["per_target"])
    figure, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4.8), squeeze=False)
    for axis, target in zip(axes[0], targets):
        result = analysis["per_target"][target]
        entries = result["mixers"]

        def point(name: str) -> tuple[float, float, list, list]:
            if name == REFERENCE:
                return 0.0, 0.0, [[0], [0]], [[0], [0]]
            general, target_loss = entries[name]["general_loss"]["vs_uniform"], entries[name]["target_loss"]["vs_uniform"]
            spans = lambda c: [[c["mean"] - c["low"]], [c["high"] - c["mean"]]] if c["low"] is not None else [[0], [0]]
            return general["mean"], target_loss["mean"], spans(general), spans(target_loss)

        drawn = set()
        for curve, names in result["tradeoff"]["curves"].items():
            colour = CURVE_COLOURS.get(curve)
            xs, ys = zip(*[point(name)[:2] for name in names])
            axis.plot(xs, ys, color=colour, marker="o", label=curve)
            for name in names[1:]:
                x, y, x_error, y_error = point(name)
                axis.errorbar([x], [y], xerr=x_error, yerr=y_error, color=colour, capsize=3, linewidth=0.8)
                axis.annotate(f"{entries[name]['row']['parameter']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            drawn.update(names)
        for name, entry in entries.items():
            if name in drawn or not entry["seeds_ok"] or name == REFERENCE:
                continue
            x, y, x_error, y_error = point(name)
            axis.errorbar([x], [y], xerr=x_error, yerr=y_error, fmt="s", color=COLOURS.get(entry["row"]["mixer"]), capsize=3, label=name)
        axis.scatter([0], [0], color="black", zorder=5, label="uniform")
        axis.axhline(0, color="black", linewidth=0.5)
        axis.axvline(0, color="black", linewidth=0.5)
        axis.set_title(f"{target}: specialisation against its cost", fontsize=10)
        axis.set_xlabel("general loss - uniform's (uniform mean over domains)")
        axis.set_ylabel("held-out target loss - uniform's")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"Target loss against general loss at the end\npaired by seed ({len(args.seeds)} seeds, 95% intervals)", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    plt.close(figure)
