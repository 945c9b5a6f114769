"""Figures of CT volumes: three orthogonal mid-slices per volume, in a CT window."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# CT display windows as (level, width) in HU, the one table of them; "overview" shows lung, soft
# tissue and bone together.
CT_WINDOWS = {"lung": (-600.0, 1500.0), "mediastinal": (40.0, 400.0), "bone": (400.0, 1800.0),
              "overview": (-300.0, 1600.0)}


def window_range(name: str, hu_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(vmin, vmax)`` in HU of a named window; ``full`` gives ``hu_range`` (a normalisation window)."""
    if name == "full" and hu_range is not None:
        return float(hu_range[0]), float(hu_range[1])
    if name not in CT_WINDOWS:
        from prdit.errors import ConfigError

        raise ConfigError(f"unknown CT window '{name}'; choose one of {', '.join(CT_WINDOWS)}"
                          + (", full" if hu_range is not None else ""))
    level, width = CT_WINDOWS[name]
    return level - width / 2, level + width / 2


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
                       window: str = "overview") -> Path:
    """One row per volume (HU, ``[D, H, W]``), three orthogonal mid-slices per row, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vmin, vmax = window_range(window)
    rows = max(len(volumes), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    for r, volume in enumerate(volumes):
        for c, (view, image, aspect, origin) in enumerate(orthogonal_views(np.asarray(volume))):
            ax = axes[r][c]
            ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect,
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
