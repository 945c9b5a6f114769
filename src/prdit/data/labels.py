"""Anatomical label maps: the project's label set, name tables, reading and checking label maps.

A label map is an integer volume ``[D, H, W]`` on its image's grid (same size, spacing, origin
and orientation) whose values index a name table. prdit's own indices are ``PHANTOM_LABELS``,
the structures the phantom generator paints, named as TotalSegmentator names them where it has
the structure. Index 0, ``background``, is "no structure labelled": the air around a phantom,
and everything a segmenter leaves unlabelled in a real scan.

One pairing convention everywhere: the label map of ``DIR/<name>.nii.gz`` (or of a scan
``DIR/<name>.npz``, or a DICOM folder ``DIR/<name>/``) is ``DIR/labels/<name>.nii.gz``, and
``DIR/labels/labels.json`` holds the table (index -> name) its values follow.

Any other indexing is mapped onto prdit's by a table of index -> name (CSV or JSON) whose names
are prdit's or TotalSegmentator's; the shipped ``label_tables/totalsegmentator_total.csv`` lists
TotalSegmentator's ``total`` classes with the prdit label each one becomes (all ribs become
``ribs``, all lobes of a lung its lung; classes the phantom does not paint become background).
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prdit.data.io import ITK_SUFFIXES, Volume, read_volume, volume_suffix, write_volume
from prdit.errors import DataError

PHANTOM_LABELS: tuple[str, ...] = (
    "background",
    "table",
    "subcutaneous_fat",
    "skeletal_muscle",
    "torso_fat",
    "autochthon_right",
    "autochthon_left",
    "abdomen",
    "liver",
    "stomach",
    "lung_right",
    "lung_left",
    "heart",
    "aorta",
    "trachea",
    "bronchus_right",
    "bronchus_left",
    "lung_vessels",
    "lung_nodules",
    "vertebrae",
    "intervertebral_discs",
    "spinal_cord",
    "ribs",
    "costal_cartilages",
    "sternum",
)
"""prdit's label set: the value of each structure in a label map is its position here."""

LABELS = {name: index for index, name in enumerate(PHANTOM_LABELS)}
"""Name -> index of ``PHANTOM_LABELS``."""

LABELS_FOLDER = "labels"
"""Folder beside a set of volumes that holds their label maps, under the volumes' own file names."""
TABLE_NAME = "labels.json"
"""Name table (index -> name) of the label maps of a ``labels/`` folder."""
TOTALSEGMENTATOR = "totalsegmentator"
"""What ``--label-table`` accepts for TotalSegmentator's ``total`` task instead of a file."""
TOTALSEGMENTATOR_TABLE = Path(__file__).with_name("label_tables") / "totalsegmentator_total.csv"


# ---------------------------------------------------------------------------------------
# Name tables
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelTable:
    """How the values of a set of label maps become prdit indices, and where that came from."""

    to_prdit: dict[int, int]
    source: str


def write_label_table(folder: str | Path, names: Sequence[str] = PHANTOM_LABELS) -> Path:
    """Write the table (index -> name) of the label set ``names`` (default prdit's) as ``folder/labels.json``."""
    path = Path(folder) / TABLE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({str(i): name for i, name in enumerate(names)}, indent=1) + "\n")
    return path


