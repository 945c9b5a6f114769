"""The volume type every reader and writer shares: a ``[D, H, W]`` array and its geometry (ITK/LPS)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Volume:
    """A 3D image: ``array`` ``[D, H, W]`` plus its geometry (spacing/origin in x, y, z order)."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel (i=x, j=y, k=z) to RAS-mm affine, as nibabel reports it."""
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        lps[:3, 3] = self.origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
