"""Files the tests corrupt themselves: every reader must refuse them by name, never read them as zeros."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from prdit.data.io import VOLUME_SUFFIXES, Volume, read_volume, write_volume
from prdit.errors import DataError


def _volume(array: np.ndarray | None = None) -> Volume:
    angle = np.deg2rad(15.0)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    if array is None:
        array = (np.random.default_rng(0).normal(size=(12, 13, 14)) * 300.0).astype(np.float32)
    return Volume(array=array, spacing=(0.7, 0.9, 2.0), origin=(-5.0, 12.5, 40.0), direction=direction)


def _truncate(path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _data_file(path):
    """The file that holds the voxels (the .raw beside an .mhd header)."""
    if path.name.endswith(".mhd"):
        return path.with_suffix(".raw")
    return path


@pytest.mark.parametrize("suffix", VOLUME_SUFFIXES)
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9, 0.99])
def test_truncated_file_is_an_error_naming_it(tmp_path, suffix, fraction):
    path = write_volume(tmp_path / f"scan{suffix}", _volume())
    _truncate(_data_file(path), fraction)
    with pytest.raises(DataError, match=f"scan{suffix.replace('.', '[.]')}"):
        read_volume(path)


@pytest.mark.parametrize("suffix", VOLUME_SUFFIXES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_an_error(tmp_path, suffix, bad):
    array = _volume().array.copy()
    array[3, 4, 5] = bad
    array[7, 1, 2] = bad
    path = write_volume(tmp_path / f"scan{suffix}", _volume(array))
    with pytest.raises(DataError, match=r"scan.*2 voxel\(s\) are NaN or infinite"):
        read_volume(path)


def test_corrupt_gzip_stream_is_an_error(tmp_path):
    path = write_volume(tmp_path / "scan.nii.gz", _volume())
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # damage the deflate stream, keep the length
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="scan.nii.gz"):
        read_volume(path)


@pytest.mark.parametrize("shape", [(12, 13), (2, 12, 13, 14)])
def test_wrong_dimensionality_is_an_error(tmp_path, shape):
    array = np.zeros(shape[::-1], np.float32)  # nibabel order (x, y, z, ...)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    with pytest.raises(DataError, match="scan.nii.gz.*3D"):
        read_volume(path)
    np.save(tmp_path / "scan.npy", np.zeros(shape, np.float32))
    with pytest.raises(DataError, match="scan.npy.*3D"):
        read_volume(tmp_path / "scan.npy")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_geometry_equals_simpleitk_reading(tmp_path, suffix):
    """The NIfTI reader keeps exactly the geometry (and values) SimpleITK reports for the same file."""
    import SimpleITK as sitk

    written = [write_volume(tmp_path / f"itk{suffix}", _volume())]
    # A file written by nibabel, with scaled int16 data and only a qform.
    affine = np.array([[-0.8, 0.1, 0.0, 20.0], [-0.1, -0.8, 0.0, -30.0], [0.0, 0.0, 2.5, 7.0], [0, 0, 0, 1]])
    image = nib.Nifti1Image(np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8), None)
    image.set_qform(affine, code=1)
    image.header.set_slope_inter(0.5, -1024.0)
    nib.save(image, tmp_path / f"nib{suffix}")
    written.append(tmp_path / f"nib{suffix}")
    for path in written:
        ours = read_volume(path)
        itk = sitk.ReadImage(str(path))
        np.testing.assert_array_equal(ours.array, sitk.GetArrayFromImage(itk).astype(ours.array.dtype))
        np.testing.assert_allclose(ours.spacing, itk.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(ours.origin, itk.GetOrigin(), atol=1e-5)
        np.testing.assert_allclose(ours.direction.reshape(-1), itk.GetDirection(), atol=1e-5)


def test_integer_nifti_keeps_its_type(tmp_path):
    path = write_volume(tmp_path / "hu.nii.gz", Volume(np.full((4, 5, 6), -1000, np.int16)))
    assert read_volume(path).array.dtype == np.int16


def test_plain_gzip_of_garbage_is_an_error(tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 400))
    with pytest.raises(DataError, match="scan.nii.gz"):
        read_volume(path)


def test_corrupt_npz_deflate_stream_is_an_error(tmp_path):
    path = write_volume(tmp_path / "scan.npz", _volume())
    data = bytearray(path.read_bytes())
    data[120:184] = bytes(range(64))  # damage the compressed 'ct' member, keep the zip directory
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="scan.npz"):
        read_volume(path)
