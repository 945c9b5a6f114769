import json
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.dicom_writer import CT_IMAGE_STORAGE, read_dicom_series, write_dicom_series
from prdit.data.io import Volume, read_volume, write_volume
from prdit.errors import ConfigError, DataError

DIGEST = "0123456789abcdef" * 4


def rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture
def volume(rng) -> Volume:
    """Anisotropic, rotated about z, HU with values beyond the usual window; [D, H, W] = [6, 9, 11]."""
    array = rng.integers(-1024, 3072, size=(6, 9, 11)).astype(np.int16)
    array[0, 0, 0], array[-1, -1, -1] = -32768, 32767
    return Volume(array=array, spacing=(0.7, 0.9, 2.5), origin=(-10.5, 20.25, -100.0), direction=rotation_z(30))


def write(volume, folder, **kwargs):
    args = dict(model_name="PRDiT-T/6/2", model_digest=DIGEST, seed=3, index=1)
    return write_dicom_series(volume, folder, **{**args, **kwargs})


def read_sitk_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def headers(folder):
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def assert_same_image(image: sitk.Image, volume: Volume):
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.array)
    np.testing.assert_allclose(image.GetSpacing(), volume.spacing, atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), volume.origin, atol=1e-4)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), volume.direction, atol=1e-4)


def test_nifti_to_dicom_series_reads_back_in_simpleitk_with_the_same_hu_and_geometry(volume, tmp_path):
    write_volume(tmp_path / "ct.nii.gz", volume)
    folder = write(read_volume(tmp_path / "ct.nii.gz"), tmp_path / "series")
    assert len(list(folder.glob("*.dcm"))) == 6
    assert_same_image(read_sitk_series(folder), volume)


def test_a_left_handed_direction_is_the_same_image_in_dicom(volume, tmp_path):
    flipped = np.diag([1.0, 1.0, -1.0])
    folder = write(Volume(volume.array, volume.spacing, volume.origin, flipped), tmp_path / "series")
    image = read_sitk_series(folder)
    # The same voxels at the same places, stored bottom-up.
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.array[::-1])
    np.testing.assert_allclose(image.GetOrigin(), np.add(volume.origin, (0, 0, -5 * 2.5)), atol=1e-4)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), np.eye(3), atol=1e-4)


def test_prdit_reader_reads_the_series_back(volume, tmp_path):
    back = read_dicom_series(write(volume, tmp_path / "series"))
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-4)


def test_hu_are_rounded_and_clipped_to_int16(tmp_path):
    array = np.full((3, 4, 5), 12.6, dtype=np.float32)
    array[1] = 1e6
    array[2] = -1e6
    back = read_dicom_series(write(Volume(array), tmp_path / "series"))
    assert back.array[0].tolist() == np.full((4, 5), 13).tolist()
    assert back.array[1].max() == 32767 and back.array[2].min() == -32768


