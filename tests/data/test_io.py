import nibabel as nib
import numpy as np
import pytest

from prdit.data.io import Volume, read_volume, write_volume
from prdit.errors import DataError


def _oblique_volume() -> Volume:
    angle = np.deg2rad(20.0)
    # Rotated about z and mirrored in y: a proper orthonormal direction that is not the identity.
    direction = np.array([[np.cos(angle), np.sin(angle), 0.0], [np.sin(angle), -np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    array = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7) - 100.0
    return Volume(array=array, spacing=(0.7, 0.8, 2.5), origin=(-12.0, 30.5, 101.25), direction=direction)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_round_trip_keeps_array_spacing_origin_orientation(tmp_path, suffix):
    volume = _oblique_volume()
    back = read_volume(write_volume(tmp_path / f"v{suffix}", volume))
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-6)


def test_nifti_affine_seen_by_nibabel_is_the_ras_affine(tmp_path):
    volume = _oblique_volume()
    path = write_volume(tmp_path / "v.nii.gz", volume)
    image = nib.load(path)
    np.testing.assert_allclose(image.affine, volume.affine, atol=1e-4)
    # nibabel indexes (x, y, z); ours is [z, y, x].
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), volume.array)
    # One voxel by hand: index (i, j, k) = (2, 3, 4) -> LPS world -> RAS.
    lps = np.asarray(volume.origin) + volume.direction @ (np.array([2, 3, 4]) * np.asarray(volume.spacing))
    np.testing.assert_allclose(image.affine @ [2, 3, 4, 1], [-lps[0], -lps[1], lps[2], 1.0], atol=1e-4)


def test_npz_keeps_spacing_and_bad_files_raise(tmp_path):
    volume = Volume(array=np.zeros((4, 4, 4), np.int16), spacing=(0.8, 0.8, 0.8))
    assert read_volume(write_volume(tmp_path / "v.npz", volume)).spacing == pytest.approx((0.8, 0.8, 0.8))
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(DataError, match="junk.nii.gz"):
        read_volume(tmp_path / "junk.nii.gz")
    with pytest.raises(DataError, match="no such file"):
        read_volume(tmp_path / "missing.npy")
