"""DICOM CT series: headers, choosing the diagnostic series, slice ordering, HU volumes.

Real archives hold more than one series per patient (localisers/scouts, radiographs, several
reconstructions) and sometimes broken files. The rules here:

* every file is read on its own; an unreadable file is recorded with its reason, never fatal;
* the diagnostic series is the CT series (Modality ``CT``, not a ``LOCALIZER``) that forms an
  axial stack with the most slices (ties: the thinner slice spacing, then the series UID);
* slices are ordered by their position along the slice normal (the cross product of the two
  ImageOrientationPatient directions), never by file name or InstanceNumber;
* the stack must be consistent: one orientation, one in-plane grid, evenly spaced slices (a
  gap is a missing slice), no shear (gantry tilt);
* pixel values become HU with each slice's RescaleSlope/RescaleIntercept, and the image keeps
  the true geometry (origin = first slice position, direction = the orientation vectors).

Compressed transfer syntaxes (JPEG 2000, JPEG lossless, JPEG-LS, RLE) are decoded by pydicom
with the pylibjpeg plugins installed with this package.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prdit.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
ORIENTATION_TOLERANCE = 1e-3
"""Largest difference between direction cosines still counted as the same orientation."""
SPACING_TOLERANCE = 0.1
"""Largest relative deviation of a slice gap from the median gap (beyond it: missing slice)."""
AXIAL_MIN_COSINE = 0.8
"""A stack is axial when its slice normal is within ~37 degrees of the patient's z axis."""
MIN_SLICES = 3


@dataclass
class SliceHeader:
    """The header fields of one DICOM file that series selection and stacking need."""

    path: Path
    series_uid: str
    modality: str
    image_type: tuple[str, ...]
    description: str
    rows: int
    columns: int
    frames: int
    position: np.ndarray | None  # ImagePositionPatient, mm (LPS)
    orientation: np.ndarray | None  # ImageOrientationPatient: row direction, column direction
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns), mm

    @property
    def normal(self) -> np.ndarray | None:
        """Unit slice normal: row direction x column direction."""
        if self.orientation is None:
            return None
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        return normal / max(float(np.linalg.norm(normal)), 1e-12)


def is_dicom_candidate(path: Path) -> bool:
    """True for files that may be DICOM: a DICOM suffix, or no suffix at all (common in archives)."""
    return path.is_file() and (path.suffix.lower() in DICOM_SUFFIXES or path.suffix == "") and not path.name.startswith(".")


