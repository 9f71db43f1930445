"""AC-ODM's reward: how well each domain's gradient agrees with the others', and its mixture.

From the step's Gram matrix `G[a, b] ~ <g_a, g_b>` of per-domain gradients:

    r_k = sum_{j != k} G[k, j] / mean_i sqrt(max(G[i, i], 0))     (per-domain alignment)
    R   = sum_k a_k r_k                                            (the action-weighted alignment)

R is one scalar for the whole action, as DDPG needs; the published code z-scores the alignments
across domains instead, which leaves the actor's objective without signal.
"""

from __future__ import annotations

import numpy


def domain_alignments(gram: numpy.ndarray) -> numpy.ndarray:
    """r_k, float64 [K]; non-finite entries count as 0, and a zero Gram matrix gives zeros."""
    gram = numpy.where(numpy.isfinite(gram), gram, 0.0)
    scale = numpy.sqrt(numpy.maximum(numpy.diag(gram), 0.0)).mean()
    if not scale > 0:
        return numpy.zeros(len(gram))
    return (gram.sum(axis=1) - numpy.diag(gram)) / scale


def mixture_reward(action: numpy.ndarray, alignments: numpy.ndarray) -> float:
    """R = sum_k a_k r_k."""
    return float(numpy.dot(action, alignments))
