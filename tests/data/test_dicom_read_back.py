"""DICOM series folders are read wherever volumes are read: ``read_volume`` and ``list_volumes``."""

import numpy as np
import pytest

from prdit.data.dataset import list_volumes, split_volumes
from prdit.data.dicom_writer import write_dicom_series
from prdit.data.io import Volume, read_volume, write_volume
from prdit.errors import DataError


def _volume(seed: int) -> Volume:
    array = np.random.default_rng(seed).integers(-1000, 1000, size=(4, 6, 5)).astype(np.int16)
    return Volume(array=array, spacing=(0.7, 0.8, 2.5), origin=(-10.0, 5.0, 30.0))


def _series(folder, seed: int = 0):
    return write_dicom_series(_volume(seed), folder, key=f"run {seed}", model_name="test", model_digest="ab" * 32,
                              seed=seed, index=0)


def test_read_volume_reads_a_series_folder(tmp_path):
    folder = _series(tmp_path / "series")
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, _volume(0).array)
    np.testing.assert_allclose(volume.spacing, (0.7, 0.8, 2.5), atol=1e-6)


def test_read_volume_names_the_folder_when_it_holds_no_series(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no DICOM files"):
        read_volume(tmp_path / "empty")
    with pytest.raises(DataError, match="missing: no such file"):
        read_volume(tmp_path / "missing")


def test_list_volumes_takes_each_series_folder_as_one_volume(tmp_path):
    for i in range(2):
        _series(tmp_path / "dicom" / f"sample_{i:05d}", seed=i)
    write_volume(tmp_path / "dicom" / "other.nii.gz", _volume(2))
    assert list_volumes(tmp_path / "dicom") == [tmp_path / "dicom" / "other.nii.gz",
                                                tmp_path / "dicom" / "sample_00000",
                                                tmp_path / "dicom" / "sample_00001"]
    assert list_volumes(tmp_path / "dicom" / "sample_00001") == [tmp_path / "dicom" / "sample_00001"]


def test_list_volumes_lists_a_volume_written_in_both_formats_once(tmp_path):
    write_volume(tmp_path / "sample_00000.nii.gz", _volume(0))
    _series(tmp_path / "dicom" / "sample_00000")
    assert list_volumes(tmp_path) == [tmp_path / "sample_00000.nii.gz"]


def test_list_file_may_name_series_folders(tmp_path):
    for i in range(3):
        _series(tmp_path / "data" / f"case{i}", seed=i)
    train, val = split_volumes(tmp_path / "data", val_count=1, out_dir=tmp_path / "lists")
    listed = list_volumes(train) + list_volumes(val)
    assert sorted(listed) == [tmp_path / "lists" / ".." / "data" / f"case{i}" for i in range(3)]
    assert all(read_volume(p).array.shape == (4, 6, 5) for p in listed)
