"""The viewer page: volumes as int16 HU in base64, inlined with the page's HTML, CSS and script.

The page needs nothing but a browser: no server, no network, no file beside it. Each volume is
embedded as little-endian int16 Hounsfield units ``[D, H, W]`` = (z, y, x) with its spacing
(x, y, z) in mm; one larger than ``max_size`` voxels along any axis is resampled so that its
largest axis has ``max_size`` voxels, keeping its physical extent (new spacing = extent / new
shape), and the page says so.

A volume's label map, if it has one, comes along as uint8 prdit indices (``PHANTOM_LABELS``) on the
page's grid of the volume (taken down by the label of the voxel at each new voxel's centre: a label
is a class, never averaged), and the page carries the names and colours of the labels it holds.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prdit.data.io import Volume
from prdit.data.labels import LABELS, PHANTOM_LABELS
from prdit.errors import ConfigError, DataError
from prdit.visualization import CT_WINDOWS

MAX_SIZE = 128  # voxels along any axis of a volume as the page holds it
STATIC = Path(__file__).with_name("static")
DATA_ID = "prdit-data"

# Overlay colour (RGB) of each of prdit's labels, the same on every page: 3D Slicer's GenericAnatomyColors
# where it has the tissue (bone, fat, muscle, lung, liver, heart, aorta, trachea, blood, nerve, connective
# tissue, mass), other colours where structures beside each other share a tissue, so neighbours stay apart.
LABEL_COLOURS: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),  # never drawn
    "table": (150, 150, 150),
    "subcutaneous_fat": (230, 220, 70),
    "skeletal_muscle": (192, 104, 88),
    "torso_fat": (200, 180, 40),
    "autochthon_right": (150, 70, 120),
    "autochthon_left": (120, 60, 150),
    "abdomen": (128, 174, 128),
    "liver": (221, 130, 101),
    "stomach": (250, 160, 60),
    "lung_right": (197, 165, 145),
    "lung_left": (170, 150, 190),
    "heart": (206, 110, 84),
    "aorta": (224, 97, 76),
    "trachea": (182, 228, 255),
    "bronchus_right": (120, 190, 255),
    "bronchus_left": (80, 150, 240),
    "lung_vessels": (216, 101, 79),
    "lung_nodules": (144, 238, 144),
    "vertebrae": (241, 214, 145),
    "intervertebral_discs": (111, 184, 210),
    "spinal_cord": (244, 214, 49),
    "ribs": (255, 240, 190),
    "costal_cartilages": (200, 200, 235),
    "sternum": (225, 190, 110),
}
NO_LABEL = LABELS["background"]  # "no structure labelled": the overlay leaves it uncoloured


@dataclass
class PageVolume:
    """One volume as the page holds it: int16 HU ``[D, H, W]``, spacing (x, y, z) in mm."""

    name: str
    hu: np.ndarray
    spacing: tuple[float, float, float]
    original_shape: tuple[int, int, int]
    original_spacing: tuple[float, float, float]
    labels: np.ndarray | None = None  # uint8 prdit indices [D, H, W] on the grid of ``hu``

    @property
    def downsampled(self) -> bool:
        """True if the page shows fewer voxels than the file holds."""
        return tuple(self.hu.shape) != tuple(self.original_shape)

    def to_json(self) -> dict:
        """The volume's entry in the page's data; ``data`` is base64 of little-endian int16."""
        return {
            "name": self.name,
            "shape": [int(s) for s in self.hu.shape],
            "spacing": [float(s) for s in self.spacing],
            "original_shape": [int(s) for s in self.original_shape],
            "original_spacing": [float(s) for s in self.original_spacing],
            "downsampled": self.downsampled,
            "data": base64.b64encode(np.ascontiguousarray(self.hu, dtype="<i2").tobytes()).decode("ascii"),
            "labels": None if self.labels is None else base64.b64encode(
                np.ascontiguousarray(self.labels, dtype=np.uint8).tobytes()).decode("ascii"),
        }


def shown_shape(shape: tuple[int, int, int], max_size: int = MAX_SIZE) -> tuple[int, int, int]:
    """The shape a volume of ``shape`` has in the page: unchanged, or scaled so its largest axis is ``max_size``."""
    if max_size < 1:
        raise ConfigError(f"the largest shown size must be at least 1 voxel, got {max_size}")
    largest = max(shape)
    if largest <= max_size:
        return tuple(int(s) for s in shape)
    return tuple(max(1, int(round(s * max_size / largest))) for s in shape)


def shown_labels(labels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A label map ``[D, H, W]`` on a grid of ``shape`` with the same extent: each new voxel takes the label
    of the voxel at its centre."""
    index = [((2 * np.arange(m) + 1) * n) // (2 * m) for n, m in zip(labels.shape, shape)]
    return np.ascontiguousarray(labels[np.ix_(*index)])


def page_volume(volume: Volume, name: str, max_size: int = MAX_SIZE, labels: np.ndarray | None = None) -> PageVolume:
    """A volume in HU as the page holds it: resampled (linear) if larger than ``max_size``, rounded to int16;
    with ``labels``, its label map (prdit indices ``[D, H, W]`` on the volume's grid) taken to the same grid."""
    array = np.asarray(volume.array)
    shape = tuple(int(s) for s in array.shape)
    spacing = tuple(float(s) for s in volume.spacing)
    new_shape = shown_shape(shape, max_size)
    if new_shape != shape:
        from scipy.ndimage import zoom

        # grid_mode: the voxel edges of both grids span the same extent, the one the spacing describes
        array = zoom(array.astype(np.float32), [n / s for n, s in zip(new_shape, shape)], order=1,
                     mode="nearest", grid_mode=True)
    hu = np.clip(np.rint(array), -32768, 32767).astype(np.int16)
    # spacing is (x, y, z), shapes are (z, y, x)
    new_spacing = tuple(spacing[k] * shape[2 - k] / new_shape[2 - k] for k in range(3))
    if labels is not None:
        labels = np.asarray(labels)
        if tuple(labels.shape) != shape:
            raise DataError(f"{name}: label map of {list(labels.shape)} voxels for a volume of {list(shape)} "
                            f"(D, H, W); a label map must lie on its volume's grid")
        known = labels.dtype.kind in "iub" and (not labels.size or 0 <= labels.min() <= labels.max() < len(LABELS))
        if not known:
            raise DataError(f"{name}: a label map for the page holds prdit's label indices 0..{len(LABELS) - 1} as "
                            f"integers; read label files with prdit.data.labels.read_label_map")
        labels = shown_labels(labels.astype(np.uint8), new_shape)
    return PageVolume(name=name, hu=hu, spacing=new_spacing, original_shape=shape, original_spacing=spacing,
                      labels=labels)


def page_data(volumes: list[PageVolume], window: str | tuple[float, float] = "lung", grid: bool = False,
              title: str = "prdit view", shown: list[int] | None = None) -> dict:
    """Everything the page's script reads: volumes, CT windows, the start window (a name of ``CT_WINDOWS``
    or ``(level, width)`` in HU) and the layout."""
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ConfigError(f"unknown CT window '{window}'; choose one of {', '.join(CT_WINDOWS)}")
        start = {"name": window, "level": CT_WINDOWS[window][0], "width": CT_WINDOWS[window][1]}
    else:
        level, width = (float(w) for w in window)
        if not width > 0:
            raise ConfigError(f"a CT window needs a positive width, got level {level:g}, width {width:g}")
        start = {"name": None, "level": level, "width": width}
    if not volumes:
        raise ConfigError("the viewer needs at least one volume")
    shown = list(range(len(volumes))) if shown is None else [int(i) for i in shown]
    if not shown or any(i < 0 or i >= len(volumes) for i in shown):
        raise ConfigError(f"shown volumes {shown} are not indices of the {len(volumes)} volume(s)")
    return {
        "title": title,
        "windows": {name: list(lw) for name, lw in CT_WINDOWS.items()},
        "window": start,
        "grid": bool(grid),
        "shown": shown,
        "volumes": [v.to_json() for v in volumes],
        "labels": label_legend(volumes),
    }


def label_legend(volumes: list[PageVolume]) -> dict | None:
    """The page's label names (index -> name, all of prdit's), the colour of each and the labels the maps
    hold (background aside), or None when no volume has a label map."""
    maps = [v.labels for v in volumes if v.labels is not None]
    if not maps:
        return None
    present = sorted(set().union(*(np.unique(m).tolist() for m in maps)) - {NO_LABEL})
    return {
        "names": list(PHANTOM_LABELS),
        "colors": ["#{:02x}{:02x}{:02x}".format(*LABEL_COLOURS[name]) for name in PHANTOM_LABELS],
        "present": [int(i) for i in present],
        "none": NO_LABEL,
    }


def downsampling_notes(volumes: list[PageVolume]) -> list[str]:
    """One line per volume the page shows with fewer voxels than its file holds."""
    return [f"{v.name}: downsampled for this page, {'×'.join(map(str, v.original_shape))} → "
            f"{'×'.join(map(str, v.hu.shape))} voxels (D×H×W; the page holds at most {max(v.hu.shape)} "
            f"per axis, `prdit view --max-size` changes that)" for v in volumes if v.downsampled]


def build_page(volumes: list[PageVolume], window: str | tuple[float, float] = "lung", grid: bool = False,
               title: str = "prdit view", shown: list[int] | None = None) -> str:
    """The self-contained HTML page of ``volumes``."""
    import html

    data = page_data(volumes, window, grid, title, shown)
    # "<" never appears raw inside the script element, so no name can close it
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    template = (STATIC / "template.html").read_text(encoding="utf-8")
    parts = {
        "{{TITLE}}": html.escape(title),
        "{{CSS}}": (STATIC / "viewer.css").read_text(encoding="utf-8"),
        "{{JS}}": (STATIC / "viewer.js").read_text(encoding="utf-8"),
        "{{DATA}}": payload,
        "{{NOTES}}": "".join(f"<div>{html.escape(note)}</div>" for note in downsampling_notes(volumes)),
    }
    missing = [key for key in parts if key not in template]
    if missing:
        raise RuntimeError(f"viewer template lacks {missing[0]}")
    # one pass, so text put in (a title, the script) is never searched for the other keys
    return re.sub(r"\{\{(TITLE|CSS|JS|DATA|NOTES)\}\}", lambda m: parts[m.group(0)], template)


def read_page_data(page: str) -> dict:
    """The data embedded in a page written by :func:`build_page`."""
    start_tag = f'<script type="application/json" id="{DATA_ID}">'
    start = page.index(start_tag) + len(start_tag)
    return json.loads(page[start:page.index("</script>", start)])


def decode_volume(entry: dict) -> np.ndarray:
    """The int16 ``[D, H, W]`` array of one volume entry of the page's data."""
    return np.frombuffer(base64.b64decode(entry["data"]), dtype="<i2").reshape(entry["shape"])


def decode_labels(entry: dict) -> np.ndarray | None:
    """The uint8 label map ``[D, H, W]`` of one volume entry of the page's data, None without one."""
    if entry.get("labels") is None:
        return None
    return np.frombuffer(base64.b64decode(entry["labels"]), dtype=np.uint8).reshape(entry["shape"])
