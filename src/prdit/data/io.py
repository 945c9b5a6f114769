"""Volume file I/O that never loses the geometry and never reads a damaged file silently.

NIfTI is read with nibabel: SimpleITK's reader returns zeros for the missing part of a
truncated file (a half-copied data set) and turns NaN into 0, while nibabel raises on a short
or corrupt gzip stream and keeps NaN. NRRD/MHA go through SimpleITK, which does raise on
truncation; ``.npz``/``.npy`` through numpy. Every reader ends in one check: a 3D array of
finite numbers, or a ``DataError`` naming the file.

Arrays are ``[D, H, W]`` = (z, y, x), the SimpleITK order. Geometry is kept in ITK terms
(spacing and origin in mm, direction cosines, LPS world), and ``Volume.affine`` gives the
nibabel-style RAS affine of the same image for users who want one. ``Volume`` lives in
:mod:`prdit.data.volume`, below both this module and the DICOM writer; it is importable from here too.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path

import numpy as np

from prdit.data.dicom_writer import read_dicom_series
from prdit.data.volume import Volume
from prdit.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = NIFTI_SUFFIXES + (".nrrd", ".mha", ".mhd")
NUMPY_SUFFIXES = (".npz", ".npy")
VOLUME_SUFFIXES = ITK_SUFFIXES + NUMPY_SUFFIXES
NPZ_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)
"""What numpy raises for a truncated or corrupt ``.npz`` (a cut zip directory, a damaged deflate stream)."""


def volume_suffix(path: str | Path) -> str:
    """The recognised suffix of a volume file name, or '' if none."""
    name = str(path).lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), "")


def is_volume_file(path: str | Path) -> bool:
    """True for file names this module can read."""
    return volume_suffix(path) != ""


def read_volume(path: str | Path, npz_key: str | None = None) -> Volume:
    """Read a volume file, or a folder holding one DICOM CT series; ``.npz`` uses ``npz_key``
    (default: ``ct``, else its only array).

    Raises ``DataError`` naming the file or folder if it is missing, truncated or corrupt, not 3D,
    holds NaN or infinite voxels, or (a folder) holds no single CT series.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if path.is_dir():
        volume = read_dicom_series(path)
    elif not path.is_file():
        raise DataError(f"{path}: no such file")
    elif suffix in NIFTI_SUFFIXES:
        volume = _read_nifti(path)
    elif suffix in ITK_SUFFIXES:
        volume = _read_itk(path)
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable .npy array; truncated or corrupt? ({err})") from err
        volume = Volume(array=array)
    elif suffix == ".npz":
        volume = _read_npz(path, npz_key)
    else:
        raise DataError(f"{path}: unknown volume format; expected one of {', '.join(VOLUME_SUFFIXES)}")
    volume.array = _checked_array(volume.array, path)
    return volume


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        image = nib.load(str(path), mmap=False)
        array = np.asanyarray(image.dataobj)  # applies scl_slope/scl_inter as ITK does
    except Exception as err:  # nibabel raises many types (EOFError, zlib.error, ImageFileError, ...)
        raise DataError(f"{path}: cannot be read as NIfTI; the file is truncated or corrupt "
                        f"({type(err).__name__}: {err})") from err
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3D single-channel image, got shape {array.shape} (x, y, z, ...)")
    if array.dtype == np.float64 and image.get_data_dtype().kind != "f":
        array = array.astype(np.float32)  # scaled integers: float32 as SimpleITK returns them
    # nibabel's affine maps (i, j, k) to RAS; ITK keeps LPS with spacing and direction apart.
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(image.affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return Volume(
        array=np.ascontiguousarray(array.transpose(2, 1, 0)),
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(o) for o in lps[:3, 3]),
        direction=lps[:3, :3] / spacing,
    )


def _read_itk(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1]
        raise DataError(f"{path}: cannot be read as an image; the file is truncated or corrupt ({reason})") from err
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: expected a 3D single-channel image, got {image.GetDimension()}D "
                        f"with {image.GetNumberOfComponentsPerPixel()} component(s)")
    return Volume(
        array=sitk.GetArrayFromImage(image),
        spacing=tuple(float(s) for s in image.GetSpacing()),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
    )


def _read_npz(path: Path, npz_key: str | None) -> Volume:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            key = npz_key or ("ct" if "ct" in keys else (keys[0] if len(keys) == 1 else None))
            if key is None or key not in keys:
                raise DataError(f"{path}: no array '{npz_key or 'ct'}' in the archive (it holds {keys})")
            array = archive[key]
            spacing = tuple(float(s) for s in archive["spacing"]) if "spacing" in keys else (1.0, 1.0, 1.0)
    except NPZ_READ_ERRORS as err:
        raise DataError(f"{path}: not a readable .npz archive; truncated or corrupt? ({err})") from err
    return Volume(array=array, spacing=spacing)


def write_volume(path: str | Path, volume: Volume) -> Path:
    """Write a volume (NIfTI/NRRD/MHA keep the geometry; ``.npy``/``.npz`` keep the array)."""
    path = Path(path)
    suffix = volume_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in ITK_SUFFIXES:
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
        image.SetSpacing([float(s) for s in volume.spacing])
        image.SetOrigin([float(o) for o in volume.origin])
        image.SetDirection([float(d) for d in np.asarray(volume.direction).reshape(-1)])
        sitk.WriteImage(image, str(path), useCompression=suffix == ".nii.gz")
    elif suffix == ".npy":
        np.save(path, volume.array)
    elif suffix == ".npz":
        np.savez_compressed(path, ct=volume.array, spacing=np.asarray(volume.spacing))
    else:
        raise DataError(f"{path}: unknown volume format; expected one of {', '.join(VOLUME_SUFFIXES)}")
    return path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (identifies weights and volume files)."""
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checked_array(array: np.ndarray, path: Path) -> np.ndarray:
    """The array as ``[D, H, W]`` numbers, all finite, or a ``DataError`` naming ``path``."""
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3D array, got shape {tuple(array.shape)}")
    if array.dtype.kind not in "fiu":
        raise DataError(f"{path}: voxel type {array.dtype} is not numeric; expected HU as integers or floats")
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            raise DataError(f"{path}: {int(finite.size - finite.sum())} voxel(s) are NaN or infinite")
    return array
