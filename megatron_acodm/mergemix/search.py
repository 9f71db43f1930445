"""MergeMix's offline mixture search: seed mixtures, a surrogate of the merged model's score, proposals.

A mixture `a` on the K-simplex is scored by evaluating theta_base + sum_k a_k (theta_k - theta_base)
(lower is better). The caller evaluates; this module chooses where: `seed_mixtures` gives the first
points, `Surrogate` regresses the score on the mixture, `propose` picks the mixtures it predicts best
that are not too close to any already evaluated, and `best_index` reads off the winner.

Why a Gaussian process rather than gradient-boosted trees (RegMix's LightGBM): the merged weights are
linear in the mixture, so the loss changes smoothly with it, which a Matern kernel assumes and trees
(piecewise constant) do not. There are only a few dozen evaluations in up to ~10 dimensions, too few
to fill the leaves that boosting needs; a GP interpolates them instead. It also reports its
uncertainty, which is small near evaluated mixtures and grows away from them.

Everything here is deterministic in its `seed` arguments.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

# Dirichlet concentrations: 1.0 spreads points over the interior, 0.3 puts them near faces and corners.
_INTERIOR = 1.0
_SPARSE = 0.3
# Local candidates are Dirichlet(_LOCAL_SHARPNESS * point + _LOCAL_FLOOR): close to `point`, and
# the floor keeps every concentration positive where `point` has a zero weight.
_LOCAL_SHARPNESS = 200.0
_LOCAL_FLOOR = 1e-3
_LOCAL_CENTRES = 3


def _check_min_weight(num_domains: int, min_weight: float) -> None:
    if not 0.0 <= min_weight < 1.0 / num_domains:
        raise ValueError(f"min_weight must be in [0, 1/{num_domains}) for {num_domains} domains, got {min_weight}")


def _floor(mixtures: np.ndarray, min_weight: float) -> np.ndarray:
    """Map simplex rows so every weight is >= min_weight; rows still sum to 1."""
    return min_weight + (1.0 - mixtures.shape[1] * min_weight) * mixtures


def _unfloor(mixtures: np.ndarray, min_weight: float) -> np.ndarray:
    """Invert `_floor`, clipping rows that were below the floor back onto the simplex."""
    raw = np.clip((mixtures - min_weight) / (1.0 - mixtures.shape[1] * min_weight), 0.0, None)
    return raw / raw.sum(axis=1, keepdims=True)


def _dirichlet(rng: np.random.Generator, num_domains: int, count: int, concentration: float) -> np.ndarray:
    return rng.dirichlet(np.full(num_domains, concentration), size=count)


def _split(total: int, parts: int) -> list[int]:
    """`total` items in `parts` near-equal shares, the larger ones first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def seed_mixtures(num_domains: int, count: int, seed: int, min_weight: float = 0.0) -> np.ndarray:
    """[count, K] seed mixtures: uniform, the K corners, then Dirichlet samples (1.0 and 0.3 in turn).

    With `min_weight` m every row becomes m + (1 - K m) row, so no weight is below m.
    """
    if num_domains < 2:
        raise ValueError(f"a mixture needs at least 2 domains, got {num_domains}")
    if count < num_domains + 1:
        raise ValueError(
            f"count must be at least {num_domains + 1} (the uniform mixture and the {num_domains} corners), got {count}"
        )
    _check_min_weight(num_domains, min_weight)
    rng = np.random.default_rng(seed)
    samples = [
        rng.dirichlet(np.full(num_domains, _INTERIOR if i % 2 == 0 else _SPARSE))
        for i in range(count - num_domains - 1)
    ]
    rows = np.vstack([np.full((1, num_domains), 1.0 / num_domains), np.eye(num_domains), *samples])
    return _floor(rows, min_weight)


