"""Mixing quality, the analysis: from the runs' curves to the figures every report reads.

Validation curves and the steps to reach each reference's last periodic validation loss; the final
losses, from each run's final evaluation (many more held-out samples than the periodic ones), with
their spread over seeds, their sampling error and their differences to each reference paired by seed
(`significance`: t interval and p-value); the realised mixture, step time and peak memory. The
validation means are over the real domains (`args.evaluated`): a noise domain is shown per domain
but enters no mean. Used by `mixing_quality.py`, `mixing_quality_report.py` and
`mixing_quality_plots.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from typing import Any, Optional, Sequence

from significance import compare
from transfers import FAMILY_REFERENCE, PROXIES, transfers_of

REFERENCE = "uniform"  # a static blend: the reference of time and memory, and the first of the losses'
# The references of the losses, per corpus: with noise also `static`, the tokens-proportional blend a
# user would pick, which gives the noise its share of the tokens.
REFERENCES = {"demo": (REFERENCE,), "noisy": (REFERENCE, "static")}
METRICS = ("lm_loss_uniform", "lm_loss")
METRIC_TITLES = {"lm_loss_uniform": "uniform mean over domains", "lm_loss": "corpus-token-weighted mean"}
# What of a document holding `analyse`'s result is a value per evaluation or log record: the results'
# side file holds it (`result_files.save_results`), the summary JSON the rest.
CURVES = ("iterations", "runs/*/valid", "runs/*/train", *(f"summary/*/{metric}/mean_curve" for metric in METRICS),
          "summary/*/mixture", "proxies/*/mixture")


def eval_interval(args: argparse.Namespace) -> int:
    return max(1, args.steps // args.evaluations)


def log_interval(args: argparse.Namespace) -> int:
    return max(1, args.steps // args.log_points)


def clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# ------------------------------------------------------------------------------------------ statistics


def steps_to_reach(iterations: Sequence[int], losses: Sequence[Optional[float]], target: float) -> Optional[float]:
    """The first step where the validation curve reaches `target`, linear between evaluations; None if never.

    An evaluation already at or below the target at the first point counts as that point's step
    (no evaluation at step 0 to interpolate from)."""
    previous = None
    for iteration, loss in zip(iterations, losses):
        if loss is None:
            continue
        if loss <= target:
            if previous is None:
                return float(iteration)
            previous_iteration, previous_loss = previous
            return previous_iteration + (previous_loss - target) / (previous_loss - loss) * (iteration - previous_iteration)
        previous = (iteration, loss)
    return None


def spread(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample standard deviation, min and max of the values that are not None."""
    values = [float(value) for value in values if value is not None]
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": len(values), "mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def mean_lists(lists: Sequence[Sequence[Optional[float]]]) -> list[Optional[float]]:
    """The mean curve of equally long curves; None where any of them has no value."""
    out = []
    for column in zip(*lists):
        present = [value for value in column if value is not None]
        out.append(statistics.mean(present) if len(present) == len(column) else None)
    return out


def effective_domains(shares: Sequence[float]) -> float:
    """exp(entropy) of a mixture: K for uniform over K domains, 1 for a single one."""
    total = sum(shares)
    return math.exp(-sum(share / total * math.log(share / total) for share in shares if share > 0))


# ------------------------------------------------------------------------------------------ analysis


def final_values(runs: list[dict], metric: str) -> dict[int, float]:
    """Each run's final-evaluation value of `metric` (a mean over the real domains), by seed."""
    return {run["seed"]: run["final"][metric] for run in runs}


def _against(mixer_runs: list[dict], mean_curve: list, iterations: list[int], metric: str, target: float,
             reference_runs: list[dict]) -> dict[str, Any]:
    """One mixer's `metric` against one reference: the steps its curves need to reach the reference's
    last periodic validation loss `target`, and its final evaluation's difference to the reference's,
    paired by seed."""
    per_seed = [steps_to_reach(run["valid"]["iteration"], run["valid"][metric], target) for run in mixer_runs]
    return {
        "target": target,
        "steps_to_target_mean_curve": steps_to_reach(iterations, mean_curve, target),
        "steps_to_target_per_seed": per_seed,
        "steps_to_target_spread": spread([steps for steps in per_seed if steps is not None]),
        "reached_seeds": sum(steps is not None for steps in per_seed),
        "paired": compare(final_values(mixer_runs, metric), final_values(reference_runs, metric)),
    }


