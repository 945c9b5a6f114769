"""W(HU): the 1D Wasserstein-1 distance between the Hounsfield-unit distributions of two sets.

All voxels of a set pooled into one distribution of HU, the two distributions compared by
W1 = ∫ |F_real(h) − F_generated(h)| dh (F: cumulative distribution). It says, in HU, how far
the tissue intensities of generated volumes are from real ones — air, fat, soft tissue, bone in
the right proportions — and nothing about where they are.

Volumes (in the model range) map back to HU through the normalisation's window, clipped to it,
and every volume is reduced to a histogram of 1-HU bins over the window. The pooled histogram is
the sum of the volumes' histograms, so a bootstrap resample of volumes is a weighted sum of
them; W1 between two histograms on one grid of spacing w is Σ |F_real − F_generated| · w,
exact for the binned values (each voxel moved at most half a bin: 0.5 HU).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from prdit.data.normalization import Normalization
from prdit.errors import DataError
from prdit.evaluation.volumes import VolumeSet

BIN_HU = 1.0  # histogram bin width


def hu_bins(normalization: Normalization) -> tuple[int, float]:
    """Number of bins over the normalisation's HU window and their width (about ``BIN_HU``)."""
    span = normalization.hu_max - normalization.hu_min
    count = max(1, int(round(span / BIN_HU)))
    return count, span / count


def hu_histograms(volumes: VolumeSet, normalization: Normalization, progress: bool = False) -> np.ndarray:
    """Per-volume voxel counts ``[N, bins]`` (int64) of the HU values, window clipped, 1-HU bins."""
    count, width = hu_bins(normalization)
    histograms = np.zeros((len(volumes), count), np.int64)
    for i in tqdm(range(len(volumes)), desc=f"HU histograms ({volumes.name})", unit="vol", disable=not progress):
        hu = normalization.to_hu(volumes[i]).ravel().astype(np.float64)
        index = np.clip(np.floor((hu - normalization.hu_min) / width), 0, count - 1).astype(np.int64)
        histograms[i] = np.bincount(index, minlength=count)
    return histograms


def wasserstein_between_histograms(real: np.ndarray, fake: np.ndarray, bin_width: float) -> np.ndarray:
    """W1 between histograms on one grid: ``[..., bins]`` each (counts or weights), broadcast -> ``[...]``."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    cdf_real = np.cumsum(real, axis=-1) / real.sum(axis=-1, keepdims=True)
    cdf_fake = np.cumsum(fake, axis=-1) / fake.sum(axis=-1, keepdims=True)
    return np.abs(cdf_real - cdf_fake).sum(axis=-1) * bin_width


def hu_wasserstein(real_histograms: np.ndarray, fake_histograms: np.ndarray, normalization: Normalization) -> dict:
    """The report entry of W(HU) from per-volume histograms ``[N, bins]`` and ``[M, bins]``."""
    if len(real_histograms) < 1 or len(fake_histograms) < 1:
        raise DataError("W(HU) needs at least one real and one generated volume")
    count, width = hu_bins(normalization)
    value = float(wasserstein_between_histograms(real_histograms.sum(0), fake_histograms.sum(0), width))
    return {"value": value, "units": "HU", "bins": count, "bin_width_hu": width,
            "window_hu": [normalization.hu_min, normalization.hu_max],
            "estimator": "1D Wasserstein-1 between the pooled voxel HU distributions (window clipped, 1-HU bins)"}
