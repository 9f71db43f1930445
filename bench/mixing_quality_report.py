"""Mixing quality, the report: the markdown page of `bench/results/mixing_quality.md` (`_noisy.md` for the noisy corpus)."""

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
    excluded,
    log_interval,
    noise_first,
    parameter_count,
    share_at,
)
from runs import SPLIT
from significance import BETTER, LEVEL, interval_text, p_text, seeds_lower
from transfers import REPLAY_PHASES, TRANSFERS, transfers_of

DESCRIPTIONS = {"uniform": "a static blend", "static": "tokens-proportional, the blend a user would pick"}
OBJECTIVE_MARK = "†"  # after the name of a mixer that was given --mixing-objective


def _mean_std(spread: dict, spec: str = ".4f") -> str:
    if not spread or spread.get("mean") is None:
        return "-"
    return f"{spread['mean']:{spec}} ± {spread['std']:{spec.lstrip('+')}}" if spread["n"] > 1 else format(spread["mean"], spec)


def _name(analysis: dict, mixer: str) -> str:
    """The mixer as the tables show it: marked when it was given the objective."""
    return f"{mixer}{OBJECTIVE_MARK}" if analysis["summary"][mixer].get("reads_objective") else mixer


def _steps_cell(against: dict) -> str:
    steps = against["steps_to_target_mean_curve"]
    per_seed = ", ".join("n/r" if value is None else f"{value:.0f}" for value in against["steps_to_target_per_seed"])
    head = "not reached" if steps is None else f"{steps:.0f}"
    return f"{head} | {'-' if against.get('ratio') is None else format(against['ratio'], '.2f')} | {per_seed}"


def _delta(args: argparse.Namespace, reference: str) -> str:
    """The heading of a column of differences to `reference` (plain Δ when there is one reference)."""
    return "Δ" if len(args.references) == 1 else f"Δ {reference}"


def _verdict_clause(entry: dict, reference: str) -> str:
    """'beats/does NOT beat <reference>.' and, per mean, the paired verdict and the steps to reach the reference."""
    parts, words = [], []
    for metric in METRICS:
        paired = entry[metric]["against"][reference]["paired"]
        words.append(paired["verdict"])
        ratio = entry[metric]["against"][reference]["ratio"]
        reach = (f"does not reach {reference}'s last periodic loss" if ratio is None
                 else f"reaches {reference}'s last periodic loss in {ratio:.2f}x its steps")
        parts.append(f"{METRIC_TITLES[metric]}: **{paired['verdict']}**, final loss {interval_text(paired)} against "
                     f"{reference} (p {p_text(paired)}, lower on {seeds_lower(paired)} of {paired['n']} seeds); "
                     f"on the seed-mean curve it {reach}")
    if all(word == BETTER for word in words):
        head = f"beats {reference} on both means."
    elif BETTER in words:
        head = f"beats {reference} on one mean only."
    else:
        head = f"does NOT beat {reference}."
    return f"{head} " + "; ".join(parts)


def _objective_line(args: argparse.Namespace, analysis: dict) -> str:
    """Which mixers were given the objective, and that the others optimise what they always do."""
    readers = [mixer for mixer in args.mixers if analysis["summary"].get(mixer, {}).get("reads_objective")]
    others = [mixer for mixer in args.mixers if mixer not in readers]
    if not args.mixing_objective:
        return "No run was given `--mixing-objective`."
    if not readers:
        return "None of these mixers reads `--mixing-objective`; no run was given one."
    return (f"The mixers that read `--mixing-objective` ({', '.join(f'`{mixer}`' for mixer in readers)}, marked "
            f"{OBJECTIVE_MARK}) were given `--mixing-objective {','.join(args.mixing_objective)}`; the others "
            f"({', '.join(f'`{mixer}`' for mixer in others)}) read no objective and were given none: each does what "
            f"it does on any corpus, the noise domain included.")