class Surrogate:
    """A Gaussian process of the score on the mixture: ARD Matern 5/2 plus a small fitted noise."""

    def __init__(self, seed: int):
        self.seed = seed
        self.num_domains: int | None = None
        self._model: GaussianProcessRegressor | None = None

    def fit(self, mixtures: np.ndarray, scores: np.ndarray) -> "Surrogate":
        mixtures = np.asarray(mixtures, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        if mixtures.ndim != 2 or scores.shape != (len(mixtures),):
            raise ValueError(f"need mixtures [N, K] and scores [N], got {mixtures.shape} and {scores.shape}")
        if len(mixtures) < 2:
            raise ValueError(f"fitting needs at least 2 evaluated mixtures, got {len(mixtures)}")
        bad = int(np.count_nonzero(~np.isfinite(scores)))
        if bad:
            raise ValueError(f"{bad} of {len(scores)} scores are not finite; drop those mixtures before fitting")
        num_domains = mixtures.shape[1]
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
            length_scale=np.full(num_domains, 0.5), length_scale_bounds=(1e-2, 1e2), nu=2.5
        ) + WhiteKernel(1e-4, (1e-8, 1e-1))
        model = GaussianProcessRegressor(
            kernel=kernel, normalize_y=True, n_restarts_optimizer=4, random_state=self.seed
        )
        # A length scale or the noise at its bound is an expected outcome with few points, not a fault.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(mixtures, scores)
        self._model, self.num_domains = model, num_domains
        return self

    def predict(self, mixtures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted score and its standard deviation for each row of `mixtures`."""
        if self._model is None:
            raise ValueError("the surrogate must be fitted before it predicts")
        mixtures = np.asarray(mixtures, dtype=np.float64)
        if mixtures.ndim != 2 or mixtures.shape[1] != self.num_domains:
            raise ValueError(f"need mixtures [N, {self.num_domains}], got {mixtures.shape}")
        mean, std = self._model.predict(mixtures, return_std=True)
        return mean, std


def _candidates(
    surrogate: Surrogate, evaluated: np.ndarray, total: int, rng: np.random.Generator, min_weight: float
) -> np.ndarray:
    """`total` mixtures: a third Dirichlet(1), a third Dirichlet(0.3), a third near the predicted-best evaluated."""
    num_domains = evaluated.shape[1]
    interior, sparse, local = _split(total, 3)
    predicted, _ = surrogate.predict(evaluated)
    # Perturb in the unfloored space so that flooring afterwards puts the samples back near the centres.
    centres = _unfloor(evaluated[np.argsort(predicted, kind="stable")[:_LOCAL_CENTRES]], min_weight)
    near = [
        rng.dirichlet(_LOCAL_SHARPNESS * centre + _LOCAL_FLOOR, size=size)
        for centre, size in zip(centres, _split(local, len(centres)))
    ]
    raw = np.vstack(
        [_dirichlet(rng, num_domains, interior, _INTERIOR), _dirichlet(rng, num_domains, sparse, _SPARSE), *near]
    )
    return _floor(raw, min_weight)


def propose(
    surrogate: Surrogate,
    evaluated: np.ndarray,
    count: int,
    seed: int,
    candidates: int = 20000,
    min_weight: float = 0.0,
    min_distance: float = 0.05,
) -> np.ndarray:
    """Up to `count` mixtures with the lowest predicted score, chosen greedily among sampled candidates.

    Each is at L1 distance >= `min_distance` from every row of `evaluated` and from each other, and obeys
    `min_weight` as in `seed_mixtures`. Rows come best first; fewer than `count` only if fewer qualify.
    """
    evaluated = np.asarray(evaluated, dtype=np.float64)
    if evaluated.ndim != 2 or len(evaluated) == 0:
        raise ValueError(f"evaluated must be a non-empty [N, K] array, got shape {evaluated.shape}")
    num_domains = evaluated.shape[1]
    _check_min_weight(num_domains, min_weight)
    if count < 1 or candidates < 1 or min_distance < 0:
        raise ValueError(
            f"need count >= 1, candidates >= 1 and min_distance >= 0, got {count}, {candidates}, {min_distance}"
        )
    pool = _candidates(surrogate, evaluated, candidates, np.random.default_rng(seed), min_weight)
    mean, _ = surrogate.predict(pool)
    pool = pool[np.argsort(mean, kind="stable")]
    alive = np.ones(len(pool), dtype=bool)
    for point in evaluated:
        alive &= np.abs(pool - point).sum(axis=1) >= min_distance
    chosen: list[int] = []
    while len(chosen) < count and alive.any():
        best = int(np.argmax(alive))  # the first alive candidate: the pool is sorted by predicted score
        chosen.append(best)
        alive &= np.abs(pool - pool[best]).sum(axis=1) >= min_distance
        alive[best] = False  # with min_distance 0 the distance test alone would keep it
    return pool[chosen]


def best_index(scores: np.ndarray) -> int:
    """Index of the lowest finite score (the first one on ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    if not finite.any():
        raise ValueError(f"none of the {scores.size} scores is finite")
    return int(np.argmin(np.where(finite, scores, np.inf)))
