"""Sketch rows: each domain's samples of a step dealt into two halves, then the target's two halves.

A mixer that reads the squared norm of a domain's mean gradient, `|g_k|^2`, cannot take it from
one sketch of all the domain's samples: `<g_hat, g_hat>` adds the per-sample gradient variance
`tr(Sigma_k) / n_k`, which would reward noisy domains. Two halves of independent samples give
`<g_A, g_B>`, unbiased for `|g_k|^2`. So the sketch has 2K rows: row `2k + h` holds half h of
domain k, the domain's samples dealt alternately in global-batch order (sizes differ by at most
one). The sum of a domain's two rows is its whole sketch, and cross-domain entries are as before.
A mixer that reads a target set's gradient (`training.target_pass`) adds the target's two halves
after the domains': rows 2K and 2K + 1. This module is the one place that layout is written down;
the step, the target pass and the mixers all read it from here.
"""

from __future__ import annotations

import numpy

HALVES = 2


def sketch_rows(num_domains: int, with_target: bool) -> int:
    """The rows of a step's sketch: two per domain, and the target's two when a mixer reads it."""
    return HALVES * (num_domains + (1 if with_target else 0))


def first_target_row(num_domains: int) -> int:
    """The target's first row: after every domain's halves."""
    return HALVES * num_domains


def half_segments(domain_ids) -> numpy.ndarray:
    """The sketch row of every sample of a global batch: `2 * domain + (its rank within its domain) % 2`."""
    domain_ids = numpy.asarray(domain_ids, dtype=numpy.int64)
    order = numpy.argsort(domain_ids, kind="stable")  # each domain's samples, in batch order
    first_of_domain = numpy.searchsorted(domain_ids[order], domain_ids[order], side="left")
    rank_within_domain = numpy.empty_like(domain_ids)
    rank_within_domain[order] = numpy.arange(len(domain_ids)) - first_of_domain
    return HALVES * domain_ids + rank_within_domain % HALVES
