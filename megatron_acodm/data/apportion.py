"""Integer sample counts that track changing mixture weights, with carried remainders.

Each step hands out `total` samples. A domain's carry is its cumulative target (sum of w * total)
minus what it has received; adding this step's share gives its deficit. Every domain first gets
the whole part of its deficit; the leftover samples go, as in Tijdeman's chairman assignment, to
the domains whose deficit is due soonest (predicted from the current weights) among those owed at
least mu = 1/(2K-2), then to the largest remaining deficits.

After any step in which the whole parts fit into the batch, every carry lies in (-1, 1). No online
rule can promise that for every weight sequence once K >= 4 (weights spread evenly over the domains
not yet served, G = 1: 1/4 + 1/3 + 1/2 > 1); DESIGN.md gives the measured deviations.
"""

from __future__ import annotations

import numpy


def apportion(carry: numpy.ndarray, weights: numpy.ndarray, total: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Split `total` samples by `weights` (a simplex); return (counts, new carry)."""
    share = weights * total
    deficit = carry + share
    counts = numpy.maximum(numpy.floor(deficit), 0.0).astype(numpy.int64)
    remainder = deficit - counts
    leftover = total - int(counts.sum())
    index = numpy.arange(len(weights))
    if leftover > 0:
        mu = 1.0 / max(2 * len(weights) - 2, 2)
        with numpy.errstate(divide="ignore", invalid="ignore"):
            due_in = numpy.where(remainder >= mu, (1.0 - mu - remainder) / share, numpy.inf)
        # Ties break by domain index so the result does not depend on the sort implementation.
        counts[numpy.lexsort((index, -remainder, due_in))[:leftover]] += 1
    elif leftover < 0:
        # Reachable only after weights moved away from domains just rounded up: take the surplus
        # back from the domains closest to their targets.
        closest_first = numpy.lexsort((index, remainder))
        counts[[i for i in closest_first if counts[i] > 0][:-leftover]] -= 1
    new_carry = deficit - counts
    new_carry -= new_carry.mean()  # cancel float round-off so the carries keep summing to zero
    return counts, new_carry
