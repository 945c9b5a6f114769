"""Figures of CT volumes: three orthogonal mid-slices per volume, in a CT window."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (level, width) in HU: a window that shows lung, soft tissue and bone together.
CT_WINDOW = (-300.0, 1600.0)


def orthogonal_views(volume: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
                     ) -> list[tuple[str, np.ndarray, float, str]]:
    """Axial, coronal and sagittal mid-slices of a ``[D, H, W]`` = (z, y, x) volume as
    ``(name, image, aspect, origin)`` for ``imshow``: radiological convention (patient's right on
    the left, anterior and superior up), the voxel spacing ``(x, y, z)`` as aspect ratio."""
    sx, sy, sz = spacing
    d, h, w = volume.shape
    return [
        ("axial", volume[d // 2], sy / sx, "upper"),          # rows y (anterior first), columns x
        ("coronal", volume[:, h // 2, :], sz / sx, "lower"),  # rows z, superior drawn at the top
        ("sagittal", volume[:, :, w // 2], sz / sy, "lower"),  # rows z, columns y (anterior left)
    ]


def save_slices_figure(volumes: list[np.ndarray], path: str | Path, titles: list[str] | None = None,
                       window: tuple[float, float] = CT_WINDOW) -> Path:
    """One row per volume (HU, ``[D, H, W]``), three orthogonal mid-slices per row, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    level, width = window
    rows = max(len(volumes), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    for r, volume in enumerate(volumes):
        for c, (view, image, aspect, origin) in enumerate(orthogonal_views(np.asarray(volume))):
            ax = axes[r][c]
            ax.imshow(image, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, aspect=aspect,
                      origin=origin, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(view, fontsize=9)
        if titles:
            axes[r][0].set_ylabel(titles[r], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
