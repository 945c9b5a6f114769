"""RAD-ChestCT files the tests damage themselves: each is refused by name, never as an unexpected error."""

import numpy as np
import pytest

from prdit.data.rad_chestct import preprocess_rad_chestct, read_rad_chestct
from prdit.errors import DataError


def _scan(path) -> bytes:
    ct = np.random.default_rng(0).integers(-1000, 1000, size=(12, 16, 16)).astype(np.int16)
    np.savez_compressed(path, ct=ct)
    return path.read_bytes()


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 0.9, 0.99])
def test_truncated_npz_is_a_data_error_naming_the_file(tmp_path, fraction):
    path = tmp_path / "trn00001.npz"
    data = _scan(path)
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(DataError, match="trn00001[.]npz"):
        read_rad_chestct(path)


def test_damaged_deflate_stream_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "trn00001.npz"
    data = bytearray(_scan(path))
    start = 120  # inside the compressed 'ct' member, past the zip headers
    data[start:start + 64] = bytes(range(64))
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="trn00001[.]npz"):
        read_rad_chestct(path)


def test_preprocessing_records_a_truncated_file_by_name(tmp_path):
    src = tmp_path / "rad"
    src.mkdir()
    _scan(src / "trn00001.npz")
    data = _scan(src / "trn00002.npz")
    (src / "trn00002.npz").write_bytes(data[: len(data) // 2])
    results = {r.case: r for r in preprocess_rad_chestct(src, tmp_path / "out", size=16)}
    assert results["trn00001"].status == "done"
    assert results["trn00002"].status == "failed"
    assert "trn00002.npz" in results["trn00002"].reason
    assert "truncated or corrupt" in results["trn00002"].reason
