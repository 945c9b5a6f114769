"""DICOM files written with pydicom from a known geometry, for the data tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def hu_field(x, y, z):
    """The HU value the synthetic scans hold at world point (x, y, z) mm (LPS): linear, so
    linear interpolation reproduces it exactly."""
    return -500.0 + 10.0 * (x + 10.0) + 5.0 * (y + 10.0) + 4.0 * (z - 100.0)


@dataclass
class Stack:
    """Geometry of a synthetic axial stack."""

    rows: int = 20
    columns: int = 24
    pixel_spacing: tuple[float, float] = (0.8, 0.7)  # between rows (y), between columns (x)
    slice_spacing: float = 2.5
    slices: int = 12
    first_position: tuple[float, float, float] = (-10.0, -10.0, 100.0)
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

    def position(self, k: int) -> np.ndarray:
        row_dir, col_dir = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        normal = np.cross(row_dir, col_dir)
        return np.array(self.first_position) + k * self.slice_spacing * normal

    def world(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates of every pixel of slice k, arrays [rows, columns]."""
        row_dir, col_dir = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        j, i = np.meshgrid(np.arange(self.rows), np.arange(self.columns), indexing="ij")
        p = (self.position(k)[:, None, None] + row_dir[:, None, None] * i * self.pixel_spacing[1]
             + col_dir[:, None, None] * j * self.pixel_spacing[0])
        return p[0], p[1], p[2]


def make_dataset(series_uid: str, study_uid: str, modality: str = "CT", sop_class: str = CTImageStorage) -> Dataset:
    """A minimal valid DICOM dataset with file meta information."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = "TEST"
    ds.Modality = modality
    return ds


def set_pixels(ds: Dataset, stored: np.ndarray) -> None:
    """Attach unsigned 16-bit pixel data."""
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype("<u2").tobytes()


def write_ct_series(
    folder: Path, stack: Stack, rng: np.random.Generator, series_uid: str | None = None,
    study_uid: str = "1.2.3.4", skip: tuple[int, ...] = (), description: str = "CHEST",
) -> str:
    """Write an axial CT series whose HU follow ``hu_field``; file names and InstanceNumbers are shuffled."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    names = rng.permutation(stack.slices)
    instance_numbers = rng.permutation(stack.slices) + 1
    for k in range(stack.slices):
        if k in skip:
            continue
        ds = make_dataset(series_uid, study_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDescription = description
        ds.InstanceNumber = int(instance_numbers[k])
        ds.ImagePositionPatient = [float(v) for v in stack.position(k)]
        ds.ImageOrientationPatient = list(stack.orientation)
        ds.PixelSpacing = list(stack.pixel_spacing)
        ds.SliceThickness = stack.slice_spacing
        # Different rescale parameters per slice: the reader must apply each slice's own.
        slope, intercept = (1.0, -1024.0) if k % 2 else (2.0, -2048.0)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        hu = hu_field(*stack.world(k))
        set_pixels(ds, np.rint((hu - intercept) / slope))
        ds.save_as(folder / f"IMG{int(names[k]):04d}.dcm", enforce_file_format=True)
    return series_uid


def write_localizer(folder: Path, study_uid: str = "1.2.3.4", images: int = 3) -> str:
    """A CT scout: Modality CT, ImageType LOCALIZER, coronal."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for n in range(images):
        ds = make_dataset(uid, study_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImagePositionPatient = [-100.0, 0.0, 200.0 - n]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        set_pixels(ds, np.full((16, 16), 1000))
        ds.save_as(folder / f"scout{n}.dcm", enforce_file_format=True)
    return uid


def write_radiograph(folder: Path, study_uid: str = "9.9.9", images: int = 40) -> str:
    """A CR series (chest radiographs) with many images but no CT geometry."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for n in range(images):
        ds = make_dataset(uid, study_uid, modality="CR", sop_class=CR_IMAGE_STORAGE)
        set_pixels(ds, np.full((8, 8), 100 + n))
        ds.save_as(folder / f"cr{n}.dcm", enforce_file_format=True)
    return uid
