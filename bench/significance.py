"""Paired comparisons over seeds, for every quality report: a mixer's loss minus a reference's at the
same seed, its t-based 95% interval and the paired t-test's two-sided p-value (`scipy.stats`).

Lower is better (losses). A mixer is called better or worse only where the interval excludes zero;
otherwise there is no detectable difference at this many seeds, which is not the same as none.

Imports only the standard library and scipy: the tests load it by its path.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Mapping, Optional, Sequence

from scipy import stats

LEVEL = 0.95
BETTER, WORSE, UNDECIDED, TOO_FEW = "better", "worse", "no detectable difference", "too few seeds"


def compare(values: Mapping[Any, float], reference: Mapping[Any, float], level: float = LEVEL) -> dict[str, Any]:
    """`values` against `reference`, both by seed, over the seeds both have (in the order of `values`).

    Returns the seeds, the differences, their `n`, `mean`, sample `std`, standard error `se`, the
    interval `low`..`high` (mean -+ t_{(1+level)/2, n-1} se), the paired t-test's two-sided `p` (None
    when the differences do not vary or n < 2) and the `verdict`."""
    seeds = [seed for seed in values if seed in reference and values[seed] is not None and reference[seed] is not None]
    differences = [float(values[seed]) - float(reference[seed]) for seed in seeds]
    result: dict[str, Any] = {"seeds": seeds, "differences": differences, "n": len(differences), "level": level,
                              "mean": None, "std": None, "se": None, "low": None, "high": None, "p": None}
    if differences:
        result["mean"] = statistics.fmean(differences)
    if len(differences) >= 2:
        std = statistics.stdev(differences)
        result.update(std=std, se=std / math.sqrt(len(differences)), low=result["mean"], high=result["mean"])
        if std > 0:  # scipy's paired t-test: its p and its interval of the mean difference
            test = stats.ttest_rel([values[seed] for seed in seeds], [reference[seed] for seed in seeds])
            interval = test.confidence_interval(level)
            result.update(low=float(interval.low), high=float(interval.high), p=float(test.pvalue))
    result["verdict"] = verdict(result)
    return result


def verdict(comparison: Mapping[str, Any]) -> str:
    """better / worse where the interval excludes zero, no detectable difference where it holds it."""
    if comparison["low"] is None:
        return TOO_FEW
    if comparison["high"] < 0:
        return BETTER
    if comparison["low"] > 0:
        return WORSE
    return UNDECIDED


def seeds_lower(comparison: Mapping[str, Any]) -> int:
    """At how many seeds the value was below the reference."""
    return sum(difference < 0 for difference in comparison["differences"])


def interval_text(comparison: Mapping[str, Any], digits: int = 4) -> str:
    """'+0.0123 [-0.0040, +0.0286]', or the mean alone below two seeds; '-' with none."""
    if comparison["mean"] is None:
        return "-"
    mean = f"{comparison['mean']:+.{digits}f}"
    return mean if comparison["low"] is None else f"{mean} [{comparison['low']:+.{digits}f}, {comparison['high']:+.{digits}f}]"


def p_text(comparison: Mapping[str, Any]) -> str:
    p: Optional[float] = comparison["p"]
    return "-" if p is None else f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def combined_error(errors: Sequence[Optional[float]], weights: Sequence[float]) -> Optional[float]:
    """The standard error of sum_k w_k x_k for independent x_k with standard errors `errors`
    (a mean over domains: each domain's evaluation reads its own samples); None if one is missing."""
    if any(error is None for error in errors):
        return None
    return math.sqrt(sum((weight * error) ** 2 for weight, error in zip(weights, errors)))
