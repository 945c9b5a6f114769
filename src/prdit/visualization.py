"""Figures of CT volumes: three orthogonal mid-slices per volume, in a CT window."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (level, width) in HU: a window that shows lung, soft tissue and bone together.
CT_WINDOW = (-300.0, 1600.0)


def orthogonal_slices(volume: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal mid-slices of a ``[D, H, W]`` volume (superior up in the last two)."""
    d, h, w = volume.shape
    return [volume[d // 2], np.flipud(volume[:, h // 2, :]), np.flipud(volume[:, :, w // 2])]


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
        for c, (image, view) in enumerate(zip(orthogonal_slices(np.asarray(volume)), ("axial", "coronal", "sagittal"))):
            ax = axes[r][c]
            ax.imshow(image, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, interpolation="nearest")
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
