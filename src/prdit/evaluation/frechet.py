"""Fréchet distance between Gaussian fits of two feature sets (the "F" of 3D FID).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

The usual implementation takes ``scipy.linalg.sqrtm(S1 @ S2)``, which returns complex
values and fails or warns when the covariances are singular — always the case when there
are fewer samples than feature dimensions (N < 2048 for MedicalNet). Here the trace term is
computed from symmetric matrices only: with A = S1^(1/2) (symmetric PSD),
tr((S1 S2)^(1/2)) = tr((A S2 A)^(1/2)) = sum_i sqrt(lambda_i(A S2 A)), and A S2 A is
symmetric PSD, so ``eigvalsh`` gives real eigenvalues; eigenvalues at round-off level (either
sign) are set to 0.

From features, with fewer samples than dimensions, the same trace comes cheaper and more
accurately from the samples themselves: with centred features X1 [N1, F], X2 [N2, F] and
S_i = X_i^T X_i / (N_i - 1), the non-zero eigenvalues of S1 S2 are the squared singular
values of X1 X2^T / sqrt((N1 - 1)(N2 - 1)), so tr((S1 S2)^(1/2)) is that matrix's nuclear
norm: an [N1, N2] SVD instead of F x F eigendecompositions (2048^3 work).
"""

from __future__ import annotations

import numpy as np

from prdit.errors import DataError


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` of features ``[N, F]`` (float64)."""
    features = _checked(features)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); real and >= 0 by construction."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise DataError(f"Fréchet distance needs matching shapes, got means {mu1.shape}, {mu2.shape} and "
                        f"covariances {sigma1.shape}, {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ _symmetric(sigma2) @ root1
    trace_sqrt = np.sqrt(_drop_roundoff(np.linalg.eigvalsh(_symmetric(middle)))).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    # Round-off can leave a tiny negative for identical inputs; the true value is >= 0.
    return float(max(distance, 0.0))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between the Gaussian fits of feature sets ``[N1, F]`` and ``[N2, F]``."""
    real, fake = _checked(real), _checked(fake)
    if real.shape[1] != fake.shape[1]:
        raise DataError(f"feature sets differ in dimension: {real.shape[1]} and {fake.shape[1]}")
    if max(len(real), len(fake)) > real.shape[1]:
        return frechet_distance(*gaussian_fit(real), *gaussian_fit(fake))
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    x1, x2 = real - mu1, fake - mu2
    scale1, scale2 = len(real) - 1, len(fake) - 1
    trace_sqrt = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / np.sqrt(scale1 * scale2)
    diff = mu1 - mu2
    distance = diff @ diff + (x1 * x1).sum() / scale1 + (x2 * x2).sum() / scale2 - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


def small_sample_warning(n_real: int, n_fake: int, dim: int) -> str | None:
    """A warning when FID is estimated from fewer samples than feature dimensions, else None."""
    n = min(n_real, n_fake)
    if n >= dim:
        return None
    return (f"FID from N={n} samples (real {n_real}, generated {n_fake}) in {dim} feature dimensions: the "
            f"covariances are rank-deficient and the estimate is biased (upwards, more so at small N); "
            f"compare FID only between runs with the same N")


def _checked(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise DataError(f"a Gaussian fit needs at least 2 feature vectors [N, F], got shape {features.shape}")
    return features


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(_symmetric(matrix))
    return (vectors * np.sqrt(_drop_roundoff(values))) @ vectors.T


def _drop_roundoff(eigenvalues: np.ndarray) -> np.ndarray:
    # Eigenvalues of a singular PSD matrix come out as +-(round-off) instead of 0, and their
    # square roots (~1e-8 each, thousands of them) would bias the trace; numpy's matrix_rank
    # tolerance tells them from real ones.
    cutoff = eigenvalues.size * np.finfo(np.float64).eps * float(np.abs(eigenvalues).max())
    return np.where(eigenvalues > cutoff, eigenvalues, 0.0)


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    return 0.5 * (matrix + matrix.T)