def final_evaluation(args: argparse.Namespace, runs: list[dict], names: list[str]) -> dict[str, Any]:
    """What the final evaluation read and how precise one run's figures are: sequences per domain (at
    most; a domain with fewer held-out sequences gives all it has), and the median over runs of each
    mean's and each domain's standard error (`loss_se`, over the evaluation's sequences)."""
    per_domain = max(1, args.final_eval_iters * args.global_batch // len(names))
    median = lambda values: statistics.median(values) if values and None not in values else None
    return {
        "eval_iters": args.final_eval_iters, "sequences_per_domain": per_domain,
        "tokens_per_domain": per_domain * args.seq_length,
        **{f"{metric}_se_median": median([run["final"][f"{metric}_se"] for run in runs]) for metric in METRICS},
        "domain_loss_se_median": {name: median([run["final"]["domain_loss_se"][name] for run in runs]) for name in names},
    }


def analyse(args: argparse.Namespace, results: dict[str, dict], curves: dict[str, dict], names: list[str]) -> dict[str, Any]:
    """Every run's result and curves (`curves` holds the finished runs'), each mixer's summary against
    every reference (`args.references`), each proxy's (`proxy_summary`) and each transfer against
    its family's learned policy (`transfer_comparisons`), from the runs' `results` and `curves` by run name."""
    per_run = {name: {**result, **curves[name]} if name in curves else {**result, "failed": True}
               for name, result in results.items()}
    mixers = [mixer for mixer in args.mixers]
    ok = lambda mixer: [per_run[f"{mixer}-seed{seed}"] for seed in args.seeds if not per_run[f"{mixer}-seed{seed}"].get("failed")]
    reference_runs = {reference: ok(reference) for reference in args.references}
    for reference, runs in reference_runs.items():
        if not runs:
            raise SystemExit(f"error: every {reference} run failed; nothing to compare against")
    iterations = reference_runs[REFERENCE][0]["valid"]["iteration"]
    # what the steps are counted to: the reference's last periodic validation loss, mean over seeds
    targets = {reference: {metric: statistics.mean(run["valid"][metric][-1] for run in runs) for metric in METRICS}
               for reference, runs in reference_runs.items()}

    summary: dict[str, Any] = {}
    for mixer in mixers:
        mixer_runs = ok(mixer)
        entry: dict[str, Any] = {"seeds_ok": [run["seed"] for run in mixer_runs],
                                 "seeds_failed": [seed for seed in args.seeds if per_run[f"{mixer}-seed{seed}"].get("failed")],
                                 "reads_objective": any("--mixing-objective" in run["command"] for run in mixer_runs)}
        if not mixer_runs:
            summary[mixer] = entry
            continue
        for metric in METRICS:
            mean_curve = mean_lists([run["valid"][metric] for run in mixer_runs])
            entry[metric] = {
                "mean_curve": mean_curve,
                "final": spread([run["final"][metric] for run in mixer_runs]),
                "final_per_seed": final_values(mixer_runs, metric),
                "against": {reference: _against(mixer_runs, mean_curve, iterations, metric, targets[reference][metric], runs)
                            for reference, runs in reference_runs.items()},
            }
        entry["final_domain_loss"] = {name: spread([run["final"]["domain_loss"][name] for run in mixer_runs]) for name in names}
        entry["mixture"] = {
            "iteration": mixer_runs[0]["train"]["iteration"],
            "share_mean": {name: mean_lists([run["train"]["share"][name] for run in mixer_runs]) for name in names},
            "weight_mean": {name: mean_lists([run["train"]["weight"][name] for run in mixer_runs]) for name in names},
        }
        entry["median_step_ms"] = spread([run["median_step_ms"] for run in mixer_runs])
        entry["peak_rss_mib"] = spread([run["peak_rss_mib"] for run in mixer_runs])
        entry["wall_s"] = spread([run["wall_s"] for run in mixer_runs])
        summary[mixer] = entry

    reference = summary[REFERENCE]
    for mixer, entry in summary.items():
        if not entry.get("seeds_ok"):
            continue
        for metric in METRICS:
            for name, against in entry[metric]["against"].items():  # the ratio to the reference's own steps
                own = against["steps_to_target_mean_curve"]
                base = summary[name][metric]["against"][name]["steps_to_target_mean_curve"]
                against["ratio"] = own / base if own is not None and base else None
        entry["step_time_ratio"] = entry["median_step_ms"]["mean"] / reference["median_step_ms"]["mean"]
        entry["peak_rss_ratio"] = entry["peak_rss_mib"]["mean"] / reference["peak_rss_mib"]["mean"]

    proxies = {}
    for proxy in PROXIES:
        proxy_runs = [per_run[f"{proxy}-seed{seed}"] for seed in args.seeds
                      if f"{proxy}-seed{seed}" in per_run and not per_run[f"{proxy}-seed{seed}"].get("failed")]
        if proxy_runs:
            proxies[proxy] = proxy_summary(args, proxy, proxy_runs, reference, names)
    corpus_tokens = dict(zip(names, reference_runs[REFERENCE][0]["corpus_tokens"]))
    finished = [run for mixer in mixers for run in ok(mixer)]
    return {"names": names, "evaluated": args.evaluated, "corpus_tokens": corpus_tokens, "targets": targets,
            "final_evaluation": final_evaluation(args, finished, names),
            "iterations": iterations, "summary": summary, "proxies": proxies,
            "transfers": transfer_comparisons(args, summary), "runs": per_run}


def proxy_summary(args: argparse.Namespace, proxy: str, proxy_runs: list[dict], reference: dict, names: list[str]) -> dict[str, Any]:
    """A proxy's model, its cost (also in the target's step times: what a transfer pays once per seed),
    its own last periodic loss (a proxy has no final evaluation) and the mixture it drew."""
    proxy_ms = statistics.mean(run["median_step_ms"] for run in proxy_runs)
    return {
        "mixer": PROXIES[proxy], "layers": args.proxy_layers, "hidden": args.proxy_hidden, "steps": args.steps,
        "median_step_ms": spread([run["median_step_ms"] for run in proxy_runs]),
        "peak_rss_mib": spread([run["peak_rss_mib"] for run in proxy_runs]),
        "wall_s": spread([run["wall_s"] for run in proxy_runs]),
        "parameters": parameter_count(args.proxy_layers, args.proxy_hidden, args),
        "target_step_equivalents": args.steps * proxy_ms / reference["median_step_ms"]["mean"],
        "last_valid_lm_loss_uniform": spread([run["valid"]["lm_loss_uniform"][-1] for run in proxy_runs]),
        "mixture": {
            "iteration": proxy_runs[0]["train"]["iteration"],
            "share_mean": {name: mean_lists([run["train"]["share"][name] for run in proxy_runs]) for name in names},
        },
    }


def transfer_comparisons(args: argparse.Namespace, summary: dict[str, Any]) -> dict[str, Any]:
    """Per proxy family present: its reference (`transfers.FAMILY_REFERENCE`, the learned policy on the
    target) and each of its other transfers' final losses minus the reference's, paired by seed."""
    families: dict[str, Any] = {}
    for proxy, reference in FAMILY_REFERENCE.items():
        members = [mixer for mixer in transfers_of(proxy, args.mixers) if mixer != reference]
        if not members or not summary.get(reference, {}).get("seeds_ok"):
            continue
        families[proxy] = {"reference": reference, "against": {
            mixer: {metric: compare(summary[mixer][metric]["final_per_seed"], summary[reference][metric]["final_per_seed"])
                    for metric in METRICS}
            for mixer in members if summary[mixer].get("seeds_ok")}}
    return families


def excluded(analysis: dict[str, Any]) -> list[str]:
    """The domains no mean counts (the noise), in corpus order."""
    return [name for name in analysis["names"] if name not in analysis["evaluated"]]


def noise_first(analysis: dict[str, Any]) -> list[str]:
    """Every domain, the noise first (where a table or a stacked plot shows it plainly), then the real ones."""
    return excluded(analysis) + [name for name in analysis["names"] if name in analysis["evaluated"]]


def share_at(mixture: dict[str, Any], name: str, step: int) -> float:
    """A domain's realised share (mean over seeds) in the last log interval that ends by `step` (the first, if none)."""
    index = max([i for i, iteration in enumerate(mixture["iteration"]) if iteration <= step], default=0)
    return mixture["share_mean"][name][index]


def parameter_count(layers: int, hidden: int, args: argparse.Namespace, vocab: Optional[int] = None) -> int:
    """GPT parameters (tied embeddings, 4h MLP, learned positions, LayerNorms with biases)."""
    if vocab is None:
        with open(args.data_path, encoding="utf-8") as stream:
            vocab = json.load(stream).get("tokenizer", {}).get("vocab_size") or 0
        vocab = int(math.ceil(vocab / 128) * 128)
    per_layer = 12 * hidden * hidden + 13 * hidden
    return layers * per_layer + vocab * hidden + args.seq_length * hidden + 2 * hidden