def read_label_table(path: str | Path) -> dict[int, str]:
    """Index -> name from a JSON object or a CSV of ``index,name`` rows (a header row is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such label table; give a CSV or JSON file of index -> name")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as a label table ({err})") from err
    if path.suffix.lower() == ".json":
        try:
            items = list(json.loads(text).items())
        except (json.JSONDecodeError, AttributeError) as err:
            raise DataError(f"{path}: not a JSON object of index -> name ({err})") from err
        rows = [(f"key {key!r}", key, name) for key, name in items]
    else:
        lines = list(csv.reader(text.splitlines()))
        rows = [(f"line {n}", *line[:2]) for n, line in enumerate(lines, 1) if line and line[0].strip()]
        if rows and not rows[0][1].strip().lstrip("-").isdigit():
            rows = rows[1:]  # header
    table: dict[int, str] = {}
    for where, index, name in rows:
        try:
            index = int(str(index).strip())
        except ValueError:
            raise DataError(f"{path}: {where}: index {index!r} is not an integer; the table maps index -> name") from None
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{path}: {where}: index {index} has no name")
        if index in table:
            raise DataError(f"{path}: {where}: index {index} appears twice")
        table[index] = name.strip()
    if not table:
        raise DataError(f"{path}: the label table is empty; it should map each label value to a name")
    return table


@functools.cache  # the shipped table: read once, not for every label map a run checks
def totalsegmentator_to_prdit() -> dict[str, str]:
    """TotalSegmentator class name -> prdit label name, from the shipped table (do not modify the result)."""
    with TOTALSEGMENTATOR_TABLE.open(newline="") as handle:
        return {row["name"]: row["prdit"] for row in csv.DictReader(handle)}


def label_table(source: str | Path) -> LabelTable:
    """The table of a label map set: a CSV/JSON file of index -> name, or ``totalsegmentator``.

    Names are prdit's (``PHANTOM_LABELS``) or TotalSegmentator's, which the shipped table maps
    onto prdit's.
    """
    if str(source) == TOTALSEGMENTATOR:
        source = TOTALSEGMENTATOR_TABLE
    names = read_label_table(source)
    from_totalsegmentator = totalsegmentator_to_prdit()
    to_prdit = {}
    for index, name in names.items():
        prdit_name = name if name in LABELS else from_totalsegmentator.get(name)
        if prdit_name is None:
            raise DataError(f"{source}: label {index} is named {name!r}, which is neither a prdit label "
                            f"({', '.join(PHANTOM_LABELS)}) nor a TotalSegmentator class; rename it to one of them")
        to_prdit[index] = LABELS[prdit_name]
    return LabelTable(to_prdit=to_prdit, source=str(source))


def table_for(label_map: Path, override: str | Path | None) -> LabelTable:
    """The table a label map's values follow: ``override``, else ``labels.json`` beside the map."""
    if override is not None:
        return label_table(override)
    beside = label_map.parent / TABLE_NAME
    if not beside.is_file():
        raise DataError(f"{label_map}: no label table for it: neither --label-table nor {beside}; pass "
                        f"--label-table FILE (CSV or JSON, index -> name) or --label-table {TOTALSEGMENTATOR} "
                        f"for TotalSegmentator's 'total' output")
    return label_table(beside)


# ---------------------------------------------------------------------------------------
# Pairing label maps with their volumes
# ---------------------------------------------------------------------------------------


def stem(path: str | Path) -> str:
    """A volume's name without its suffix (a folder's name as it is)."""
    name = Path(path).name
    return name[: len(name) - len(volume_suffix(name))]


def label_path(volume_path: str | Path) -> Path:
    """Where the label map of a volume goes: ``labels/<name>.nii.gz`` beside it."""
    volume_path = Path(volume_path)
    return volume_path.parent / LABELS_FOLDER / f"{stem(volume_path)}.nii.gz"


