"""The four reconstruction tasks as a user meets them: each task's operator at a model's size,
and measurement and mask files read, checked and placed in space."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from prdit.data.io import Volume, read_volume
from prdit.data.normalization import Normalization
from prdit.errors import ConfigError, DataError
from prdit.inverse.guidance import TASKS
from prdit.inverse.operators import Downsample, GaussianBlur, Mask, Operator
from prdit.inverse.projector import ConeBeamProjector


def task_operator(task: str, shape: Sequence[int], spacing: Sequence[float], normalization: Normalization,
                  mask: Mask | None = None, views: int = 2, angles: Sequence[float] | None = None) -> Operator:
    """The task's operator for volumes of ``shape`` (D, H, W) and ``spacing`` (x, y, z, mm): ×4
    downsampling (``sr``), ``mask`` (``infill``), the reference Gaussian blur (``deblur``), or the
    cone-beam projector at ``angles`` or ``views`` (``xray``)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    if task == "infill":
        if mask is None:
            raise ConfigError("infill needs a mask (1 = known voxel): pass --mask FILE or --mask-pattern")
        if tuple(mask.known.shape) != tuple(shape):
            raise ConfigError(f"mask of shape {tuple(mask.known.shape)} does not fit the model's volumes {tuple(shape)}")
        return mask
    if task == "sr":
        return Downsample()
    if task == "deblur":
        return GaussianBlur()
    return ConeBeamProjector(shape, spacing, views=views, angles_deg=angles, normalization=normalization)


def expected_measurement_shape(operator: Operator, shape: Sequence[int]) -> tuple[int, ...]:
    """The shape of one measurement ``[...]`` that ``operator`` makes of a ``shape`` volume."""
    if isinstance(operator, ConeBeamProjector):
        return operator.measurement_shape
    if isinstance(operator, Downsample):
        return tuple(n // operator.factor for n in shape)
    return tuple(shape)


def read_measurement(path: str | Path, operator: Operator, shape: Sequence[int],
                     normalization: Normalization) -> tuple[torch.Tensor, Volume]:
    """A measurement file as ``[1, ...]`` for ``operator``: a volume in HU (sr, infill, deblur; made
    model range here) or projections ``[V, rows, columns]`` in water-equivalent mm (xray, ``.npy`` or NIfTI)."""
    volume = read_volume(path)
    expected = expected_measurement_shape(operator, shape)
    if tuple(volume.array.shape) != expected:
        what = "projections [views, rows, columns]" if isinstance(operator, ConeBeamProjector) else "volume [D, H, W]"
        raise DataError(f"{path}: a {operator.name} measurement for this model is a {what} of shape {expected}, "
                        f"the file holds {tuple(volume.array.shape)}")
    array = volume.array if isinstance(operator, ConeBeamProjector) else normalization.to_model(volume.array)
    return torch.from_numpy(np.asarray(array, dtype=np.float32))[None], volume


def read_mask(path: str | Path, shape: Sequence[int]) -> Mask:
    """A mask file (1 = known voxel, 0 = missing) of the model's ``shape`` (D, H, W)."""
    array = read_volume(path).array
    if tuple(array.shape) != tuple(shape):
        raise DataError(f"{path}: a mask for this model has shape {tuple(shape)}, the file holds {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise DataError(f"{path}: a mask holds only 0 (missing) and 1 (known)")
    return Mask(torch.from_numpy(array.astype(bool)), {"pattern": "file", "file": str(path)})


def reconstruction_geometry(measurement: Volume, operator: Operator, fallback: Volume) -> Volume:
    """Where the reconstruction lies: the measurement volume's geometry (super-resolution: its voxels
    split by the factor, the same field of view), or ``fallback``'s for projections."""
    if isinstance(operator, ConeBeamProjector):
        return fallback
    spacing, origin = np.asarray(measurement.spacing, float), np.asarray(measurement.origin, float)
    if isinstance(operator, Downsample):
        # align_corners=False: the first fine voxel's centre lies (f − 1)/(2f) coarse voxels before the coarse one's.
        f = operator.factor
        origin = origin - np.asarray(measurement.direction).reshape(3, 3) @ (spacing * (f - 1) / (2 * f))
        spacing = spacing / f
    return Volume(array=fallback.array, spacing=tuple(float(s) for s in spacing),
                  origin=tuple(float(o) for o in origin), direction=np.asarray(measurement.direction).reshape(3, 3))
