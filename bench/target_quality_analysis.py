"""Target quality, the numbers: per target set and row (a mixer at one setting), the final held-out
target loss and general loss from each run's final evaluation, paired by seed against uniform (and
the target loss against importance), and the trade-off between the two along DGA's step size and
along the importance blend's share.

The trade-off's curves both start at uniform (no specialisation). Whether one curve lies below the
other is asked at matched general loss: for a point P of one curve, the other curve's target loss is
interpolated linearly, seed by seed, between its two points whose mean general losses bracket P's
(with the weights those means give), and P's target loss is compared with it paired by seed. P lies
below (or above) the other curve only where that interval excludes zero; beyond the other curve's
range of general loss, only where dominance decides (`against_curve`).
"""

from __future__ import annotations

import argparse
import bisect
import statistics
from dataclasses import dataclass, field
from typing import Any, Optional

from mixing_quality_analysis import effective_domains, mean_lists, spread, steps_to_reach
from significance import BETTER, WORSE, compare

REFERENCE = "uniform"
IMPORTANCE = "importance"
COST_REFERENCE = "static"  # the per-step time of a run without any target pass or sketch
BELOW, ABOVE, OUTSIDE = "below", "above", "outside its range"
# What of `analyse`'s result is a value per evaluation or log record: the results' side file holds it
# (`result_files.save_results`), the summary JSON the rest.
CURVES = ("per_target/*/iterations", "per_target/*/mixers/*/target_loss/mean_curve",
          "per_target/*/mixers/*/weights/iteration", "per_target/*/mixers/*/weights/mean_curve")


@dataclass(frozen=True)
class Row:
    """One line of a target set's table: a mixer at one setting. `shared` rows read no target (one run
    per seed serves every target set); `curve` names the trade-off curve the row is a point of, at
    `parameter` (DGA's step size, the importance blend's share)."""

    name: str  # as the tables show it
    mixer: str  # uniform, static, importance, dga, acodm_target, or blend (a static blend file)
    folder: str  # the run folder's stem
    shared: bool = False
    options: tuple[str, ...] = field(default=())
    share: Optional[float] = None  # a blend's share of the importance weights
    curve: Optional[str] = None
    parameter: Optional[float] = None

    def label(self, target: str) -> str:
        """The run's label (its folder, without the seed) for `target`."""
        return self.folder if self.shared else f"{self.folder}-{target}"


def _final(runs: dict[int, dict], key: str, target: str) -> dict[int, float]:
    """Each seed's final-evaluation value: the target set's held-out loss, or the general loss."""
    if key == "target":
        return {seed: run["final"]["target_loss"][target] for seed, run in runs.items()}
    return {seed: run["final"]["lm_loss_uniform"] for seed, run in runs.items()}


def _median(values: list) -> Optional[float]:
    return statistics.median(values) if values and None not in values else None


def _row_entry(target: str, row: Row, runs: dict[int, dict], reference: dict[int, dict], importance: dict[int, dict]) -> dict[str, Any]:
    if not runs:
        return {"seeds_ok": [], "row": vars(row)}
    first = next(iter(runs.values()))
    target_final, general_final = _final(runs, "target", target), _final(runs, "general", target)
    # the steps to uniform's last periodic target loss, on the periodic curves
    goal = statistics.mean(run["valid"]["target_loss"][target][-1] for run in reference.values())
    iterations = first["valid"]["iteration"]
    mean_curve = mean_lists([run["valid"]["target_loss"][target] for run in runs.values()])
    names = list(first["train"]["weight"])
    weight_curves = {name: mean_lists([run["train"]["weight"][name] for run in runs.values()]) for name in names}
    last_third = len(next(iter(weight_curves.values()))) * 2 // 3
    final_weights = {name: statistics.mean(curve[last_third:]) for name, curve in weight_curves.items()}
    return {
        "row": vars(row),
        "seeds_ok": sorted(runs),
        "target_loss": {"mean_curve": mean_curve, "final": spread(list(target_final.values())), "final_per_seed": target_final,
                        "se_median": _median([run["final"]["target_loss_se"][target] for run in runs.values()]),
                        "vs_uniform": compare(target_final, _final(reference, "target", target)),
                        "vs_importance": compare(target_final, _final(importance, "target", target)) if importance else None},
        "steps_to_uniform_last": {"target": goal, "mean_curve": steps_to_reach(iterations, mean_curve, goal),
                                  "per_seed": [steps_to_reach(iterations, run["valid"]["target_loss"][target], goal) for run in runs.values()]},
        "general_loss": {"final": spread(list(general_final.values())), "final_per_seed": general_final,
                         "se_median": _median([run["final"]["lm_loss_uniform_se"] for run in runs.values()]),
                         "vs_uniform": compare(general_final, _final(reference, "general", target))},
        "weights": {"iteration": first["train"]["iteration"], "mean_curve": weight_curves,
                    "last_third": final_weights, "effective_domains_last_third": effective_domains(list(final_weights.values()))},
        "median_step_ms": spread([run["median_step_ms"] for run in runs.values()]),
    }


