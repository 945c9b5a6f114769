"""Precision / recall / density / coverage on feature clouds whose answer is known, and against a
plain implementation of the PRDC reference code's rules."""

from __future__ import annotations

import numpy as np
import pytest

from prdit.errors import DataError
from prdit.evaluation.config import PRDCConfig
from prdit.evaluation.prdc import prdc


def modes(count: int, per_mode: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """``per_mode`` points around each of the first ``count`` centres (spread 1, centres ~100 apart)."""
    return np.concatenate([c + rng.standard_normal((per_mode, dim)) for c in centres[:count]])


@pytest.fixture()
def centres():
    # 2-D clouds: with k = 3 the balls of ~100 points per mode cover their mode (in many dimensions the
    # k-NN estimate of a manifold misses its tails, and precision of one distribution drops below 1)
    return 100.0 * np.random.default_rng(0).standard_normal((10, 2))


def plain_prdc(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict:
    """One point at a time: radius = distance to the k-th nearest other point, membership strict."""
    def radius(points, i, k):
        distances = sorted(np.linalg.norm(points - points[i], axis=1))
        return distances[k]  # distances[0] is the point itself

    def inside(y, points, i, k):
        return np.linalg.norm(y - points[i]) < radius(points, i, k)

    n, m = len(real), len(fake)
    precision = np.mean([any(inside(y, real, i, k_pr) for i in range(n)) for y in fake])
    recall = np.mean([any(inside(x, fake, j, k_pr) for j in range(m)) for x in real])
    density = sum(inside(y, real, i, k_dc) for y in fake for i in range(n)) / (k_dc * m)
    coverage = np.mean([any(inside(y, real, i, k_dc) for y in fake) for i in range(n)])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_matches_a_plain_implementation_of_the_reference_rules():
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((30, 5)), 1.2 * rng.standard_normal((25, 5)) + 0.4
    ours = prdc(real, fake)
    expected = plain_prdc(real, fake, 3, 5)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name
    assert (ours["k_precision_recall"], ours["k_density_coverage"]) == (3, 5)


def test_identical_sets_score_one(centres):
    real = modes(10, 40, 2, np.random.default_rng(2), centres)
    scores = prdc(real, real.copy())
    # every point lies in its own ball, and in the balls of exactly k - 1 other points on average: density 1
    assert scores["precision"] == scores["recall"] == scores["coverage"] == 1.0
    assert scores["density"] == pytest.approx(1.0, abs=1e-12)


def test_a_generated_set_covering_half_the_modes_has_full_precision_and_half_recall(centres):
    rng = np.random.default_rng(3)
    real = modes(10, 100, 2, rng, centres)
    fake = modes(5, 200, 2, rng, centres)  # as many generated points, all in half the modes
    scores = prdc(real, fake)
    assert scores["precision"] > 0.95
    assert scores["recall"] == pytest.approx(0.5, abs=0.05)
    assert scores["coverage"] == pytest.approx(0.5, abs=0.03)
    # twice as dense in the covered modes, over half the real balls: density stays about 1
    assert scores["density"] == pytest.approx(1.0, abs=0.15)
    every_mode = prdc(real, modes(10, 100, 2, rng, centres))
    assert every_mode["recall"] > 0.95 and every_mode["coverage"] > 0.95 and every_mode["precision"] > 0.95


def test_generated_outliers_lower_precision_and_density_not_recall(centres):
    rng = np.random.default_rng(4)
    real = modes(10, 60, 2, rng, centres)
    fake = np.concatenate([modes(10, 30, 2, rng, centres), 1000.0 + rng.standard_normal((300, 2))])
    scores = prdc(real, fake)
    assert scores["precision"] == pytest.approx(0.5, abs=0.06)
    assert scores["density"] == pytest.approx(0.5, abs=0.2)
    assert scores["recall"] > 0.8 and scores["coverage"] > 0.8


def test_too_few_samples_for_the_neighbour_count_is_an_error():
    with pytest.raises(DataError, match="more than 5 samples"):
        prdc(np.zeros((5, 3)), np.ones((10, 3)))
    assert prdc(np.random.default_rng(0).standard_normal((4, 3)), np.zeros((4, 3)),
                PRDCConfig(k_precision_recall=2, k_density_coverage=3))["n_real"] == 4
