"""Volumes in HU as DICOM CT series that PACS, 3D Slicer and clinical viewers open.

One file per axial slice, CT Image Storage, explicit VR little endian, int16 pixels with
Rescale Slope 1 / Intercept 0 (HU). The geometry comes from the ``Volume`` (ITK/LPS): Image
Orientation (Patient) is the first two direction columns, Image Position (Patient) the centre
of each slice's first voxel, Pixel Spacing ``[row spacing, column spacing]`` = ``[y, x]``.
A left-handed direction matrix (slice axis against row x column) is written as the same image
with the slice order reversed, because DICOM readers order slices along row x column.

Study, Series, Frame of Reference and SOP Instance UIDs are ``2.25.`` UIDs hashed from (key, index,
role), where the caller's key stands for everything that makes the image: a sample run's settings
(model weights, seed, sampler, steps, schedule, ...), a reconstruction's settings, measurement and
case. Writing the same image again gives the same UIDs; two images, or two slices, never share one.
No header field is taken from anywhere else: Patient Name and ID say the image is synthetic (or
converted) and name no person. Only a synthetic sample claims Patient Identity Removed: the pixels
of a converted volume or of a reconstruction come from an input that may show a real patient.

A series is written into a work folder (``scratch``, default beside ``folder``) and renamed into
place, so a write killed half-way never leaves a series that looks whole; the next write of the
same series removes what it left.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from prdit.data.volume import Volume
from prdit.errors import ConfigError, DataError
from prdit.visualization import CT_WINDOWS

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PATIENT_NAME = "SYNTHETIC^PRDIT"
CONVERTED_PATIENT_NAME = "ANONYMOUS^PRDIT"
WINDOWS = ("lung", "mediastinal")
"""Window presets in the header, the first one is what a viewer opens with."""
SLICE_FILE = "slice_{:05d}.dcm"
LO_MAX = 64  # characters in a DICOM LO (long string) value
HU_RANGE = (-32768, 32767)
"""HU an int16 CT slice with Rescale Slope 1 and Intercept 0 holds."""


def uid_key(*parts: object) -> str:
    """The key of a series' UIDs: SHA-256 of ``parts`` (JSON-ready settings, names) as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def series_uid(key: str, index: int, role: str) -> str:
    """A reproducible ``2.25.`` UID of one role (``study``, ``series``, ``frame``, ``slice 3``) of volume
    ``index`` of what ``key`` stands for (see :func:`uid_key`).

    ``2.25.`` followed by a name-based (SHA-1) UUID as an integer, as DICOM PS3.5 B.2 allows;
    pydicom's ``generate_uid(prefix=None)`` ignores its entropy sources and would give a random one.
    """
    name = "\x1f".join(["prdit", key, str(index), role])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def patient_id(model_digest: str, seed: int, index: int) -> str:
    """The synthetic Patient ID of a generated volume: ``PRDIT-<digest8>-<seed>-<index>``."""
    return f"PRDIT-{model_digest[:8]}-{seed}-{index}"


def converted_patient_id(key: str) -> str:
    """The Patient ID of a converted volume: ``PRDIT-CONVERTED-`` and 8 hex digits of its UID key."""
    return f"PRDIT-CONVERTED-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _lo(text: str) -> str:
    """A valid LO value: no backslash, at most 64 characters."""
    return text.replace("\\", "/")[:LO_MAX]


