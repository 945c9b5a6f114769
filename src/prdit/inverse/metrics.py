"""Reconstruction quality (PSNR, SSIM as the reference computes it) and each task's classical baseline.

Both metrics take volumes ``[B, 1, D, H, W]`` in the model range and a ``data_range``, by default
2.0, the span of the model range [-1, 1]. Both are invariant to mapping the data and the range
by the same affine map, so this equals computing them on volumes rescaled to [0, 1] with range 1,
or on HU in the default window [-1000, 1000] with range 2000. Values outside the range are not
clipped.

* :func:`psnr` — ``10·log10(data_range² / MSE)`` over the whole volume, one value per volume.
* :func:`ssim` — the reference's 3D SSIM: the mean of 2D SSIMs over all slices along each of the
  three axes, averaged over the axes. Each 2D SSIM is MONAI's (Wang et al., 2004): Gaussian
  window 11, σ 1.5, K1 0.01, K2 0.03, valid convolution (no padding), the SSIM map averaged.

Classical baselines (:func:`classical_baseline` picks the one of an operator): trilinear
upsampling of the low-resolution volume (SR), the measured voxels with the missing ones filled by
their mean (infill), the blurred volume itself (deblur), and the normalised plain back-projection
of the X-ray views (the first SIRT iterate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.metrics.regression import compute_ssim_and_cs

from prdit.errors import ConfigError
from prdit.inverse.operators import Downsample, GaussianBlur, Mask, Operator, check_volume_batch
from prdit.inverse.projector import ConeBeamProjector, density_to_model

MODEL_RANGE = 2.0  # the span of the model range [-1, 1]
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def psnr(x: torch.Tensor, reference: torch.Tensor, data_range: float = MODEL_RANGE) -> torch.Tensor:
    """PSNR in dB of each volume of ``x`` against ``reference`` (both ``[B, 1, D, H, W]``): ``[B]``; inf where equal."""
    _check_pair(x, reference)
    mse = (x - reference).double().pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(x: torch.Tensor, reference: torch.Tensor, data_range: float = MODEL_RANGE) -> torch.Tensor:
    """The reference's 3D SSIM of each volume: mean over the three axes of the mean 2D slice SSIM, ``[B]``."""
    shape = _check_pair(x, reference)
    if min(shape) < SSIM_WINDOW:
        raise ConfigError(f"SSIM needs at least {SSIM_WINDOW} voxels per side (its window), got {shape}")
    per_axis = [_slice_ssim(x, reference, axis, data_range) for axis in (2, 3, 4)]
    return torch.stack(per_axis).mean(dim=0)


def _slice_ssim(x: torch.Tensor, reference: torch.Tensor, axis: int, data_range: float) -> torch.Tensor:
    """Mean 2D SSIM over the slices of ``[B, 1, D, H, W]`` along ``axis`` (2, 3 or 4), ``[B]``."""
    batch = x.shape[0]

    def slices(volume: torch.Tensor) -> torch.Tensor:
        moved = volume.movedim(axis, 1)  # [B, n, 1, a, b]
        return moved.reshape(-1, 1, *moved.shape[-2:])

    ssim_map, _ = compute_ssim_and_cs(slices(x), slices(reference), spatial_dims=2,
                                      kernel_size=[SSIM_WINDOW] * 2, kernel_sigma=[SSIM_SIGMA] * 2,
                                      data_range=data_range)
    return ssim_map.reshape(batch, -1).mean(dim=1)


def _check_pair(x: torch.Tensor, reference: torch.Tensor) -> tuple[int, int, int]:
    """``(D, H, W)`` of two volume batches of one shape, or a ``ConfigError``."""
    shape = check_volume_batch(x, "reconstruction")
    check_volume_batch(reference, "ground truth")
    if x.shape != reference.shape:
        raise ConfigError(f"reconstruction {tuple(x.shape)} and ground truth {tuple(reference.shape)} differ in shape")
    return shape


def upsample_baseline(low: torch.Tensor, factor: int) -> torch.Tensor:
    """Trilinear upsampling ``[B, 1, d, h, w]`` -> ``[B, 1, k·d, k·h, k·w]`` (``align_corners=False``)."""
    shape = check_volume_batch(low, "low-resolution volume")
    return F.interpolate(low, size=tuple(side * factor for side in shape), mode="trilinear", align_corners=False)


def mean_fill_baseline(measured: torch.Tensor, mask: Mask) -> torch.Tensor:
    """Measured voxels kept, missing ones set to the mean of each volume's measured voxels, ``[B, 1, D, H, W]``."""
    weights = mask.weights(measured)
    known = weights.sum()
    if known == 0:
        raise ConfigError("the mask has no known voxel; the mean fill needs at least one")
    mean = (measured * weights).flatten(1).sum(dim=1) / known
    return measured * weights + mean.view(-1, 1, 1, 1, 1) * (1 - weights)


def back_projection_baseline(projections: torch.Tensor, projector: ConeBeamProjector) -> torch.Tensor:
    """Normalised plain back-projection of ``[B, V, rows, columns]``, in the model range ``[B, 1, D, H, W]``.

    Each ray's integral is divided by the ray's length through the volume (its mean density), and
    each voxel takes the length-weighted mean over the rays that cross it: ``Aᵀ(p / A·1) / Aᵀ1``,
    the first iterate of SIRT from zero. Voxels no ray crosses get density 0 (air).
    """
    ones = projections.new_ones(1, 1, *projector.shape)
    ray_lengths = projector.project(ones)
    mean_density = torch.where(ray_lengths > 0, projections / ray_lengths.clamp_min(1e-12), torch.zeros_like(projections))
    coverage = projector.back_project(ray_lengths.new_ones(ray_lengths.shape))
    density = projector.back_project(mean_density) / coverage.clamp_min(1e-12)
    return density_to_model(density, projector.normalization)


def classical_baseline(operator: Operator, measurement: torch.Tensor) -> torch.Tensor:
    """The classical reconstruction ``[B, 1, D, H, W]`` of a measurement made with ``operator``."""
    if isinstance(operator, Downsample):
        return upsample_baseline(measurement, operator.factor)
    if isinstance(operator, Mask):
        return mean_fill_baseline(measurement, operator)
    if isinstance(operator, GaussianBlur):
        return measurement.clone()
    if isinstance(operator, ConeBeamProjector):
        return back_projection_baseline(measurement, operator)
    raise ConfigError(f"no classical baseline for the operator '{getattr(operator, 'name', type(operator).__name__)}'")