def against_curve(point: dict[str, Any], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Where `point` lies against the curve `other` (entries of its points, any order) at `point`'s
    mean general loss: the other curve's target loss there, seed by seed, and the paired comparison.

    Beyond the other curve's range the comparison is with its nearest end, and says only what
    dominance allows: a point that costs less general loss than the curve's cheapest point lies below
    it if its target loss is lower still; one that costs more than the dearest lies above it if its
    target loss is higher still; otherwise it is outside the curve's range."""
    x = point["general_loss"]["final"]["mean"]
    ordered = sorted(other, key=lambda entry: entry["general_loss"]["final"]["mean"])
    means = [entry["general_loss"]["final"]["mean"] for entry in ordered]
    if x < means[0] or x > means[-1]:
        end = ordered[0] if x < means[0] else ordered[-1]
        paired = compare(point["target_loss"]["final_per_seed"], end["target_loss"]["final_per_seed"])
        position = BELOW if x < means[0] and paired["verdict"] == BETTER else ABOVE if x > means[-1] and paired["verdict"] == WORSE else OUTSIDE
        return {"position": position, "between": [end["row"]["name"]], "weight": None, "paired": paired}
    index = min(bisect.bisect_right(means, x), len(means) - 1) - 1  # the pair of points around x
    (low, high), (x_low, x_high) = ordered[index : index + 2], means[index : index + 2]
    weight = (x - x_low) / (x_high - x_low) if x_high > x_low else 0.0
    low_target, high_target = low["target_loss"]["final_per_seed"], high["target_loss"]["final_per_seed"]
    interpolated = {seed: (1 - weight) * low_target[seed] + weight * high_target[seed] for seed in low_target if seed in high_target}
    paired = compare(point["target_loss"]["final_per_seed"], interpolated)
    position = {BETTER: BELOW, WORSE: ABOVE}.get(paired["verdict"], paired["verdict"])
    return {"position": position, "between": [low["row"]["name"], high["row"]["name"]], "weight": weight, "paired": paired}


def tradeoff(entries: dict[str, dict[str, Any]], rows: list[Row]) -> dict[str, Any]:
    """Each curve's points (uniform first, then by parameter) and, for each point after uniform,
    where it lies against every other curve."""
    curves: dict[str, list[str]] = {}
    for row in sorted((row for row in rows if row.curve and entries[row.name]["seeds_ok"]), key=lambda row: row.parameter):
        curves.setdefault(row.curve, [REFERENCE]).append(row.name)
    comparisons = {}
    for name, points in curves.items():
        for point in points[1:]:
            comparisons[point] = {other: against_curve(entries[point], [entries[row] for row in other_points])
                                  for other, other_points in curves.items() if other != name}
    return {"curves": curves, "comparisons": comparisons}


def analyse(args: argparse.Namespace, rows: list[Row], results: dict, curves: dict) -> dict[str, Any]:
    """Per target set: every row's entry and the trade-off (see the module's docstring)."""
    failed = sorted(name for name, result in results.items() if result.get("returncode") != 0)
    by_name = {row.name: row for row in rows}
    per_target: dict[str, Any] = {}
    for target in args.targets:
        runs = {row.name: {seed: curves[name] for seed in args.seeds if (name := f"{row.label(target)}-seed{seed}") in curves}
                for row in rows}
        if not runs[REFERENCE]:
            raise SystemExit(f"error: every {REFERENCE} run failed; nothing to compare against")
        entries = {row.name: _row_entry(target, row, runs[row.name], runs[REFERENCE], {} if row.name == IMPORTANCE else runs.get(IMPORTANCE, {}))
                   for row in rows}
        own = entries[REFERENCE]["steps_to_uniform_last"]["mean_curve"]
        cost = entries.get(COST_REFERENCE, entries[REFERENCE])["median_step_ms"]["mean"]
        for entry in entries.values():
            if entry["seeds_ok"]:
                steps = entry["steps_to_uniform_last"]["mean_curve"]
                entry["steps_to_uniform_last"]["ratio"] = steps / own if steps is not None and own else None
                entry["step_time_ratio"] = entry["median_step_ms"]["mean"] / cost
        per_target[target] = {"iterations": next(iter(runs[REFERENCE].values()))["valid"]["iteration"], "mixers": entries,
                              "tradeoff": tradeoff(entries, list(by_name.values()))}
    return {"per_target": per_target, "failed_runs": failed,
            "cost_reference": COST_REFERENCE if COST_REFERENCE in by_name else REFERENCE}