def test_header_is_a_synthetic_ct_image_with_the_geometry(volume, tmp_path):
    slices = headers(write(volume, tmp_path / "series"))
    first = slices[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == CT_IMAGE_STORAGE and first.file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
    assert first.Modality == "CT" and list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert str(first.PatientName) == "SYNTHETIC^PRDIT" and first.PatientID == f"PRDIT-{DIGEST[:8]}-3-1"
    assert first.PatientBirthDate == "" and first.PatientSex == ""
    assert "SYNTHETIC" in first.SeriesDescription and "PRDiT-T/6/2" in first.SeriesDescription
    assert "seed 3" in first.SeriesDescription and "index 1" in first.SeriesDescription
    assert first.Manufacturer == "prdit"
    assert (first.RescaleSlope, first.RescaleIntercept, first.RescaleType) == (1, 0, "HU")
    assert (first.BitsAllocated, first.BitsStored, first.HighBit, first.PixelRepresentation) == (16, 16, 15, 1)
    assert [float(v) for v in first.PixelSpacing] == [0.9, 0.7]  # [between rows = y, between columns = x]
    assert float(first.SliceThickness) == 2.5 and float(first.SpacingBetweenSlices) == 2.5
    np.testing.assert_allclose([float(v) for v in first.ImageOrientationPatient],
                               [*rotation_z(30)[:, 0], *rotation_z(30)[:, 1]], atol=1e-6)
    assert [s.InstanceNumber for s in slices] == list(range(1, 7))
    z = [float(s.ImagePositionPatient[2]) for s in slices]
    assert z == pytest.approx([-100.0 + 2.5 * k for k in range(6)])
    assert len({s.FrameOfReferenceUID for s in slices}) == 1 and len({s.SeriesInstanceUID for s in slices}) == 1


def test_uids_are_reproducible_and_never_shared(volume, tmp_path):
    def uids(folder):
        s = headers(folder)
        return s[0].StudyInstanceUID, s[0].SeriesInstanceUID, s[0].FrameOfReferenceUID, [x.SOPInstanceUID for x in s]

    again = uids(write(volume, tmp_path / "b"))
    first = uids(write(volume, tmp_path / "a"))
    assert first == again
    others = [uids(write(volume, tmp_path / name, **change)) for name, change in
              [("seed", {"seed": 4}), ("index", {"index": 2}), ("digest", {"model_digest": "f" * 64})]]
    every = [u for run in [first, *others] for u in (*run[:3], *run[3])]
    assert len(every) == len(set(every)) == 4 * (3 + 6)
    assert all(u.startswith("2.25.") and len(u) <= 64 for u in every)


def test_existing_folder_is_refused_unless_overwrite_and_no_partial_is_left(volume, tmp_path):
    folder = write(volume, tmp_path / "series")
    with pytest.raises(ConfigError, match="--overwrite"):
        write(volume, folder)
    (folder / "stale.dcm").write_bytes(b"old")
    write(volume, folder, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]
    assert not (folder / "stale.dcm").exists() and len(list(folder.glob("*.dcm"))) == 6


def test_a_converted_volume_says_so_and_names_no_model(volume, tmp_path):
    first = headers(write(volume, tmp_path / "series", model_name=None))[0]
    assert str(first.PatientName) == "ANONYMOUS^PRDIT" and "CONVERTED" in first.SeriesDescription


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (dicom3tools) is not on PATH: apt-get install dicom3tools")
def test_dciodvfy_reports_no_errors(volume, tmp_path):
    folder = write(volume, tmp_path / "series")
    for path in sorted(folder.glob("*.dcm"))[:2]:
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        text = report.stdout + report.stderr
        assert "CTImage" in text and "Error" not in text, text


# --- prdit convert ---------------------------------------------------------------------


def convert(*args):
    return CliRunner().invoke(app, ["convert", *map(str, args)])


def test_convert_nifti_to_dicom_and_back(volume, tmp_path):
    write_volume(tmp_path / "ct.nii.gz", volume)
    result = convert(tmp_path / "ct.nii.gz", "--to", "dicom", "--out", tmp_path / "dicom")
    assert result.exit_code == 0, result.output
    assert_same_image(read_sitk_series(tmp_path / "dicom" / "ct"), volume)
    assert "CONVERTED" in headers(tmp_path / "dicom" / "ct")[0].SeriesDescription
    result = convert(tmp_path / "dicom" / "ct", "--to", "nifti", "--out", tmp_path / "back")
    assert result.exit_code == 0, result.output
    back = read_volume(tmp_path / "back" / "ct.nii.gz")
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-4)
    assert isinstance(convert(tmp_path / "ct.nii.gz", "--to", "dicom", "--out", tmp_path / "dicom").exception,
                      ConfigError)


def test_convert_a_sample_keeps_model_seed_and_index(volume, tmp_path):
    write_volume(tmp_path / "sample_00002.nii.gz", volume)
    (tmp_path / "manifest.json").write_text(json.dumps({
        "format": "prdit-samples", "model": {"name": "PRDiT-T/6/2", "weights_sha256": DIGEST},
        "volumes": [{"index": 2, "seed": 77, "file": "sample_00002.nii.gz"}]}))
    assert convert(tmp_path / "sample_00002.nii.gz", "--to", "dicom", "--out", tmp_path / "d").exit_code == 0
    first = headers(tmp_path / "d" / "sample_00002")[0]
    assert first.PatientID == f"PRDIT-{DIGEST[:8]}-77-2" and "seed 77 index 2" in first.SeriesDescription


def test_convert_refuses_mixed_series_2d_images_and_other_modalities(volume, tmp_path):
    write(volume, tmp_path / "a")
    write(volume, tmp_path / "b", seed=9)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("a", "b"):
        for p in (tmp_path / name).glob("*.dcm"):
            shutil.copy(p, mixed / f"{name}_{p.name}")
    error = convert(mixed, "--to", "nifti", "--out", tmp_path / "out").exception
    assert isinstance(error, DataError) and "holds 2 series" in str(error)

    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(sorted((tmp_path / "a").glob("*.dcm"))[0], single)
    error = convert(single, "--to", "nifti", "--out", tmp_path / "out").exception
    assert isinstance(error, DataError) and "not a volume" in str(error)

    mr = tmp_path / "mr"
    shutil.copytree(tmp_path / "a", mr)
    for p in mr.glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.Modality = "MR"
        ds.save_as(p)
    error = convert(mr, "--to", "nifti", "--out", tmp_path / "out").exception
    assert isinstance(error, DataError) and "modality MR, not CT" in str(error)

    np.save(tmp_path / "flat.npy", np.zeros((8, 8), np.int16))
    error = convert(tmp_path / "flat.npy", "--to", "dicom", "--out", tmp_path / "out").exception
    assert isinstance(error, DataError) and "3D" in str(error)
    assert not (tmp_path / "out").exists()
