"""KID: the clean-fid / torch-fidelity estimate, checked against a plain loop implementation."""

from __future__ import annotations

import numpy as np
import pytest

from prdit.errors import DataError
from prdit.evaluation.config import KIDConfig
from prdit.evaluation.kid import kid


def loop_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a.b/d + 1)^3, one pair at a time (Bińkowski et al. 2018, eq. 3)."""
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (sum(a[t] * b[t] for t in range(d)) / d + 1.0) ** 3

    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2.0 * cross / (m * m)


def loop_kid(real: np.ndarray, fake: np.ndarray, subsets: int, max_size: int, seed: int) -> tuple[float, float]:
    """Subsets drawn as kid() draws them (all real subsets, then all generated ones, from one generator)."""
    m = min(len(real), len(fake), max_size)
    rng = np.random.default_rng(seed)
    real_subsets = [rng.choice(len(real), size=m, replace=False) for _ in range(subsets)]
    fake_subsets = [rng.choice(len(fake), size=m, replace=False) for _ in range(subsets)]
    values = [loop_mmd2(real[r], fake[f]) for r, f in zip(real_subsets, fake_subsets)]
    return float(np.mean(values)), float(np.std(values))


def test_kid_matches_a_plain_loop_implementation_with_subsets_smaller_than_the_sets():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((13, 4)), rng.standard_normal((11, 4)) * 1.3 + 0.2
    report = kid(real, fake, KIDConfig(subsets=7, max_subset_size=6, seed=3))
    mean, std = loop_kid(real, fake, 7, 6, 3)
    assert report["subset_size"] == 6 and report["subsets"] == 7
    assert report["value"] == pytest.approx(mean, rel=1e-10)
    assert report["std"] == pytest.approx(std, rel=1e-10) and report["std"] > 0
    assert report["value_x1e3"] == pytest.approx(1e3 * mean, rel=1e-10)


def test_subsets_are_the_whole_sets_when_both_are_small():
    # m = min(N_real, N_fake, 1000) = 9: every subset of the 9 generated features is all of them.
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((12, 3)), rng.standard_normal((9, 3)) + 0.5
    report = kid(real[:9], fake)
    assert report["subset_size"] == 9 and report["subsets"] == 100
    assert report["value"] == pytest.approx(loop_mmd2(real[:9], fake), rel=1e-10)
    assert report["std"] == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_at_small_n_and_grows_with_a_shift():
    # Two samples of one distribution: KID averages to 0 over repetitions (FID would not); a shift raises it.
    rng = np.random.default_rng(2)
    same = [kid(rng.standard_normal((20, 8)), rng.standard_normal((20, 8)), KIDConfig(subsets=1))["value"]
            for _ in range(200)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    shifted = kid(rng.standard_normal((20, 8)), rng.standard_normal((20, 8)) + 1.0)["value"]
    assert shifted > max(same)


def test_kid_refuses_sets_it_cannot_score():
    with pytest.raises(DataError, match="at least 2"):
        kid(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(DataError, match="one dimension"):
        kid(np.zeros((5, 4)), np.zeros((5, 3)))