def read_header(path: str | Path) -> SliceHeader:
    """Read the header of one DICOM file (no pixel data); raises DataError naming the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: not a readable DICOM file ({type(err).__name__}: {err})") from err
    try:
        uid = str(ds.get("SeriesInstanceUID", "")).strip()
        if not uid:
            raise DataError(f"{path}: DICOM file without SeriesInstanceUID")
        position = ds.get("ImagePositionPatient")
        orientation = ds.get("ImageOrientationPatient")
        spacing = ds.get("PixelSpacing")
        return SliceHeader(
            path=path,
            series_uid=uid,
            modality=str(ds.get("Modality", "")).strip().upper(),
            image_type=tuple(str(v).strip().upper() for v in _as_list(ds.get("ImageType", []))),
            description=str(ds.get("SeriesDescription", "")).strip(),
            rows=int(ds.get("Rows", 0) or 0),
            columns=int(ds.get("Columns", 0) or 0),
            frames=int(ds.get("NumberOfFrames", 1) or 1),
            position=np.array([float(v) for v in position], dtype=np.float64) if position is not None and len(position) == 3 else None,
            orientation=np.array([float(v) for v in orientation], dtype=np.float64) if orientation is not None and len(orientation) == 6 else None,
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None and len(spacing) == 2 else None,
        )
    except (ValueError, TypeError) as err:
        raise DataError(f"{path}: malformed DICOM header ({err})") from err


def _as_list(value) -> list:
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def scan_headers(paths: list[Path]) -> tuple[dict[str, list[SliceHeader]], list[tuple[Path, str]]]:
    """Headers grouped by SeriesInstanceUID, and (file, reason) for every unreadable file."""
    series: dict[str, list[SliceHeader]] = {}
    unreadable = []
    for path in paths:
        try:
            header = read_header(path)
        except DataError as err:
            unreadable.append((path, str(err)))
            continue
        series.setdefault(header.series_uid, []).append(header)
    return series, unreadable


# ---------------------------------------------------------------------------------------
# Choosing the diagnostic series
# ---------------------------------------------------------------------------------------


def series_rejection(headers: list[SliceHeader]) -> str:
    """Why a series cannot be the diagnostic CT stack ('' if it can)."""
    modalities = sorted({h.modality or "?" for h in headers})
    if modalities != ["CT"]:
        return f"modality {'/'.join(modalities)}, not CT"
    if any("LOCALIZER" in h.image_type for h in headers):
        return "localiser (scout) images"
    if any(h.frames > 1 for h in headers):
        return "multi-frame (enhanced) CT is not supported"
    if any(h.position is None or h.orientation is None or h.pixel_spacing is None for h in headers):
        return "slices without ImagePositionPatient/ImageOrientationPatient/PixelSpacing"
    if len(headers) < MIN_SLICES:
        return f"only {len(headers)} image(s), not a volume"
    normal = _common_orientation_header(headers).normal
    if abs(normal[2]) < AXIAL_MIN_COSINE:
        return f"not an axial stack (slice normal {np.round(normal, 2).tolist()})"
    return ""


def _common_orientation_header(headers: list[SliceHeader]) -> SliceHeader:
    counts = Counter(tuple(np.round(h.orientation, 3)) for h in headers)
    common = counts.most_common(1)[0][0]
    return next(h for h in headers if tuple(np.round(h.orientation, 3)) == common)


def select_series(series: dict[str, list[SliceHeader]]) -> tuple[str | None, dict[str, str]]:
    """The UID of the diagnostic CT series (or None) and the reason each other series was passed over."""
    reasons = {uid: series_rejection(headers) for uid, headers in series.items()}
    candidates = [uid for uid, reason in reasons.items() if not reason]
    if not candidates:
        return None, reasons

    def rank(uid: str) -> tuple:
        headers = series[uid]
        normal = _common_orientation_header(headers).normal
        heights = np.sort([float(h.position @ normal) for h in headers])
        gap = float(np.median(np.diff(heights))) if len(heights) > 1 else np.inf
        return (-len(headers), gap, uid)

    chosen = min(candidates, key=rank)
    for uid in candidates:
        if uid != chosen:
            reasons[uid] = f"fewer or thicker slices than {chosen} ({len(series[uid])} vs {len(series[chosen])})"
    reasons.pop(chosen)
    return chosen, reasons


def describe_series(uid: str, headers: list[SliceHeader]) -> str:
    """One line naming a series: UID, modality, description, image count."""
    first = headers[0]
    label = f" '{first.description}'" if first.description else ""
    return f"{uid} ({first.modality or '?'}{label}, {len(headers)} image(s))"


# ---------------------------------------------------------------------------------------
# Ordering and checking a stack
# ---------------------------------------------------------------------------------------


def order_slices(headers: list[SliceHeader]) -> tuple[list[SliceHeader], float]:
    """Slices sorted along the slice normal and the slice spacing; raises DataError if inconsistent."""
    first = headers[0]
    where = first.path.parent
    for h in headers:
        if h.orientation is None or h.position is None or h.pixel_spacing is None:
            raise DataError(f"{h.path}: slice without ImagePositionPatient/ImageOrientationPatient/PixelSpacing")
    orientations = np.stack([h.orientation for h in headers])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        odd = next(h for h in headers if np.abs(h.orientation - first.orientation).max() > ORIENTATION_TOLERANCE)
        raise DataError(f"{where}: mixed slice orientations in one series "
                        f"({np.round(first.orientation, 3).tolist()} in {first.path.name}, "
                        f"{np.round(odd.orientation, 3).tolist()} in {odd.path.name})")
    for h in headers:
        if (h.rows, h.columns) != (first.rows, first.columns):
            raise DataError(f"{where}: slices of different sizes ({first.rows}x{first.columns} in {first.path.name}, "
                            f"{h.rows}x{h.columns} in {h.path.name})")
        if not np.allclose(h.pixel_spacing, first.pixel_spacing, rtol=1e-3):
            raise DataError(f"{where}: slices with different pixel spacing ({first.pixel_spacing} in "
                            f"{first.path.name}, {h.pixel_spacing} in {h.path.name})")

    normal = first.normal
    heights = np.array([float(h.position @ normal) for h in headers])
    order = np.argsort(heights, kind="stable")
    headers = [headers[i] for i in order]
    heights = heights[order]
    gaps = np.diff(heights)
    if len(gaps) == 0:
        raise DataError(f"{where}: a single slice is not a volume")
    duplicate = np.flatnonzero(gaps < 1e-3)
    if duplicate.size:
        i = int(duplicate[0])
        raise DataError(f"{where}: two slices at the same position {heights[i]:.2f} mm "
                        f"({headers[i].path.name}, {headers[i + 1].path.name})")
    spacing = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - spacing) > SPACING_TOLERANCE * spacing)
    if uneven.size:
        i = int(uneven[0])
        missing = int(round(gaps[i] / spacing)) - 1
        what = f"{missing} missing slice(s)" if missing >= 1 else "uneven slice spacing"
        raise DataError(f"{where}: {what}: gap of {gaps[i]:.2f} mm between {headers[i].path.name} and "
                        f"{headers[i + 1].path.name} at {heights[i]:.2f} mm along the slice normal, "
                        f"where the series spacing is {spacing:.2f} mm")
    positions = np.stack([h.position for h in headers])
    offsets = positions - positions[0] - np.outer(heights - heights[0], normal)
    if np.abs(offsets).max() > 0.05 * max(spacing, 1.0) + 0.01:
        raise DataError(f"{where}: slice positions drift sideways along the stack (gantry tilt / sheared "
                        f"acquisition), which this reader does not correct")
    return headers, spacing


# ---------------------------------------------------------------------------------------
# Pixels to an HU image
# ---------------------------------------------------------------------------------------


def read_slice_hu(header: SliceHeader) -> np.ndarray:
    """Pixel data of one slice in HU (RescaleSlope/Intercept applied), float32 ``[H, W]``."""
    import pydicom

    try:
        ds = pydicom.dcmread(header.path)
        pixels = ds.pixel_array
    except Exception as err:  # decoders raise many types; any of them makes this file unusable
        raise DataError(f"{header.path}: pixel data cannot be decoded "
                        f"({type(err).__name__}: {err}); a decoder plugin may be missing or the file is damaged") from err
    if pixels.shape != (header.rows, header.columns):
        raise DataError(f"{header.path}: pixel data has shape {pixels.shape}, expected {(header.rows, header.columns)}")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def read_series(headers: list[SliceHeader]):
    """An ordered, checked stack as a float32 SimpleITK image in HU with its DICOM geometry."""
    import SimpleITK as sitk

    ordered, slice_spacing = order_slices(headers)
    array = np.stack([read_slice_hu(h) for h in ordered])  # [D, H, W]
    first = ordered[0]
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    direction = np.stack([row_dir, col_dir, first.normal], axis=1)  # columns: x (i), y (j), z (k) axes
    image = sitk.GetImageFromArray(array)
    # PixelSpacing is (distance between rows, distance between columns) = (y, x).
    image.SetSpacing((first.pixel_spacing[1], first.pixel_spacing[0], slice_spacing))
    image.SetOrigin(tuple(float(v) for v in first.position))
    image.SetDirection(tuple(float(v) for v in direction.reshape(-1)))
    return image


def find_dicom_files(folder: str | Path) -> list[Path]:
    """Candidate DICOM files under ``folder``, recursively, in a stable order."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if is_dicom_candidate(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))
