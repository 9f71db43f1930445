"""Mixing quality, the report: the markdown page of `bench/results/mixing_quality.md`."""

from __future__ import annotations

import argparse
import os
import statistics

from common import REPO
from mixing_quality_analysis import (
    METRIC_TITLES,
    METRICS,
    REFERENCE,
    clock,
    effective_domains,
    eval_interval,
    log_interval,
    parameter_count,
    standard_error,
)


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
    error = standard_error(paired)
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
        f"total wall time {clock(wall_s)}.",
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