def _corpus_lines(args: argparse.Namespace, analysis: dict) -> list[str]:
    """What the means leave out (the noise) and which mixers were told to optimise what; nothing without noise."""
    left_out = excluded(analysis)
    if not left_out:
        return []
    tokens = analysis["corpus_tokens"]
    total = sum(tokens.values())
    sizes = ", ".join(f"`{name}` ({tokens[name]:,} tokens, {tokens[name] / total:.1%} of the corpus)" for name in left_out)
    return [
        "",
        f"Noise: {sizes} holds uniformly random token ids, nothing a model can learn. Every mean, every "
        f"steps-to-reach and every ratio below is over the {len(analysis['evaluated'])} real domains only "
        f"(the token-weighted mean weighs them by their own corpus tokens); the noise's own loss is shown "
        f"in the per-domain table. {_objective_line(args, analysis)}",
    ]


def final_evaluation_line(args: argparse.Namespace, final: dict) -> str:
    """What the final losses are measured on, and how precise one run's figure is."""
    errors = [f"{final[f'{metric}_se_median']:.4f} ({METRIC_TITLES[metric]})" for metric in METRICS if final[f"{metric}_se_median"] is not None]
    return (f"Final losses come from each run's final checkpoint evaluated once on {final['eval_iters']} x {args.global_batch} "
            f"held-out sequences: up to {final['sequences_per_domain']} per domain ({final['tokens_per_domain']:,} tokens; "
            f"a domain with fewer held-out sequences gives all it has), from the documents `--split {SPLIT}` holds out "
            f"for validation, the same sequences for every mixer at a seed. The sampling error of one run's final "
            f"mean over those sequences (standard error, median over runs): {', '.join(errors) or 'not recorded'}.")


def _heading(analysis: dict, name: str) -> str:
    return f"{name} (in no mean)" if name in excluded(analysis) else name


def _at_a_time(args: argparse.Namespace) -> str:
    jobs = getattr(args, "jobs", 1)  # benchmarks that run several at once say so
    return "one run at a time" if jobs == 1 else f"{jobs} runs at a time on the shared cores"


def _header(args: argparse.Namespace, analysis: dict, wall_s: float, mode: str) -> list[str]:
    names, summary = analysis["names"], analysis["summary"]
    tokens = args.steps * args.global_batch * args.seq_length
    references = " ".join(
        f"Reference: `{reference}` ({DESCRIPTIONS[reference]}). Its final loss, mean over seeds: "
        f"{summary[reference]['lm_loss_uniform']['final']['mean']:.4f} (uniform mean over domains), "
        f"{summary[reference]['lm_loss']['final']['mean']:.4f} (corpus-token-weighted mean)."
        for reference in args.references
    )
    return [
        f"# Mixing quality ({mode} run): online mixers against static blends",
        "",
        f"Corpus `{os.path.relpath(args.data_path, REPO)}` ({len(names)} domains: {', '.join(names)}). "
        f"Target GPT {args.layers} layers x {args.hidden} hidden ({parameter_count(args.layers, args.hidden, args) / 1e6:.2f}M parameters), "
        f"seq {args.seq_length}, global batch {args.global_batch}, {args.steps} steps ({tokens / 1e6:.2f}M tokens), "
        f"AdamW lr {args.lr:g} -> {args.min_lr:g} cosine, warm-up {max(1, args.steps // 10)}, no dropout; "
        f"seeds {', '.join(map(str, args.seeds))} (each seed: model init, data order, held-out samples); "
        f"periodic validation every {eval_interval(args)} steps on {args.eval_iters} x {args.global_batch} held-out sequences "
        f"split evenly over the domains (the curves and the steps to reach a loss). CPU, {args.threads} thread(s) per run, "
        f"{_at_a_time(args)}; total wall time {clock(wall_s)}.",
        "",
        final_evaluation_line(args, analysis["final_evaluation"]),
        *_corpus_lines(args, analysis),
        "",
        references,
    ]