def _right_handed(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(array ``[D, H, W]``, origin, direction) of the same image with slice axis = row x column."""
    array = np.asarray(volume.array)
    direction = np.asarray(volume.direction, dtype=np.float64).reshape(3, 3)
    origin = np.asarray(volume.origin, dtype=np.float64)
    if np.linalg.det(direction) < 0:
        origin = origin + (array.shape[0] - 1) * volume.spacing[2] * direction[:, 2]
        direction = direction.copy()
        direction[:, 2] *= -1
        array = array[::-1]
    return array, origin, direction


def check_hu_range(array: np.ndarray, source: str | Path) -> None:
    """Raise a ``DataError`` naming ``source`` unless every voxel rounds to HU a CT slice holds (``HU_RANGE``)."""
    array = np.asarray(array)
    lo, hi = float(array.min()), float(array.max())
    if np.rint(lo) < HU_RANGE[0] or np.rint(hi) > HU_RANGE[1]:
        raise DataError(f"{source}: values from {lo:g} to {hi:g}, outside the {HU_RANGE[0]} to {HU_RANGE[1]} HU a "
                        f"DICOM CT series holds (int16, Rescale Slope 1); is the volume in HU? Rescale or clip it "
                        f"before writing it as DICOM")


def hu_int16(array: np.ndarray) -> np.ndarray:
    """HU rounded to the nearest integer as int16 (the range checked first, see :func:`check_hu_range`)."""
    return np.rint(np.asarray(array, dtype=np.float64)).astype(np.int16)


def write_dicom_series(volume: Volume, folder: str | Path, *, key: str, model_name: str | None, model_digest: str,
                       seed: int, index: int, overwrite: bool = False, created: datetime.datetime | None = None,
                       task: str | None = None, source_name: str | None = None,
                       scratch: str | Path | None = None) -> Path:
    """Write ``volume`` (HU, ``[D, H, W]``) as a CT series, one file per slice, into the new folder ``folder``.

    ``key`` (:func:`uid_key` of everything that made the image) and ``index`` give the UIDs.
    ``model_name`` None marks a converted volume that no model generated, ``source_name`` the name
    of its input file if the user keeps it (Patient ID and description); ``task`` marks the
    reconstruction of an inverse task (named in the description). The series is written into
    ``scratch`` (default: ``folder``'s parent) as ``.<name>.partial`` and renamed into place;
    an existing ``folder`` is an error unless ``overwrite``.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    import prdit

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise ConfigError(f"{folder} exists; choose another output folder or pass --overwrite to replace it")
    if np.asarray(volume.array).ndim != 3:
        raise DataError(f"a DICOM CT series needs a 3D volume, got shape {np.asarray(volume.array).shape}")
    check_hu_range(volume.array, folder)
    array, origin, direction = _right_handed(volume)
    pixels = hu_int16(array)
    sx, sy, sz = (float(s) for s in volume.spacing)
    created = created or datetime.datetime.now(datetime.timezone.utc)
    date, time = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    uid = lambda role: series_uid(key, index, role)  # noqa: E731
    synthetic = model_name is not None and task is None  # no input image: no patient behind the pixels
    if model_name is None:
        description = "CONVERTED by prdit" + (f" from {source_name}" if source_name else "")
        name, patient = CONVERTED_PATIENT_NAME, _lo(source_name) if source_name else converted_patient_id(key)
    elif task is not None:
        description = f"RECONSTRUCTION {task} {model_name} seed {seed} index {index}"
        name, patient = PATIENT_NAME, patient_id(model_digest, seed, index)
    else:
        description = f"SYNTHETIC {model_name} seed {seed} index {index}"
        name, patient = PATIENT_NAME, patient_id(model_digest, seed, index)
    normal = np.cross(direction[:, 0], direction[:, 1])

    base = pydicom.Dataset()
    base.SOPClassUID = CT_IMAGE_STORAGE
    base.InstanceCreationDate, base.InstanceCreationTime = date, time
    # Patient: no person named, no field carried over from an input.
    base.PatientName = name
    base.PatientID = patient
    base.PatientBirthDate = ""
    base.PatientSex = ""
    if synthetic:
        base.PatientIdentityRemoved = "YES"
        base.DeidentificationMethod = "no patient: generated by prdit from noise, no field carried over"
    # General Study
    base.StudyInstanceUID = uid("study")
    base.StudyDate, base.StudyTime = date, time
    base.ReferringPhysicianName = ""
    base.StudyID = f"{index}"[:16]
    base.AccessionNumber = ""
    base.StudyDescription = _lo(description)
    # General Series
    base.Modality = "CT"
    base.SeriesInstanceUID = uid("series")
    base.SeriesNumber = 1
    base.SeriesDate, base.SeriesTime = date, time
    base.SeriesDescription = _lo(description)
    base.PatientPosition = "HFS"
    base.Laterality = ""  # unpaired body part (the chest); dciodvfy wants the element present
    # Frame of Reference
    base.FrameOfReferenceUID = uid("frame")
    base.PositionReferenceIndicator = ""
    # General Equipment
    base.Manufacturer = "prdit"
    base.ManufacturerModelName = _lo(model_name or "converted volume")
    base.SoftwareVersions = prdit.__version__
    # General Image, CT Image
    base.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    base.AcquisitionNumber = 1
    base.ContentDate, base.ContentTime = date, time
    if model_name is not None:  # prdit made these pixels; a converted input's may carry burned-in text
        base.BurnedInAnnotation = "NO"
    base.KVP = ""
    base.RescaleIntercept = 0
    base.RescaleSlope = 1
    base.RescaleType = "HU"
    # Image Plane
    base.PixelSpacing = [f"{sy:.10g}", f"{sx:.10g}"]  # between rows (y), between columns (x)
    base.ImageOrientationPatient = [f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1])]
    base.SliceThickness = f"{sz:.10g}"
    base.SpacingBetweenSlices = f"{sz:.10g}"
    # Image Pixel
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = pixels.shape[1], pixels.shape[2]
    base.BitsAllocated = 16
    base.BitsStored = 16
    base.HighBit = 15
    base.PixelRepresentation = 1
    # VOI LUT: window presets
    base.WindowCenter = [f"{CT_WINDOWS[w][0]:g}" for w in WINDOWS]
    base.WindowWidth = [f"{CT_WINDOWS[w][1]:g}" for w in WINDOWS]
    base.WindowCenterWidthExplanation = [w.upper() for w in WINDOWS]

    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(scratch) if scratch is not None else folder.parent
    partial, old = scratch / f".{folder.name}.partial", scratch / f".{folder.name}.old"
    for leftover in (partial, old):  # of a write of this series that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for k in range(pixels.shape[0]):
            ds = pydicom.Dataset()
            ds.update(base)
            ds.SOPInstanceUID = uid(f"slice {k}")
            ds.InstanceNumber = k + 1
            position = origin + k * sz * direction[:, 2]
            ds.ImagePositionPatient = [f"{v:.10g}" for v in position]
            ds.SliceLocation = f"{float(position @ normal):.10g}"
            ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.ImplementationVersionName = f"PRDIT_{prdit.__version__}"[:16]
            pydicom.dcmwrite(partial / SLICE_FILE.format(k + 1), ds, enforce_file_format=True)
        if folder.exists():
            os.replace(folder, old)
            os.replace(partial, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def read_dicom_series(folder: str | Path) -> Volume:
    """The one CT series in ``folder`` as a float32 HU ``Volume``; raises DataError for anything else."""
    import SimpleITK as sitk

    from prdit.data.dicom import describe_series, find_dicom_files, read_series, scan_headers, series_rejection

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; a DICOM series is read from the folder of its slice files")
    files = find_dicom_files(folder)
    if not files:
        raise DataError(f"{folder}: no DICOM files (.dcm, .dicom, .ima or no suffix)")
    series, unreadable = scan_headers(files)
    if unreadable:
        path, reason = unreadable[0]
        raise DataError(f"{folder}: {len(unreadable)} file(s) are not readable DICOM, e.g. {reason}; "
                        f"remove them or pass the folder of one series")
    if len(series) > 1:
        listed = "; ".join(describe_series(uid, headers) for uid, headers in sorted(series.items()))
        raise DataError(f"{folder}: holds {len(series)} series ({listed}); pass a folder with exactly one series")
    (uid, headers), = series.items()
    reason = series_rejection(headers)
    if reason:
        raise DataError(f"{folder}: series {uid} is not a CT volume: {reason}")
    image = read_series(headers)
    return Volume(
        array=_as_int16_if_integral(sitk.GetArrayFromImage(image)),
        spacing=tuple(float(s) for s in image.GetSpacing()),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
    )


def _as_int16_if_integral(array: np.ndarray) -> np.ndarray:
    """int16 when every voxel is an integer in range (as scanner CT stores HU), else the array as it is."""
    if array.size and np.all(array == np.rint(array)) and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16)
    return array
