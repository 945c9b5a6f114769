"""PNG previews of generated CT volumes: three orthogonal mid-slices per volume, and one grid of
all previews. Drawn with matplotlib's Agg canvas (no display, no global pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from prdit.errors import ConfigError

from prdit.visualization import orthogonal_views

GRID_MAX_WIDTH = 4096  # pixels; a grid of many volumes is scaled down to this width


def save_preview(path: str | Path, hu: np.ndarray, spacing: tuple[float, float, float],
                 window: tuple[float, float], title: str = "") -> Path:
    """Axial, coronal and sagittal mid-slices of a ``[D, H, W]`` = (z, y, x) HU volume, drawn in
    radiological convention (patient's right on the left, anterior and superior up) with the
    voxel spacing as aspect ratio."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.4), dpi=100)
    for k, (name, image, aspect, origin) in enumerate(orthogonal_views(hu, spacing)):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, origin=origin,
                  interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", facecolor="white")
    return path


def save_grid(path: str | Path, previews: list[str | Path]) -> Path:
    """Tile the preview PNGs (in the given order) into one near-square image."""
    from PIL import Image

    if not previews:
        raise ConfigError("no previews to put in a grid")
    with Image.open(previews[0]) as first:
        tile_w, tile_h = first.size
    n = len(previews)
    cols = max(1, min(n, round(math.sqrt(n * tile_h / tile_w))))
    rows = math.ceil(n / cols)
    scale = min(1.0, GRID_MAX_WIDTH / (cols * tile_w))
    tw, th = max(1, int(tile_w * scale)), max(1, int(tile_h * scale))
    grid = Image.new("RGB", (cols * tw, rows * th), "white")
    for k, preview in enumerate(previews):
        with Image.open(preview) as image:
            tile = image.convert("RGB")
        if tile.size != (tw, th):
            tile = tile.resize((tw, th), Image.LANCZOS)
        grid.paste(tile, ((k % cols) * tw, (k // cols) * th))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG")
    return path
