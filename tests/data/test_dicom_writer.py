import json
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.dicom_writer import CT_IMAGE_STORAGE, read_dicom_series, uid_key, write_dicom_series
from prdit.data.io import Volume, read_volume, write_volume
from prdit.errors import ConfigError, DataError

DIGEST = "0123456789abcdef" * 4
KEY = uid_key({"seed": 3, "sampler": "pc", "steps": 100})


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
    args = dict(key=KEY, model_name="PRDiT-T/6/2", model_digest=DIGEST, seed=3, index=1)
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


def test_hu_are_rounded_to_int16_and_values_beyond_it_are_refused(tmp_path):
    array = np.full((3, 4, 5), 12.6, dtype=np.float32)
    array[1] = 32767.4
    array[2] = -32768.4
    back = read_dicom_series(write(Volume(array), tmp_path / "series"))
    assert back.array[0].tolist() == np.full((4, 5), 13).tolist()
    assert back.array[1].min() == 32767 and back.array[2].max() == -32768
    array[1, 0, 0] = 40000.7
    with pytest.raises(DataError, match=r"too_bright: values from -32768.4 to 40000.7, outside the -32768 to 32767 HU"):
        write(Volume(array), tmp_path / "too_bright")
    assert not (tmp_path / "too_bright").exists()


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


def uids(folder):
    s = headers(folder)
    return s[0].StudyInstanceUID, s[0].SeriesInstanceUID, s[0].FrameOfReferenceUID, [x.SOPInstanceUID for x in s]


def test_uids_are_reproducible_and_never_shared(volume, tmp_path):
    again = uids(write(volume, tmp_path / "b"))
    first = uids(write(volume, tmp_path / "a"))
    assert first == again
    other_run = uid_key({"seed": 3, "sampler": "pc", "steps": 50})
    others = [uids(write(volume, tmp_path / name, **change)) for name, change in
              [("index", {"index": 2}), ("key", {"key": other_run}), ("task", {"key": uid_key("sr", "case 1")})]]
    every = [u for run in [first, *others] for u in (*run[:3], *run[3])]
    assert len(every) == len(set(every)) == 4 * (3 + 6)
    assert all(u.startswith("2.25.") and len(u) <= 64 for u in every)


def test_a_killed_write_is_cleared_by_the_next_write_of_the_series(volume, tmp_path, monkeypatch):
    import pydicom as dicom_module

    written = []

    def killed_after_two_slices(path, *args, **kwargs):
        if len(written) == 2:
            raise SystemExit(9)
        written.append(path)
        return real_write(path, *args, **kwargs)

    real_write = dicom_module.dcmwrite
    monkeypatch.setattr(dicom_module, "dcmwrite", killed_after_two_slices)
    monkeypatch.setattr("prdit.data.dicom_writer.shutil.rmtree", lambda *args, **kwargs: None)  # as by kill -9
    scratch = tmp_path / ".partial"
    with pytest.raises(SystemExit):
        write(volume, tmp_path / "out" / "series", scratch=scratch)
    monkeypatch.undo()
    assert all(scratch in p.parents for p in written)  # the half-written series lies in the run's scratch folder
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    write(volume, tmp_path / "out" / "series", scratch=scratch)
    assert not list(scratch.iterdir()) and len(list((tmp_path / "out" / "series").glob("*.dcm"))) == 6


def test_existing_folder_is_refused_unless_overwrite_and_no_partial_is_left(volume, tmp_path):
    folder = write(volume, tmp_path / "series")
    with pytest.raises(ConfigError, match="--overwrite"):
        write(volume, folder)
    (folder / "stale.dcm").write_bytes(b"old")
    write(volume, folder, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]
    assert not (folder / "stale.dcm").exists() and len(list(folder.glob("*.dcm"))) == 6


def test_a_converted_volume_says_so_names_no_model_and_claims_no_removed_identity(volume, tmp_path):
    first = headers(write(volume, tmp_path / "series", model_name=None))[0]
    assert str(first.PatientName) == "ANONYMOUS^PRDIT" and "CONVERTED" in first.SeriesDescription
    # Its pixels come from an input that may show a patient: the writer vouches only for the fields it writes.
    assert "PatientIdentityRemoved" not in first and "BurnedInAnnotation" not in first
    sample = headers(write(volume, tmp_path / "sample"))[0]
    assert sample.PatientIdentityRemoved == "YES" and sample.BurnedInAnnotation == "NO"


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (dicom3tools) is not on PATH: apt-get install dicom3tools")
@pytest.mark.parametrize("kind", [{}, {"task": "sr"}, {"model_name": None}, {"model_name": None, "source_name": "ct"}],
                         ids=["sample", "reconstruction", "converted", "converted-kept-name"])
def test_dciodvfy_reports_no_errors(volume, tmp_path, kind):
    folder = write(volume, tmp_path / "series", **kind)
    for path in sorted(folder.glob("*.dcm"))[:2]:
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        text = report.stdout + report.stderr
        assert "CTImage" in text and "Error" not in text, text


# --- prdit convert ---------------------------------------------------------------------


def convert(*args):
    return CliRunner().invoke(app, ["convert", *map(str, args)])


