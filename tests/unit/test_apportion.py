"""Carried-remainder apportionment: realised counts track the cumulative weights."""

from __future__ import annotations

import numpy
import pytest

from megatron_acodm.data.apportion import apportion


def _track(weight_sequence, total):
    """Run apportion over a weight sequence; return the largest |count - cumulative target| seen."""
    weight_sequence = list(weight_sequence)
    k = len(weight_sequence[0])
    carry, counts, target, worst = numpy.zeros(k), numpy.zeros(k, dtype=numpy.int64), numpy.zeros(k), 0.0
    for weights in weight_sequence:
        step_counts, carry = apportion(carry, weights, total)
        assert step_counts.sum() == total and (step_counts >= 0).all()
        counts += step_counts
        target += weights * total
        worst = max(worst, float(numpy.abs(counts - target).max()))
    return worst


def _random_simplex(rng, k, vanish):
    weights = rng.dirichlet(numpy.full(k, 0.3))
    if vanish:
        weights[rng.random(k) < 0.5] = 0.0
        if weights.sum() == 0:
            weights[rng.integers(k)] = 1.0
    return weights / weights.sum()


@pytest.mark.parametrize("total", [1, 7, 64])
@pytest.mark.parametrize("vanish", [False, True])
def test_up_to_three_domains_track_any_weights(total, vanish):
    # With K <= 3 the bound holds for every sequence: two over-served domains would force the third past 1.
    rng = numpy.random.default_rng(total)
    for k in (2, 3):
        for _ in range(20):
            sequence = [_random_simplex(rng, k, vanish) for _ in range(200)]
            assert _track(sequence, total) < 1.0


@pytest.mark.parametrize("total", [8, 64, 512])
def test_piecewise_constant_weights_keep_tijdemans_bound(total):
    # Abrupt switches, including to weights with exact zeros, held for a stretch of steps.
    rng = numpy.random.default_rng(total)
    for k in (4, 8, 16):
        sequence = []
        while len(sequence) < 400:
            weights = rng.dirichlet(numpy.full(k, 0.5))
            weights[rng.random(k) < 0.2] = 0.0
            weights = weights / weights.sum() if weights.sum() > 0 else numpy.full(k, 1.0 / k)
            sequence += [weights] * int(rng.integers(20, 60))
        assert _track(sequence, total) <= 1.0 - 1.0 / (2 * k - 2) + 1e-9


@pytest.mark.parametrize("total", [1, 8, 256])
def test_smoothly_moving_weights_track(total):
    # Weights of a mixer that learns: a random walk of logits, every step different.
    rng = numpy.random.default_rng(total)
    for k in (4, 8, 16):
        logits = numpy.zeros(k)
        sequence = []
        for _ in range(400):
            logits += rng.normal(0.0, 0.3, k)
            weights = numpy.exp(logits - logits.max())
            sequence.append(weights / weights.sum())
        assert _track(sequence, total) < 1.0


def test_every_step_whose_whole_parts_fit_ends_within_one():
    rng = numpy.random.default_rng(0)
    for _ in range(5000):
        k, total = int(rng.integers(2, 12)), int(rng.integers(1, 40))
        carry = rng.uniform(-0.99, 0.99, k)
        carry -= carry.mean()
        if numpy.abs(carry).max() >= 1:
            continue
        weights = _random_simplex(rng, k, vanish=bool(rng.integers(2)))
        deficit = carry + weights * total
        if numpy.maximum(numpy.floor(deficit), 0).sum() > total:
            continue  # infeasible for any rule
        counts, new_carry = apportion(carry, weights, total)
        assert numpy.abs(new_carry).max() < 1.0
        assert counts.sum() == total


def test_no_online_rule_beats_the_harmonic_adversary():
    # The documented limit: spread each unit's weight over the domains not yet served (G = 1).
    k = 4
    carry, served, target, counts = numpy.zeros(k), [], numpy.zeros(k), numpy.zeros(k)
    for _ in range(k - 1):
        weights = numpy.array([0.0 if i in served else 1.0 for i in range(k)])
        weights /= weights.sum()
        step_counts, carry = apportion(carry, weights, 1)
        served.append(int(numpy.argmax(step_counts)))
        counts += step_counts
        target += weights
    assert numpy.abs(counts - target).max() == pytest.approx(1 / 4 + 1 / 3 + 1 / 2)


def test_long_constant_run_does_not_drift():
    weights = numpy.array([0.5, 0.3, 0.15, 0.05])
    carry = numpy.zeros(4)
    counts = numpy.zeros(4, dtype=numpy.int64)
    for _ in range(100_000):
        step_counts, carry = apportion(carry, weights, 3)
        counts += step_counts
    assert numpy.abs(counts - weights * 300_000).max() <= 1.0 - 1.0 / 6 + 1e-6
    assert abs(carry.sum()) < 1e-9


def test_zero_weight_domain_at_target_gets_nothing():
    carry = numpy.array([0.0, -0.4, 0.4])
    counts, _ = apportion(carry, numpy.array([0.5, 0.0, 0.5]), 10)
    assert counts[1] == 0 and counts.sum() == 10