def find_label_maps(src: str | Path, scans: list[Path]) -> dict[Path, Path]:
    """Scan -> its label map, for the scans that have one (``labels/<scan name>.*`` beside the scan).

    Every volume file in a ``labels/`` folder under ``src`` must belong to a scan: a label map
    with no scan, or two label maps for one scan, is a ``DataError`` naming the file.
    """
    by_place = {(scan.parent.resolve(), stem(scan)): scan for scan in scans}
    pairs: dict[Path, Path] = {}
    for folder in sorted(p for p in Path(src).rglob(LABELS_FOLDER) if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file() or not volume_suffix(path):
                continue
            scan = by_place.get((folder.parent.resolve(), stem(path)))
            if scan is None:
                raise DataError(f"{path}: label map with no scan: expected {stem(path)} (a scan file or folder) "
                                f"in {folder.parent}; rename or remove the label map")
            if scan in pairs:
                raise DataError(f"{path}: a second label map for {scan} (the first: {pairs[scan]}); keep one")
            pairs[scan] = path
    return pairs


# ---------------------------------------------------------------------------------------
# Reading, checking and writing label maps
# ---------------------------------------------------------------------------------------


def read_label_map(path: str | Path, table: LabelTable, reference: Volume) -> np.ndarray:
    """A label map as uint8 prdit indices ``[D, H, W]``, checked against its image's geometry.

    ``reference`` carries the image's grid: its array shape, spacing, origin and direction.
    Raises ``DataError`` naming the file for a format without geometry, another grid, spacing,
    origin or orientation, NaN or non-integer values, or values the table does not know.
    """
    return to_prdit_indices(read_label_values(path, reference), table, Path(path))


def read_label_values(path: str | Path, reference: Volume, check_origin: bool = True) -> np.ndarray:
    """A label map's values as stored, int64 ``[D, H, W]``, checked to lie on ``reference``'s grid (its origin too
    unless ``check_origin`` is False) and to be integers; ``DataError`` naming the file otherwise."""
    path = Path(path)
    if volume_suffix(path) not in ITK_SUFFIXES:
        raise DataError(f"{path}: a label map needs its geometry; write it as NIfTI (.nii.gz) on its image's grid")
    labels = read_volume(path)  # NaN and infinite values are refused here
    check_same_grid(path, labels, reference, check_origin)
    values = labels.array
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise DataError(f"{path}: label values must be integers; this map holds fractions "
                        f"(an interpolated map?). Resample label maps with nearest neighbour")
    return values.astype(np.int64)


def to_prdit_indices(values: np.ndarray, table: LabelTable, path: str | Path) -> np.ndarray:
    """Integer label values -> uint8 prdit indices through ``table``; unknown values raise naming ``path``."""
    found, inverse = np.unique(values, return_inverse=True)
    unknown = [int(v) for v in found if int(v) not in table.to_prdit]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise DataError(f"{path}: label value(s) {shown} are not in the label table {table.source}; "
                        f"add them to the table or pass the table this map was made with (--label-table)")
    mapped = np.array([table.to_prdit[int(v)] for v in found], dtype=np.uint8)
    return mapped[inverse.reshape(values.shape)]


def check_same_grid(path: Path, labels: Volume, reference: Volume, check_origin: bool = True) -> None:
    """Raise ``DataError`` naming ``path`` unless ``labels`` lies on ``reference``'s voxel grid (its origin too unless
    ``check_origin`` is False)."""
    shape, spacing = tuple(labels.array.shape), np.asarray(labels.spacing, dtype=np.float64)
    ref_spacing = np.asarray(reference.spacing, dtype=np.float64)
    if shape != tuple(reference.array.shape):
        raise DataError(f"{path}: label map has {shape[::-1]} voxels (x, y, z), its image "
                        f"{tuple(reference.array.shape)[::-1]}; a label map must lie on its image's grid")
    if not np.allclose(spacing, ref_spacing, rtol=1e-3, atol=0.0):
        raise DataError(f"{path}: label map spacing {tuple(np.round(spacing, 4))} mm differs from its image's "
                        f"{tuple(np.round(ref_spacing, 4))} mm; write the map on the image's grid")
    if not np.allclose(np.asarray(labels.direction).reshape(3, 3), np.asarray(reference.direction).reshape(3, 3),
                       atol=1e-3):
        raise DataError(f"{path}: label map orientation differs from its image's (direction "
                        f"{np.round(np.asarray(labels.direction).reshape(-1), 3).tolist()} vs "
                        f"{np.round(np.asarray(reference.direction).reshape(-1), 3).tolist()}); write the map with "
                        f"the image's header, not reoriented")
    # Origins may differ by rounding in a header: a hundredth of a voxel.
    tolerance = 0.01 * float(ref_spacing.min())
    if check_origin and not np.allclose(labels.origin, reference.origin, rtol=0.0, atol=tolerance):
        raise DataError(f"{path}: label map origin {tuple(np.round(labels.origin, 3))} mm differs from its image's "
                        f"{tuple(np.round(reference.origin, 3))} mm; write the map on the image's grid")


def write_label_map(path: str | Path, labels: np.ndarray, like: Volume) -> Path:
    """Write a uint8 label map ``[D, H, W]`` with the geometry of ``like`` (its image)."""
    volume = Volume(array=labels.astype(np.uint8), spacing=like.spacing, origin=like.origin, direction=like.direction)
    return write_volume(path, volume)
