"""Target quality, the report: the markdown page of `bench/results/target_quality.md`."""

from __future__ import annotations

import argparse

from mixing_quality_analysis import clock
from runs import SPLIT
from significance import LEVEL, interval_text, p_text
from target_quality_analysis import ABOVE, BELOW, OUTSIDE, REFERENCE


def _compared(comparison) -> str:
    """'+0.012 [-0.004, +0.028] (no detectable difference)', or '' with nothing to show."""
    if comparison is None or comparison["mean"] is None:
        return ""
    return f"{interval_text(comparison)}, p {p_text(comparison)} ({comparison['verdict']})"


def _top_weights(weights: dict[str, float], count: int = 3) -> str:
    return ", ".join(f"{name} {weight:.2f}" for name, weight in sorted(weights.items(), key=lambda item: -item[1])[:count])


def _steps(entry: dict) -> str:
    steps, ratio = entry["steps_to_uniform_last"]["mean_curve"], entry["steps_to_uniform_last"].get("ratio")
    return "not reached" if steps is None else f"{steps:.0f} ({ratio:.2f}x)"


def _table(result: dict) -> list[str]:
    lines = ["| mixer | target loss | vs uniform | vs importance | steps to uniform's last periodic | general loss vs uniform | "
             "largest weights, last third | effective domains | step time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in result["mixers"].items():
        if not entry["seeds_ok"]:
            lines.append(f"| {name} | every run failed | | | | | | | |")
            continue
        self_reference = name == REFERENCE
        lines.append(
            f"| {name} | {entry['target_loss']['final']['mean']:.4f} | {'' if self_reference else _compared(entry['target_loss']['vs_uniform'])} | "
            f"{_compared(entry['target_loss']['vs_importance'])} | {_steps(entry)} | "
            f"{'' if self_reference else _compared(entry['general_loss']['vs_uniform'])} | "
            f"{_top_weights(entry['weights']['last_third'])} | {entry['weights']['effective_domains_last_third']:.1f} | "
            f"x{entry['step_time_ratio']:.3f} |")
    return lines


def _tradeoff(result: dict) -> list[str]:
    """The points of each curve against uniform, where each lies against the other curves, and a summary."""
    tradeoff, entries = result["tradeoff"], result["mixers"]
    if len(tradeoff["curves"]) < 1:
        return []
    parameters = "; ".join(
        f"{curve}: " + ", ".join(f"`{point}` at {entries[point]['row']['parameter']:g}" for point in points[1:])
        for curve, points in tradeoff["curves"].items())
    lines = ["", f"Trade-off, each curve from uniform ({parameters}; DGA's parameter is its step size, the blend's the "
             f"share a of the importance weights). Final evaluation, against uniform at the same seed; the last column: the "
             f"point against the other curve at the same general loss, interpolated between that curve's two points around it:", "",
             "| curve | point | general loss vs uniform | target loss vs uniform | against the other curve |", "|---|---|---|---|---|"]
    for curve, points in tradeoff["curves"].items():
        for point in points[1:]:
            entry = entries[point]
            where = "; ".join(
                f"{other}: {found['position']}" + ("" if found["position"] == OUTSIDE else f", {interval_text(found['paired'], 4)}")
                for other, found in tradeoff["comparisons"][point].items())
            lines.append(f"| {curve} | {point} | {_compared(entry['general_loss']['vs_uniform'])} | "
                         f"{_compared(entry['target_loss']['vs_uniform'])} | {where or '-'} |")
    lines += ["", *_envelope(tradeoff)]
    return lines


def _envelope(tradeoff: dict) -> list[str]:
    """One sentence per pair of curves: at how many of its points one lies below, above or level with the other."""
    sentences = []
    for curve, points in tradeoff["curves"].items():
        for other in tradeoff["curves"]:
            if other == curve:
                continue
            positions = [tradeoff["comparisons"][point][other]["position"] for point in points[1:]]
            below, above, outside = (sum(position == wanted for position in positions) for wanted in (BELOW, ABOVE, OUTSIDE))
            sentences.append(f"- `{curve}` lies below `{other}` at {below}, above it at {above} and with no detectable "
                             f"difference at {len(positions) - below - above - outside} of its {len(positions)} points; "
                             f"{outside} lie beyond `{other}`'s range of general loss where dominance does not decide.")
    return sentences


def markdown(args: argparse.Namespace, analysis: dict, run_wall: float, mode: str) -> str:
    lines = [
        f"# Target quality ({mode})", "",
        f"{args.layers}x{args.hidden} GPT, seq {args.seq_length}, global batch {args.global_batch}, {args.steps} steps, "
        f"seeds {', '.join(map(str, args.seeds))}, on the demo corpus; {clock(run_wall)} of runs on {args.threads} thread(s) each. "
        f"Every figure is from each run's final evaluation: all of each target set's held-out examples, and for the general "
        f"loss (uniform mean over the domains: what the specialisation costs) {args.final_eval_iters} x {args.global_batch} "
        f"sequences, up to {max(1, args.final_eval_iters * args.global_batch // len(args.evaluated))} per domain of "
        f"{args.seq_length} tokens, of the documents `--split {SPLIT}` holds out for validation. Differences are paired by seed: mean with its {LEVEL:.0%} t interval, "
        f"the paired t-test's p and the verdict (better or worse only where the interval excludes zero; negative is "
        f"better). The steps to reach uniform's target loss at its last periodic evaluation are read on the mean periodic "
        f"curve; the mixture's largest weights are over the last third; the per-step time is against "
        f"{analysis['cost_reference']}.", "",
    ]
    for target, result in analysis["per_target"].items():
        uniform = result["mixers"][REFERENCE]
        lines += [f"## {target}", "",
                  f"Sampling error of one run's final figures (standard error over the evaluated sequences, median over "
                  f"uniform's runs): target loss {_error(uniform['target_loss']['se_median'])}, general loss "
                  f"{_error(uniform['general_loss']['se_median'])}.", "",
                  *_table(result), *_tradeoff(result), ""]
    if analysis["failed_runs"]:
        lines += [f"Failed runs: {', '.join(analysis['failed_runs'])}.", ""]
    return "\n".join(lines)


def _error(value) -> str:
    return "not recorded" if value is None else f"{value:.4f}"
