"""Precision, recall, density and coverage of generated features against real ones.

Each feature set stands for a manifold: the union of balls around its features, each ball's
radius the distance to that feature's k-th nearest neighbour in its own set.

* **Precision / recall** (Kynkäänniemi et al. 2019, k = 3): precision is the fraction of
  generated features inside the real manifold (fidelity), recall the fraction of real features
  inside the generated manifold (how much of the real variety is produced).
* **Density / coverage** (Naeem et al. 2020, k = 5): density = (1/(k·M)) Σ_j Σ_i 1[y_j ∈ B(x_i)],
  the mean number of real balls a generated feature lies in, over k (≈ 1 when the two sets
  have one distribution, above 1 where generated features crowd dense real regions); coverage
  = the fraction of real balls holding at least one generated feature. Both use real balls
  only, so they are less swayed than precision and recall by generated outliers.

The conventions are those of the PRDC reference code (clovaai/generative-evaluation-prdc):
Euclidean distances; a ball's radius is the (k+1)-th smallest distance in its row of the
within-set distance matrix, the feature's zero distance to itself being the first (so a
duplicate of it counts as a neighbour); membership is strict (distance < radius).
"""

from __future__ import annotations

import numpy as np

from prdit.errors import DataError
from prdit.evaluation.config import PRDCConfig
from prdit.evaluation.mmd import squared_distances


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``[N, d]`` and ``[M, d]`` -> ``[N, M]`` (float64)."""
    return np.sqrt(squared_distances(a, b))


def nearest_neighbour_radii(distances: np.ndarray, k: int) -> np.ndarray:
    """Radius of each ball: the (k+1)-th smallest entry of each row of a within-set distance matrix ``[N, N]``."""
    return np.partition(distances, k, axis=1)[:, k]


def prdc(real: np.ndarray, fake: np.ndarray, config: PRDCConfig = PRDCConfig()) -> dict:
    """Precision and recall (k = ``k_precision_recall``), density and coverage (k = ``k_density_coverage``) of
    generated features ``[M, d]`` against real features ``[N, d]``."""
    real, fake = _checked(real, fake, config)
    return prdc_from_distances(pairwise_distances(real, real), pairwise_distances(fake, fake),
                               pairwise_distances(real, fake), config)


def prdc_from_distances(real_real: np.ndarray, fake_fake: np.ndarray, real_fake: np.ndarray,
                        config: PRDCConfig = PRDCConfig()) -> dict:
    """The four numbers from the within-set distances ``[N, N]``, ``[M, M]`` and the cross distances ``[N, M]``."""
    per_fake, per_real = per_feature(real_real, fake_fake, real_fake, config)
    values = {**per_fake, **per_real}
    return {**{name: float(values[name].mean()) for name in ("precision", "recall", "density", "coverage")},
            "k_precision_recall": config.k_precision_recall, "k_density_coverage": config.k_density_coverage,
            "n_real": int(real_real.shape[0]), "n_fake": int(fake_fake.shape[0]),
            "convention": "k-NN balls, Euclidean, radius = (k+1)-th smallest within-set distance (self included), "
                          "strict membership (PRDC reference code)"}


def per_feature(real_real: np.ndarray, fake_fake: np.ndarray, real_fake: np.ndarray,
                config: PRDCConfig = PRDCConfig()) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """What each feature contributes, the four numbers being their means: per generated feature ``[M]``, in the
    real manifold (precision) and the number of real k_dc-balls holding it over k_dc (density); per real feature
    ``[N]``, in the generated manifold (recall) and its k_dc-ball holding a generated feature (coverage)."""
    k_pr, k_dc = config.k_precision_recall, config.k_density_coverage
    real_pr, fake_pr = nearest_neighbour_radii(real_real, k_pr), nearest_neighbour_radii(fake_fake, k_pr)
    real_dc = real_pr if k_dc == k_pr else nearest_neighbour_radii(real_real, k_dc)
    inside_real_dc = real_fake < real_dc[:, None]
    return ({"precision": (real_fake < real_pr[:, None]).any(axis=0), "density": inside_real_dc.sum(axis=0) / k_dc},
            {"recall": (real_fake < fake_pr[None, :]).any(axis=1), "coverage": inside_real_dc.any(axis=1)})


def _checked(real: np.ndarray, fake: np.ndarray, config: PRDCConfig) -> tuple[np.ndarray, np.ndarray]:
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise DataError(f"precision/recall need feature sets [N, d] of one dimension, got {real.shape} and "
                        f"{fake.shape}")
    k = max(config.k_precision_recall, config.k_density_coverage)
    if min(len(real), len(fake)) <= k:
        raise DataError(f"precision, recall, density and coverage take the {k}-th nearest neighbour within each set: "
                        f"they need more than {k} samples per set, got {len(real)} real and {len(fake)} generated")
    return real, fake
