"""Label maps as DICOM SEG: a round trip to the same map on the same grid, the references, dciodvfy."""

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from prdit.data.dicom_seg import read_dicom_seg, write_dicom_seg
from prdit.data.dicom_writer import read_dicom_series, uid_key, write_dicom_series
from prdit.data.io import Volume
from prdit.data.labels import PHANTOM_LABELS
from prdit.errors import DataError

KEY = uid_key({"seed": 3, "labels": "abc"})


def rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture
def ct(rng) -> Volume:
    """Anisotropic and rotated about z; [D, H, W] = [6, 9, 11]."""
    array = rng.integers(-1024, 1000, size=(6, 9, 11)).astype(np.int16)
    return Volume(array=array, spacing=(0.7, 0.9, 2.5), origin=(-10.5, 20.25, -100.0), direction=rotation_z(30))


@pytest.fixture
def label_map() -> np.ndarray:
    labels = np.zeros((6, 9, 11), dtype=np.uint8)
    labels[1:4, 2:6, 3:8] = PHANTOM_LABELS.index("heart")
    labels[4:, :, :3] = PHANTOM_LABELS.index("lung_left")
    labels[0, 0, 0] = PHANTOM_LABELS.index("aorta")
    return labels


def write_pair(ct: Volume, labels: np.ndarray, folder):
    series = write_dicom_series(ct, folder / "sample_00001", key=KEY, model_name="PRDiT-T/6/2",
                                model_digest="0" * 64, seed=3, index=1)
    seg = write_dicom_seg(labels, PHANTOM_LABELS, series, folder / "labels" / "sample_00001.dcm", key=KEY, index=1,
                          model_name="PRDiT-T/6/2")
    return series, seg


def test_a_seg_reads_back_to_the_same_map_on_the_ct_grid(ct, label_map, tmp_path):
    series, seg = write_pair(ct, label_map, tmp_path)
    back = read_dicom_seg(seg, PHANTOM_LABELS)
    image = read_dicom_series(series)
    np.testing.assert_array_equal(back.array, label_map)
    assert back.array.dtype == np.uint8
    np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-4)


def test_one_binary_segment_per_label_present_named_by_the_table_referencing_the_series(ct, label_map, tmp_path):
    import highdicom as hd

    series, seg_path = write_pair(ct, label_map, tmp_path)
    seg = hd.seg.segread(seg_path)
    assert seg.SegmentationType == "BINARY"
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["lung_left", "heart", "aorta"]  # index order
    slices = [pydicom.dcmread(p) for p in sorted(series.glob("*.dcm"))]
    assert seg.FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == slices[0].StudyInstanceUID
    assert seg.PatientID == slices[0].PatientID and seg.SeriesInstanceUID != slices[0].SeriesInstanceUID
    referenced = {item.ReferencedSOPInstanceUID for series_item in seg.ReferencedSeriesSequence
                  for item in series_item.ReferencedInstanceSequence}
    assert referenced == {s.SOPInstanceUID for s in slices}
    # highdicom reads the segments back as the map's structures, voxel for voxel (its slice axis runs against
    # the series' row x column normal here, the order of read_dicom_seg is the series')
    heart = seg.get_volume(segment_numbers=[2])
    assert np.linalg.det(heart.affine[:3, :3][:, ::-1]) < 0
    np.testing.assert_array_equal(heart.array[::-1, ..., 0] > 0, label_map == PHANTOM_LABELS.index("heart"))
    # the same map written again has the same UIDs
    again = write_dicom_seg(label_map, PHANTOM_LABELS, series, tmp_path / "again.dcm", key=KEY, index=1)
    assert pydicom.dcmread(again).SOPInstanceUID == seg.SOPInstanceUID


def test_a_map_off_the_series_grid_or_a_segment_the_table_does_not_name_is_refused(ct, label_map, tmp_path):
    series, seg = write_pair(ct, label_map, tmp_path)
    with pytest.raises(DataError, match="other.dcm.*grid"):
        write_dicom_seg(label_map[1:], PHANTOM_LABELS, series, tmp_path / "other.dcm", key=KEY, index=1)
    with pytest.raises(DataError, match="sample_00001.dcm.*'lung_left'"):
        read_dicom_seg(seg, ("background", "heart", "aorta"))
    with pytest.raises(DataError, match="not a readable DICOM SEG"):
        read_dicom_seg(next(series.glob("*.dcm")), PHANTOM_LABELS)


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (dicom3tools) is not on PATH: apt-get install dicom3tools")
def test_dciodvfy_reports_no_errors(ct, label_map, tmp_path):
    _, seg = write_pair(ct, label_map, tmp_path)
    report = subprocess.run(["dciodvfy", str(seg)], capture_output=True, text=True)
    text = report.stdout + report.stderr
    assert "Segmentation" in text and "Error" not in text, text