def _proxy_label(proxy: dict) -> str:
    return f"proxy {proxy['layers']}x{proxy['hidden']} ({proxy['mixer']})"


def _proxy_cost(analysis: dict, mixer: str) -> str:
    """What a transfer pays before its target run: its proxy's steps, in target-step times."""
    proxy = analysis["proxies"].get(TRANSFERS[mixer].proxy) if mixer in TRANSFERS else None
    if not proxy:
        return "-"
    return f"{proxy['steps']} on {_proxy_label(proxy)} (~{proxy['target_step_equivalents']:.0f} target-step times)"


def _steps_section(args: argparse.Namespace, analysis: dict, mixers: list[str], reference: str) -> list[str]:
    summary = analysis["summary"]
    lines = [
        "",
        f"## Steps to reach {reference}'s last periodic validation loss",
        "",
        f"Steps on the seed-mean periodic validation curve (linear between evaluations) to {reference}'s loss at its last "
        f"periodic evaluation (mean over seeds), ratio to {reference}'s, and the steps of each seed's own curve (n/r: not "
        f"reached by the last step). {reference.capitalize()} reaches its own mean at its last step by construction; its "
        f"per-seed values show the seed noise.",
        "",
        "| mixer | uniform mean: steps | ratio | per seed | token-weighted: steps | ratio | per seed | extra proxy steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mixer in mixers:
        entry = summary[mixer]
        lines.append(f"| {_name(analysis, mixer)} | {_steps_cell(entry['lm_loss_uniform']['against'][reference])} | "
                     f"{_steps_cell(entry['lm_loss']['against'][reference])} | {_proxy_cost(analysis, mixer)} |")
    return lines


def _final_section(args: argparse.Namespace, analysis: dict, mixers: list[str]) -> list[str]:
    summary, columns = analysis["summary"], noise_first(analysis)
    heading = " | ".join(f"{_delta(args, reference)} [{LEVEL:.0%} interval] | p | verdict" for reference in args.references)
    lines = [
        "",
        "## Final loss",
        "",
        f"Mean ± std over seeds of the final evaluation; {', '.join(_delta(args, reference) for reference in args.references)}: "
        f"the difference to {', to '.join(args.references)} at the same seed, mean over seeds with its {LEVEL:.0%} t interval, "
        f"and the paired t-test's two-sided p (negative is better). A mixer is better or worse only where the interval "
        f"excludes zero.",
    ]
    for metric in METRICS:
        lines += ["", f"{METRIC_TITLES[metric].capitalize()}:", "",
                  f"| mixer | final loss | {heading} |", "|---|---|" + "---|---|---|" * len(args.references)]
        for mixer in mixers:
            entry = summary[mixer]
            cells = [_mean_std(entry[metric]["final"])]
            for reference in args.references:
                paired = entry[metric]["against"][reference]["paired"]
                cells += ["", "", ""] if reference == mixer else [interval_text(paired), p_text(paired), paired["verdict"]]
            lines.append(f"| {_name(analysis, mixer)} | " + " | ".join(cells) + " |")
    lines += ["", "Per domain (final evaluation, mean ± std over seeds; the last row: one run's standard error, median over runs):", "",
              "| mixer | " + " | ".join(_heading(analysis, name) for name in columns) + " |", "|---|" + "---|" * len(columns)]
    for mixer in mixers:
        lines.append(f"| {_name(analysis, mixer)} | " + " | ".join(_mean_std(summary[mixer]["final_domain_loss"][name], ".3f") for name in columns) + " |")
    errors = analysis["final_evaluation"]["domain_loss_se_median"]
    lines.append("| standard error | " + " | ".join("-" if errors[name] is None else f"{errors[name]:.3f}" for name in columns) + " |")
    return lines


def _mixture_rows(analysis: dict, mixers: list[str]) -> list[tuple[str, dict]]:
    """(label, mixture) of every mixer, then of each proxy run."""
    rows = [(_name(analysis, mixer), analysis["summary"][mixer]["mixture"]) for mixer in mixers]
    return rows + [(_proxy_label(proxy), proxy["mixture"]) for proxy in analysis["proxies"].values()]


def _mixture_section(args: argparse.Namespace, analysis: dict, mixers: list[str]) -> list[str]:
    names, columns = analysis["names"], noise_first(analysis)
    lines = [
        "",
        "## Realised mixture (share of training samples, mean over seeds)",
        "",
        "Per third of the run, then the last log interval; eff. domains: exp of the mixture's entropy "
        f"({len(names)} for a uniform mixture, 1 for a single domain).",
        "",
        "| mixer | steps | " + " | ".join(_heading(analysis, name) for name in columns) + " | eff. domains |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    bounds = [0, args.steps // 3, 2 * args.steps // 3, args.steps]
    for label, mixture in _mixture_rows(analysis, mixers):
        iterations = mixture["iteration"]
        for low, high in zip(bounds, bounds[1:]):
            picked = [i for i, iteration in enumerate(iterations) if low < iteration <= high]
            if not picked:
                continue
            shares = [statistics.mean(mixture["share_mean"][name][i] for i in picked) for name in columns]
            lines.append(f"| {label} | {low + 1}-{high} | " + " | ".join(f"{share:.3f}" for share in shares)
                         + f" | {effective_domains(shares):.1f} |")
        shares = [mixture["share_mean"][name][-1] for name in columns]
        lines.append(f"| {label} | last {log_interval(args)} | " + " | ".join(f"{share:.3f}" for share in shares)
                     + f" | {effective_domains(shares):.1f} |")
    # Has the mixer learnt to avoid the noise early? Half a uniform share is the mark.
    for name in excluded(analysis):
        lines.append("")
        lines += [f"- `{label}`: {name} share by the end of the first third (the log interval ending by step "
                  f"{bounds[1]}): {share_at(mixture, name, bounds[1]):.3f} (0.5/K = {0.5 / len(names):.3f})"
                  for label, mixture in _mixture_rows(analysis, mixers)]
    return lines


def _cost_section(analysis: dict, mixers: list[str]) -> list[str]:
    summary = analysis["summary"]
    lines = [
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
        lines.append(f"| {_name(analysis, mixer)} | {_mean_std(entry['median_step_ms'], '.0f')} | {entry['step_time_ratio']:.2f} | "
                     f"{_mean_std(entry['peak_rss_mib'], '.0f')} | {entry['peak_rss_ratio']:.2f} | {_mean_std(entry['wall_s'], '.0f')} |")
    for proxy in analysis["proxies"].values():
        reference = summary[REFERENCE]
        lines.append(f"| {_proxy_label(proxy)}, once per seed | {_mean_std(proxy['median_step_ms'], '.0f')} | "
                     f"{proxy['median_step_ms']['mean'] / reference['median_step_ms']['mean']:.2f} | {_mean_std(proxy['peak_rss_mib'], '.0f')} | "
                     f"{proxy['peak_rss_mib']['mean'] / reference['peak_rss_mib']['mean']:.2f} | {_mean_std(proxy['wall_s'], '.0f')} |")
    return lines


def _verdict_section(args: argparse.Namespace, analysis: dict, mixers: list[str]) -> list[str]:
    names, summary = analysis["names"], analysis["summary"]
    lines = ["", "## Verdict", ""]
    for mixer in mixers:
        clauses = [_verdict_clause(summary[mixer], reference) for reference in args.references if reference != mixer]
        if not clauses:
            continue
        mixture = summary[mixer]["mixture"]
        last = {name: statistics.mean(mixture["share_mean"][name][-(len(mixture["iteration"]) // 3 or 1):]) for name in names}
        top = sorted(last, key=last.get, reverse=True)[:2]
        clauses[-1] += (f"; its last third of the run drew {', '.join(f'{name} {last[name]:.2f}' for name in top)} of the samples "
                        f"({effective_domains(list(last.values())):.1f} effective domains of {len(names)})")
        lines.append(f"- `{_name(analysis, mixer)}` " + ". It ".join(clauses) + ".")
    for label, proxy in analysis["proxies"].items():
        users = [f"`{mixer}`" for mixer in transfers_of(label, mixers)]
        if users:
            lines.append(f"- The cost of {', '.join(users)} includes the {_proxy_label(proxy)} run: {proxy['steps']} steps "
                         f"of {proxy['parameters'] / 1e6:.2f}M parameters per seed, about {proxy['target_step_equivalents']:.0f} "
                         f"target steps of wall time.")
    lines += [
        f"- Verdicts compare the final losses paired by seed: 'better' or 'worse' only where the {LEVEL:.0%} t interval of "
        f"the mean difference over the {len(args.seeds)} seeds excludes zero; 'no detectable difference' says this many "
        f"seeds cannot tell, not that there is none. The interval holds the seed-to-seed variation of the difference, "
        f"the final evaluation's sampling of held-out sequences included (the same sequences for both at a seed). At this scale "
        f"({args.steps} steps on a {parameter_count(args.layers, args.hidden, args) / 1e6:.1f}M model) this is "
        f"not the paper's setting (Pythia-1B): a negative result here says what these mixers do on this corpus and budget.",
    ]
    if args.target_data_path:
        lines.append(f"- `--target-data-path {args.target_data_path}` is recorded; no mixer here reads a target set.")
    else:
        lines.append("- No target set was given (`--target-data-path`); none of these mixers reads one.")
    failed = [name for name, run in analysis["runs"].items() if run.get("failed")]
    if failed:
        lines.append(f"- Failed runs, left out: {', '.join(failed)}.")
    return lines


def _transfer_section(analysis: dict) -> list[str]:
    """Each transfer of a proxy's mixture against its family's learned policy on the target, paired by seed."""
    families = analysis["transfers"]
    if not families:
        return []
    heading = " | ".join(f"{METRIC_TITLES[metric]}: Δ [{LEVEL:.0%} interval] | p | verdict" for metric in METRICS)
    lines = [
        "",
        "## A learned policy, or the mixture it followed?",
        "",
        f"Each transfer's final loss minus its family's learned policy on the target, paired by seed (negative: the "
        f"transfer is better). Replay: the proxy run's mixture (its logged weights) as a schedule of {REPLAY_PHASES} "
        f"phases, each the mean over its steps; mean: its mean mixture as a static blend. AC-ODM's reference is its "
        f"proxy's frozen actor driving the target (`acodm_proxy`); ADO has no policy to freeze, so its reference is "
        f"ADO itself run online on the target (`ado`). Each transfer's cost beside uniform: the steps table above.",
        "",
        f"| transfer | against | {heading} |",
        "|---|---|" + "---|---|---|" * len(METRICS),
    ]
    for family in families.values():
        for mixer, per_metric in family["against"].items():
            cells = [f"{interval_text(per_metric[metric])} | {p_text(per_metric[metric])} | {per_metric[metric]['verdict']}"
                     for metric in METRICS]
            lines.append(f"| {_name(analysis, mixer)} | {family['reference']} | " + " | ".join(cells) + " |")
    return lines


def markdown(args: argparse.Namespace, analysis: dict, wall_s: float, mode: str) -> str:
    mixers = [mixer for mixer in args.mixers if analysis["summary"].get(mixer, {}).get("seeds_ok")]
    lines = _header(args, analysis, wall_s, mode)
    for reference in args.references:
        lines += _steps_section(args, analysis, mixers, reference)
    lines += _final_section(args, analysis, mixers)
    lines += _mixture_section(args, analysis, mixers)
    lines += _transfer_section(analysis)
    lines += _cost_section(analysis, mixers)
    lines += _verdict_section(args, analysis, mixers)
    return "\n".join(lines) + "\n"
