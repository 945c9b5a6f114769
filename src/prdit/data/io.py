"""Volume file I/O that never loses the geometry: NIfTI/NRRD/MHA through SimpleITK, npz/npy.

Arrays are ``[D, H, W]`` = (z, y, x), the SimpleITK order. Geometry is kept in ITK terms
(spacing and origin in mm, direction cosines, LPS world), and ``Volume.affine`` gives the
nibabel-style RAS affine of the same image for users who want one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prdit.errors import DataError

ITK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
NUMPY_SUFFIXES = (".npz", ".npy")
VOLUME_SUFFIXES = ITK_SUFFIXES + NUMPY_SUFFIXES


@dataclass
class Volume:
    """A 3D image: ``array`` ``[D, H, W]`` plus its geometry (spacing/origin in x, y, z order)."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel (i=x, j=y, k=z) to RAS-mm affine, as nibabel reports it."""
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        lps[:3, 3] = self.origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def volume_suffix(path: str | Path) -> str:
    """The recognised suffix of a volume file name, or '' if none."""
    name = str(path).lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), "")


def is_volume_file(path: str | Path) -> bool:
    """True for file names this module can read."""
    return volume_suffix(path) != ""


def read_volume(path: str | Path, npz_key: str | None = None) -> Volume:
    """Read a volume file; ``.npz`` uses ``npz_key`` (default: ``ct``, else its only array)."""
    path = Path(path)
    suffix = volume_suffix(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if suffix in ITK_SUFFIXES:
        import SimpleITK as sitk

        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as err:
            raise DataError(f"{path}: cannot be read as an image ({str(err).strip().splitlines()[-1]})") from err
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise DataError(f"{path}: expected a 3D single-channel image, got {image.GetDimension()}D "
                            f"with {image.GetNumberOfComponentsPerPixel()} component(s)")
        return Volume(
            array=sitk.GetArrayFromImage(image),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
        )
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataError(f"{path}: not a readable .npy array ({err})") from err
        return Volume(array=_check_3d(array, path))
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                key = npz_key or ("ct" if "ct" in keys else (keys[0] if len(keys) == 1 else None))
                if key is None or key not in keys:
                    raise DataError(f"{path}: no array '{npz_key or 'ct'}' in the archive (it holds {keys})")
                array = archive[key]
                spacing = tuple(float(s) for s in archive["spacing"]) if "spacing" in keys else (1.0, 1.0, 1.0)
        except (ValueError, OSError) as err:
            raise DataError(f"{path}: not a readable .npz archive ({err})") from err
        return Volume(array=_check_3d(array, path), spacing=spacing)
    raise DataError(f"{path}: unknown volume format; expected one of {', '.join(VOLUME_SUFFIXES)}")


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


def _check_3d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3D array, got shape {tuple(array.shape)}")
    return array
