import numpy as np
import pytest
import SimpleITK as sitk
from dicom_fixtures import Stack, hu_field, write_ct_series, write_localizer, write_radiograph

from prdit.data.dicom import find_dicom_files, order_slices, read_series, scan_headers, select_series
from prdit.data.preprocess import to_canonical_grid
from prdit.errors import DataError

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
PRONE = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # rows run to patient right, columns anterior
FLIPPED = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # slice normal points to the feet


def _series(folder):
    return scan_headers(find_dicom_files(folder))


def test_selects_the_diagnostic_ct_series_and_records_the_rest(tmp_path, rng):
    ct = write_ct_series(tmp_path / "study" / "ct", Stack(), rng)
    thick = write_ct_series(tmp_path / "study" / "thick", Stack(slices=6, slice_spacing=5.0), rng)
    scout = write_localizer(tmp_path / "study" / "scout", images=30)
    radiograph = write_radiograph(tmp_path / "cr", images=40)
    (tmp_path / "study" / "ct" / "IMG9999.dcm").write_bytes(b"\x00not dicom at all" * 20)

    series, unreadable = _series(tmp_path)
    assert [p.name for p, _ in unreadable] == ["IMG9999.dcm"]
    chosen, passed_over = select_series(series)
    assert chosen == ct
    assert "not CT" in passed_over[radiograph]
    assert "localiser" in passed_over[scout]
    assert "fewer or thicker" in passed_over[thick]


def test_equal_counts_prefer_thinner_slices(tmp_path, rng):
    write_ct_series(tmp_path / "a", Stack(slice_spacing=5.0), rng)
    thin = write_ct_series(tmp_path / "b", Stack(slice_spacing=1.25), rng)
    assert select_series(_series(tmp_path)[0])[0] == thin


def test_non_axial_series_is_not_chosen(tmp_path, rng):
    sagittal = Stack(orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    uid = write_ct_series(tmp_path / "sag", sagittal, rng)
    chosen, passed_over = select_series(_series(tmp_path)[0])
    assert chosen is None and "not an axial stack" in passed_over[uid]


@pytest.mark.parametrize("orientation", [AXIAL, PRONE, FLIPPED], ids=["supine", "prone", "normal-to-feet"])
def test_slices_ordered_by_position_with_hu_and_affine(tmp_path, rng, orientation):
    stack = Stack(orientation=orientation, first_position=(-10.0, -10.0, 100.0) if orientation == AXIAL else (6.0, 5.0, 130.0))
    uid = write_ct_series(tmp_path / "ct", stack, rng)
    series, _ = _series(tmp_path)
    ordered, spacing = order_slices(series[uid])
    assert spacing == pytest.approx(2.5)
    # File names and InstanceNumbers are shuffled; the order must follow the geometry.
    np.testing.assert_allclose([h.position for h in ordered], [stack.position(k) for k in range(stack.slices)])

    image = read_series(series[uid])
    assert image.GetSize() == (24, 20, 12)
    assert image.GetSpacing() == pytest.approx((0.7, 0.8, 2.5))
    assert image.GetOrigin() == pytest.approx(tuple(stack.position(0)))
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    np.testing.assert_allclose(np.array(image.GetDirection()).reshape(3, 3), np.stack([row, col, np.cross(row, col)], 1))
    # HU after each slice's own slope/intercept: every voxel holds the field at its world point.
    hu = sitk.GetArrayFromImage(image)
    expected = np.stack([hu_field(*stack.world(k)) for k in range(stack.slices)])
    assert np.abs(hu - expected).max() <= 1.0  # stored integers with slope 2 round by up to 1 HU
    k, j, i = 7, 3, 11
    world = image.TransformIndexToPhysicalPoint((i, j, k))
    assert hu[k, j, i] == pytest.approx(hu_field(*world), abs=1.0)


@pytest.mark.parametrize("orientation", [AXIAL, PRONE, FLIPPED], ids=["supine", "prone", "normal-to-feet"])
def test_canonical_grid_keeps_world_geometry(tmp_path, rng, orientation):
    stack = Stack(orientation=orientation, first_position=(-10.0, -10.0, 100.0) if orientation == AXIAL else (6.0, 5.0, 130.0))
    uid = write_ct_series(tmp_path / "ct", stack, rng)
    image = read_series(_series(tmp_path)[0][uid])
    volume = to_canonical_grid(image, size=40, spacing=1.0)
    assert volume.array.shape == (40, 40, 40) and volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.direction, np.eye(3))
    assert volume.spacing == (1.0, 1.0, 1.0)
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([11.5, 9.5, 5.5]))
    np.testing.assert_allclose(np.asarray(volume.origin) + 19.5, centre, atol=1e-6)

    k, j, i = np.meshgrid(np.arange(40), np.arange(40), np.arange(40), indexing="ij")
    x, y, z = (np.asarray(volume.origin)[:, None, None, None] + np.stack([i, j, k]).astype(float))
    corners = np.array([image.TransformIndexToPhysicalPoint(c) for c in [(0, 0, 0), (23, 19, 11)]])
    lo, hi = corners.min(0), corners.max(0)
    inside = (x > lo[0] + 2) & (x < hi[0] - 2) & (y > lo[1] + 2) & (y < hi[1] - 2) & (z > lo[2] + 3) & (z < hi[2] - 3)
    outside = (x < lo[0] - 1) | (x > hi[0] + 1) | (y < lo[1] - 1) | (y > hi[1] + 1) | (z < lo[2] - 3) | (z > hi[2] + 3)
    assert inside.sum() > 500
    error = np.abs(volume.array[inside] - hu_field(x, y, z)[inside])
    assert error.max() <= 2.0
    assert (volume.array[outside] == -1000).all()  # padded with air


def test_missing_slice_is_reported(tmp_path, rng):
    uid = write_ct_series(tmp_path / "ct", Stack(), rng, skip=(6,))
    with pytest.raises(DataError, match=r"1 missing slice\(s\): gap of 5.00 mm"):
        read_series(_series(tmp_path)[0][uid])


def test_mixed_orientations_are_reported(tmp_path, rng):
    uid = write_ct_series(tmp_path / "ct", Stack(), rng)
    import pydicom

    odd = sorted((tmp_path / "ct").glob("*.dcm"))[4]
    ds = pydicom.dcmread(odd)
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.96, -0.28]
    ds.save_as(odd)
    with pytest.raises(DataError, match="mixed slice orientations") as info:
        read_series(_series(tmp_path)[0][uid])
    assert odd.name in str(info.value)


def test_duplicate_positions_and_damaged_pixels_name_the_file(tmp_path, rng):
    import pydicom

    uid = write_ct_series(tmp_path / "ct", Stack(), rng)
    files = sorted((tmp_path / "ct").glob("*.dcm"))
    ds = pydicom.dcmread(files[0])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(files[0])
    with pytest.raises(DataError, match="pixel data") as info:
        read_series(_series(tmp_path)[0][uid])
    assert files[0].name in str(info.value)

    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = list(pydicom.dcmread(files[3]).ImagePositionPatient)
    ds.save_as(files[2])
    with pytest.raises(DataError, match="same position"):
        read_series(_series(tmp_path)[0][uid])
