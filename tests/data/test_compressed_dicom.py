"""Real CT slices from the pydicom-data package, in compressed transfer syntaxes.

The files ship inside the package (no download). They show that the installed decoder
plugins read what archives contain: JPEG 2000, JPEG lossless, JPEG-LS, RLE.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from prdit.data.dicom import find_dicom_files, read_header, read_series, read_slice_hu, scan_headers, select_series


def _data_folder() -> Path:
    spec = importlib.util.find_spec("data_store")
    if spec is None or spec.origin is None:
        pytest.skip("pydicom-data is not installed (pip install -e '.[dev]')")
    folder = Path(spec.origin).parent / "data"
    if not (folder / "693_J2KR.dcm").is_file():
        pytest.skip("pydicom-data is installed without its files")
    return folder


@pytest.fixture(scope="module")
def data():
    return _data_folder()


def test_jpeg2000_ct_slice_decodes_to_the_uncompressed_hu(data):
    compressed, plain = read_header(data / "693_J2KR.dcm"), read_header(data / "693_UNCR.dcm")
    import pydicom

    assert pydicom.dcmread(compressed.path).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    hu = read_slice_hu(compressed)
    assert hu.shape == (512, 512)
    np.testing.assert_array_equal(hu, read_slice_hu(plain))
    # Slope 1, intercept -1024: the image holds air and soft tissue at their HU.
    assert hu.min() < -1000 and np.percentile(hu, 99) > 0


@pytest.mark.parametrize("name,uncompressed", [
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("emri_small_RLE.dcm", "emri_small.dcm"),
])
def test_lossless_syntaxes_decode_exactly(data, name, uncompressed):
    import pydicom

    np.testing.assert_array_equal(pydicom.dcmread(data / name).pixel_array,
                                  pydicom.dcmread(data / uncompressed).pixel_array)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("name", ["bad_sequence.dcm", "explicit_VR-UN.dcm"])
def test_other_compressed_ct_slices_decode(data, name):
    header = read_header(data / name)
    assert header.modality == "CT"
    hu = read_slice_hu(header)
    assert hu.shape == (header.rows, header.columns) and np.isfinite(hu).all() and hu.std() > 10


def test_series_of_jpeg2000_slices_is_stacked(data, tmp_path):
    """A whole compressed series: slices copied from the real JPEG 2000 file at new positions."""
    import pydicom
    from pydicom.uid import generate_uid

    series_uid = generate_uid()
    positions = [40.0, 47.5, 45.0, 42.5]  # shuffled, 2.5 mm apart
    for n, z in enumerate(positions):
        ds = pydicom.dcmread(data / "693_J2KR.dcm")
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [-122.5, -112.4, z]
        ds.save_as(tmp_path / f"{n}.dcm")
    series, unreadable = scan_headers(find_dicom_files(tmp_path))
    assert not unreadable
    assert select_series(series)[0] == series_uid
    image = read_series(series[series_uid])
    assert image.GetSize() == (512, 512, 4)
    assert image.GetSpacing() == pytest.approx((0.478516, 0.478516, 2.5))
    assert image.GetOrigin() == pytest.approx((-122.5, -112.4, 40.0))
    reference = read_slice_hu(read_header(data / "693_UNCR.dcm"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[2], reference)
