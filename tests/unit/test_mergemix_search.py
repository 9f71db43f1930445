"""megatron_acodm/mergemix/search.py: seed mixtures, the Gaussian-process surrogate, proposals, best_index."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from megatron_acodm.mergemix.search import Surrogate, best_index, propose, seed_mixtures

# A smooth score on the 4-simplex with its minimum 0 at the interior point TARGET.
TARGET = np.array([0.4, 0.3, 0.2, 0.1])
CURVATURE = np.array([1.0, 2.0, 3.0, 4.0])


def quadratic(mixtures: np.ndarray) -> np.ndarray:
    return (CURVATURE * (mixtures - TARGET) ** 2).sum(axis=1)


def l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).sum(axis=-1)


def assert_on_simplex(mixtures: np.ndarray, min_weight: float = 0.0) -> None:
    assert mixtures.dtype == np.float64
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0, atol=1e-12)
    assert (mixtures >= min_weight - 1e-12).all()


@pytest.fixture(scope="module")
def fitted() -> tuple[Surrogate, np.ndarray, np.ndarray]:
    mixtures = seed_mixtures(4, 24, seed=0)
    scores = quadratic(mixtures)
    return Surrogate(seed=0).fit(mixtures, scores), mixtures, scores


# seed_mixtures


def test_seed_layout_uniform_corners_then_samples():
    mixtures = seed_mixtures(5, 30, seed=3)
    assert mixtures.shape == (30, 5)
    np.testing.assert_array_equal(mixtures[0], np.full(5, 0.2))
    np.testing.assert_array_equal(mixtures[1:6], np.eye(5))
    assert_on_simplex(mixtures)
    # The samples are new points, neither the uniform mixture nor a corner.
    assert (mixtures[6:].max(axis=1) < 1.0).all()
    assert (l1(mixtures[6:], mixtures[0]) > 0).all()


def test_seed_smallest_count_is_uniform_and_corners():
    mixtures = seed_mixtures(3, 4, seed=0)
    np.testing.assert_array_equal(mixtures, np.vstack([np.full((1, 3), 1 / 3), np.eye(3)]))


def test_seed_samples_alternate_interior_and_sparse():
    samples = seed_mixtures(6, 7 + 400, seed=1)[7:]
    interior, sparse = samples[0::2], samples[1::2]
    # Dirichlet(0.3) piles weight onto few domains: its largest weight is larger, its smallest smaller.
    assert np.median(sparse.max(axis=1)) > np.median(interior.max(axis=1)) + 0.1
    assert np.median(sparse.min(axis=1)) < np.median(interior.min(axis=1)) / 5


def test_seed_min_weight_maps_every_row():
    plain = seed_mixtures(4, 20, seed=7)
    floored = seed_mixtures(4, 20, seed=7, min_weight=0.05)
    assert_on_simplex(floored, min_weight=0.05)
    np.testing.assert_allclose(floored, 0.05 + 0.8 * plain)
    np.testing.assert_allclose(floored[0], 0.25)
    np.testing.assert_allclose(floored[1:5], np.full((4, 4), 0.05) + 0.8 * np.eye(4))
    np.testing.assert_allclose(floored[1:5].max(axis=1), 1 - 3 * 0.05)


def test_seed_is_deterministic_in_seed():
    np.testing.assert_array_equal(seed_mixtures(4, 16, seed=5), seed_mixtures(4, 16, seed=5))
    other = seed_mixtures(4, 16, seed=6)
    np.testing.assert_array_equal(other[:5], seed_mixtures(4, 16, seed=5)[:5])
    assert (l1(other[5:], seed_mixtures(4, 16, seed=5)[5:]) > 1e-3).all()


def test_seed_errors():
    with pytest.raises(ValueError, match=r"count must be at least 5 \(the uniform mixture and the 4 corners\)"):
        seed_mixtures(4, 4, seed=0)
    for bad in (-0.01, 0.25, 0.3):
        with pytest.raises(ValueError, match="min_weight must be in"):
            seed_mixtures(4, 10, seed=0, min_weight=bad)
    with pytest.raises(ValueError, match="at least 2 domains"):
        seed_mixtures(1, 3, seed=0)


# Surrogate


def test_surrogate_interpolates_training_points(fitted):
    surrogate, mixtures, scores = fitted
    mean, std = surrogate.predict(mixtures)
    assert mean.shape == std.shape == (len(mixtures),)
    np.testing.assert_allclose(mean, scores, atol=1e-3 * np.ptp(scores))
    # Between the training points too: the function is smooth and the GP follows it.
    held_out = seed_mixtures(4, 5 + 50, seed=99)[5:]
    np.testing.assert_allclose(surrogate.predict(held_out)[0], quadratic(held_out), atol=0.02 * np.ptp(scores))


def test_surrogate_uncertainty_grows_away_from_data():
    # Training mixtures all give domain 0 at least 0.7; the other corners are far from every one of them.
    near_corner = 0.7 * np.eye(4)[0] + 0.3 * np.random.default_rng(1).dirichlet(np.ones(4), size=20)
    surrogate = Surrogate(seed=0).fit(near_corner, quadratic(near_corner))
    _, std_train = surrogate.predict(near_corner)
    _, std_far = surrogate.predict(np.eye(4)[1:])
    assert std_train.max() < 1e-3
    assert std_far.min() > 100 * std_train.max()


def test_surrogate_is_deterministic(fitted):
    _, mixtures, scores = fitted
    probe = seed_mixtures(4, 5 + 10, seed=4)
    first = Surrogate(seed=2).fit(mixtures, scores).predict(probe)
    second = Surrogate(seed=2).fit(mixtures, scores).predict(probe)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


@pytest.mark.filterwarnings("error::sklearn.exceptions.ConvergenceWarning")
def test_fit_silences_convergence_warnings_only_inside(fitted):
    _, mixtures, scores = fitted
    # The noise of an exact function fits to its lower bound: sklearn warns, and fit keeps that quiet.
    Surrogate(seed=0).fit(mixtures, scores)
    with pytest.raises(ConvergenceWarning):
        warnings.warn("outside fit", ConvergenceWarning)


def test_surrogate_errors(fitted):
    surrogate, mixtures, scores = fitted
    with pytest.raises(ValueError, match="at least 2 evaluated mixtures, got 1"):
        Surrogate(seed=0).fit(mixtures[:1], scores[:1])
    broken = scores.copy()
    broken[[2, 5]] = [np.nan, np.inf]
    with pytest.raises(ValueError, match="2 of 24 scores are not finite"):
        Surrogate(seed=0).fit(mixtures, broken)
    with pytest.raises(ValueError, match=r"need mixtures \[N, K\] and scores \[N\]"):
        Surrogate(seed=0).fit(mixtures, scores[:-1])
    with pytest.raises(ValueError, match="must be fitted"):
        Surrogate(seed=0).predict(mixtures)
    with pytest.raises(ValueError, match=r"need mixtures \[N, 4\]"):
        surrogate.predict(np.full((2, 3), 1 / 3))


def test_search_finds_interior_minimum():
    mixtures = seed_mixtures(4, 24, seed=0)
    scores = quadratic(mixtures)
    seed_best = scores.min()
    for round_ in range(3):
        surrogate = Surrogate(seed=round_).fit(mixtures, scores)
        proposed = propose(surrogate, mixtures, count=4, seed=round_)
        assert len(proposed) == 4
        mixtures = np.vstack([mixtures, proposed])
        scores = np.concatenate([scores, quadratic(proposed)])
    best = best_index(scores)
    assert l1(mixtures[best], TARGET) < 0.15
    assert scores[best] < 2e-3
    assert scores[best] < seed_best / 5


# propose


def test_propose_keeps_distance_and_floor(fitted):
    surrogate, mixtures, _ = fitted
    proposed = propose(surrogate, mixtures, count=8, seed=0, candidates=3000, min_weight=0.02, min_distance=0.1)
    assert proposed.shape == (8, 4)
    assert_on_simplex(proposed, min_weight=0.02)
    assert (l1(proposed[:, None, :], mixtures[None, :, :]) >= 0.1).all()
    pairwise = l1(proposed[:, None, :], proposed[None, :, :])
    assert (pairwise[~np.eye(8, dtype=bool)] >= 0.1).all()


def test_propose_orders_by_predicted_score_and_aims_low(fitted):
    surrogate, mixtures, scores = fitted
    proposed = propose(surrogate, mixtures, count=5, seed=1, candidates=3000)
    predicted, _ = surrogate.predict(proposed)
    assert (np.diff(predicted) >= 0).all()
    # The best proposal is predicted (and is) better than anything seeded.
    assert predicted[0] < scores.min()
    assert quadratic(proposed[:1])[0] < scores.min()


def test_propose_excludes_evaluated_points(fitted):
    surrogate, mixtures, _ = fitted
    # The exact minimiser, already evaluated, must not come back, nor anything within min_distance of it.
    evaluated = np.vstack([mixtures, TARGET])
    proposed = propose(surrogate, evaluated, count=3, seed=2, candidates=3000, min_distance=0.05)
    assert (l1(proposed, TARGET) >= 0.05).all()


def test_propose_returns_fewer_when_few_qualify(fitted):
    surrogate, mixtures, _ = fitted
    # Points at L1 >= 1.2 from corner 0 and from each other: only a few fit, near the other corners.
    sparse = propose(surrogate, np.eye(4)[:1], count=10, seed=0, candidates=3000, min_distance=1.2)
    assert 1 <= len(sparse) <= 4
    assert (l1(sparse, np.eye(4)[0]) >= 1.2).all()
    # No two mixtures are at L1 above 2, and no candidate is exactly a corner.
    none = propose(surrogate, mixtures, count=3, seed=0, candidates=3000, min_distance=2.0)
    assert none.shape == (0, 4)


def test_propose_is_deterministic_in_seed(fitted):
    surrogate, mixtures, _ = fitted
    first = propose(surrogate, mixtures, count=4, seed=3, candidates=3000)
    np.testing.assert_array_equal(first, propose(surrogate, mixtures, count=4, seed=3, candidates=3000))
    assert not np.array_equal(first, propose(surrogate, mixtures, count=4, seed=4, candidates=3000))


def test_propose_errors(fitted):
    surrogate, mixtures, _ = fitted
    with pytest.raises(ValueError, match="non-empty"):
        propose(surrogate, mixtures[:0], count=2, seed=0)
    with pytest.raises(ValueError, match="min_weight must be in"):
        propose(surrogate, mixtures, count=2, seed=0, min_weight=0.25)
    with pytest.raises(ValueError, match="need count >= 1"):
        propose(surrogate, mixtures, count=0, seed=0)


# best_index


def test_best_index_skips_non_finite():
    assert best_index(np.array([np.nan, 3.0, -np.inf, 1.0, np.nan, 2.0])) == 3
    assert best_index(np.array([2.0, 1.0, 1.0])) == 1
    assert isinstance(best_index(np.array([5.0])), int)
    with pytest.raises(ValueError, match="none of the 2 scores is finite"):
        best_index(np.array([np.nan, np.inf]))