def test_convert_nifti_to_dicom_and_back(volume, tmp_path):
    write_volume(tmp_path / "ct.nii.gz", volume)
    result = convert(tmp_path / "ct.nii.gz", "--to", "dicom", "--out", tmp_path / "dicom", "--keep-name")
    assert result.exit_code == 0, result.output
    assert_same_image(read_sitk_series(tmp_path / "dicom" / "ct"), volume)
    assert "CONVERTED" in headers(tmp_path / "dicom" / "ct")[0].SeriesDescription
    result = convert(tmp_path / "dicom" / "ct", "--to", "nifti", "--out", tmp_path / "back")
    assert result.exit_code == 0, result.output
    back = read_volume(tmp_path / "back" / "ct.nii.gz")
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-4)
    assert isinstance(convert(tmp_path / "ct.nii.gz", "--to", "dicom", "--out", tmp_path / "dicom",
                              "--keep-name").exception, ConfigError)


def test_a_converted_file_keeps_nothing_that_links_back_to_it_unless_asked(volume, tmp_path):
    from prdit.data.io import file_sha256

    source = tmp_path / "LIDC-IDRI-0042.nii.gz"
    write_volume(source, volume)
    digest = file_sha256(source)
    for _ in range(2):
        assert convert(source, "--to", "dicom", "--out", tmp_path / "dicom").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "dicom").iterdir()) == ["converted_00000", "converted_00001"]
    for folder in (tmp_path / "dicom").iterdir():
        for ds in headers(folder):
            text = " ".join(str(element.value) for element in ds if element.keyword != "PixelData")
            assert "LIDC-IDRI-0042" not in text and digest[:8] not in text
    first, second = (uids(tmp_path / "dicom" / name) for name in ("converted_00000", "converted_00001"))
    assert not set(first[:3]) & set(second[:3]) and not set(first[3]) & set(second[3])

    kept = [tmp_path / "kept" / name for name in ("a", "b")]
    for out in kept:
        assert convert(source, "--to", "dicom", "--out", out, "--keep-name").exit_code == 0
    named = headers(kept[0] / "LIDC-IDRI-0042")[0]
    assert named.PatientID == "LIDC-IDRI-0042" and "LIDC-IDRI-0042" in named.SeriesDescription
    assert uids(kept[0] / "LIDC-IDRI-0042") == uids(kept[1] / "LIDC-IDRI-0042")  # the same file, the same series


def test_convert_refuses_hu_a_series_cannot_hold_and_volumes_not_in_hu(volume, tmp_path):
    bright = Volume(volume.array.astype(np.float32), volume.spacing, volume.origin, volume.direction)
    bright.array[2, 3, 4] = 40000.7
    write_volume(tmp_path / "bright.nii.gz", bright)
    error = convert(tmp_path / "bright.nii.gz", "--to", "dicom", "--out", tmp_path / "out").exception
    assert isinstance(error, DataError) and "bright.nii.gz" in str(error) and "40000.7" in str(error)

    model_range = np.clip(volume.array / 1000.0, -1, 1).astype(np.float32)
    np.save(tmp_path / "normalised.npy", model_range)
    error = convert(tmp_path / "normalised.npy", "--to", "dicom", "--out", tmp_path / "out").exception
    assert isinstance(error, DataError) and "normalised.npy" in str(error) and "not HU" in str(error)

    # A sample's volume in the model range, unclipped (beyond [-1, 1]): its manifest says what it is.
    samples = tmp_path / "samples"
    write_volume(samples / "sample_00000.nii.gz", volume)
    write_volume(samples / "x0" / "sample_00000.nii.gz", Volume(model_range * 1.2))
    (samples / "manifest.json").write_text(json.dumps({
        "format": "prdit-samples", "model": {"name": "PRDiT-T/6/2", "weights_sha256": DIGEST}, "units": "HU",
        "volumes": [{"index": 0, "seed": 7, "file": "sample_00000.nii.gz", "x0_file": "x0/sample_00000.nii.gz"}]}))
    error = convert(samples / "x0" / "sample_00000.nii.gz", "--to", "dicom", "--out", tmp_path / "out").exception
    assert isinstance(error, DataError) and "model range" in str(error)
    assert str(samples / "sample_00000.nii.gz") in str(error)
    assert not (tmp_path / "out").exists()


def test_convert_a_sample_keeps_model_seed_and_index(volume, tmp_path):
    write_volume(tmp_path / "sample_00002.nii.gz", volume)
    (tmp_path / "manifest.json").write_text(json.dumps({
        "format": "prdit-samples", "model": {"name": "PRDiT-T/6/2", "weights_sha256": DIGEST}, "uid_key": KEY,
        "volumes": [{"index": 2, "seed": 77, "file": "sample_00002.nii.gz"}]}))
    assert convert(tmp_path / "sample_00002.nii.gz", "--to", "dicom", "--out", tmp_path / "d").exit_code == 0
    first = headers(tmp_path / "d" / "sample_00002")[0]
    assert first.PatientID == f"PRDIT-{DIGEST[:8]}-77-2" and "seed 77 index 2" in first.SeriesDescription
    # the series `prdit sample --format dicom` writes for volume 2 of that run
    assert uids(tmp_path / "d" / "sample_00002") == uids(write(volume, tmp_path / "sampled", seed=77, index=2))


def test_convert_refuses_mixed_series_2d_images_and_other_modalities(volume, tmp_path):
    write(volume, tmp_path / "a")
    write(volume, tmp_path / "b", key=uid_key("another run"))
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
