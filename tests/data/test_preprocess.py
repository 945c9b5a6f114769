import csv
import hashlib
import os

import numpy as np
import pytest
import typer
from dicom_fixtures import Stack, hu_field, write_ct_series, write_localizer, write_radiograph
from typer.testing import CliRunner

from prdit.data.io import read_volume
from prdit.data.lidc import preprocess_lidc
from prdit.data.rad_chestct import DOCUMENTED_SPACING_MM, preprocess_rad_chestct
from prdit.errors import DataError


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _manifest(out):
    with (out / "manifest.csv").open(newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def _cli():
    from prdit.data.cli import register

    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def lidc_tree(tmp_path, rng):
    """A TCIA-like download: patient/study/series/*.dcm with the usual mess."""
    src = tmp_path / "LIDC"
    uids = {}
    # Good patient: diagnostic CT, a thicker reconstruction, a scout, radiographs, a corrupt file.
    uids["good"] = write_ct_series(src / "LIDC-0001" / "study1" / "ct", Stack(), rng)
    write_ct_series(src / "LIDC-0001" / "study1" / "ct-thick", Stack(slices=5, slice_spacing=5.0), rng)
    write_localizer(src / "LIDC-0001" / "study1" / "scout")
    write_radiograph(src / "LIDC-0001" / "study2" / "cr", images=30)
    (src / "LIDC-0001" / "study1" / "ct" / "IMG0999.dcm").write_bytes(b"truncated transfer" * 7)
    (src / "LIDC-0001" / "study1" / "ct" / "annotation.xml").write_text("<LidcReadMessage/>")
    # A patient with a missing slice, one with radiographs only.
    uids["gap"] = write_ct_series(src / "LIDC-0002" / "s" / "ct", Stack(), rng, skip=(4,))
    write_radiograph(src / "LIDC-0003" / "s" / "dx", images=3)
    return src, uids


def test_lidc_preprocessing_end_to_end(lidc_tree, tmp_path):
    src, uids = lidc_tree
    before = _snapshot(src)
    out = tmp_path / "out"
    results = preprocess_lidc(src, out, size=32, spacing=1.0)
    assert _snapshot(src) == before  # the source is only read

    status = {r.case: r.status for r in results}
    assert status == {"LIDC-0001": "done", "LIDC-0002": "failed", "LIDC-0003": "failed"}
    rows = _manifest(out)
    assert rows["LIDC-0001"]["source"] == uids["good"]
    assert rows["LIDC-0001"]["original_size"] == "24 x 20 x 12"
    assert rows["LIDC-0001"]["original_spacing"] == "0.7 x 0.8 x 2.5"
    assert rows["LIDC-0001"]["output_size"] == "32 x 32 x 32"
    assert "localiser" in rows["LIDC-0001"]["notes"] and "IMG0999.dcm" in rows["LIDC-0001"]["notes"]
    assert uids["gap"] in rows["LIDC-0002"]["reason"] and "missing slice" in rows["LIDC-0002"]["reason"]
    assert "no axial CT series" in rows["LIDC-0003"]["reason"] and "not CT" in rows["LIDC-0003"]["reason"]
    assert sorted(p.name for p in out.iterdir()) == ["LIDC-0001.nii.gz", "manifest.csv"]

    volume = read_volume(out / "LIDC-0001.nii.gz")
    assert volume.array.shape == (32, 32, 32) and volume.spacing == pytest.approx((1.0, 1.0, 1.0))
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-6)
    # The scan centre maps to the grid centre and HU match the known field there.
    centre = np.array([-10 + 23 * 0.7 / 2, -10 + 19 * 0.8 / 2, 100 + 11 * 2.5 / 2])
    np.testing.assert_allclose(np.asarray(volume.origin) + 15.5, centre, atol=1e-4)
    k, j, i = 16, 15, 17
    world = np.asarray(volume.origin) + np.array([i, j, k], float)
    assert volume.array[k, j, i] == pytest.approx(hu_field(*world), abs=2.0)
    assert volume.array[0, 0, 0] == -1000  # outside the scan: air
    # nibabel sees the same geometry as a RAS affine.
    import nibabel as nib

    np.testing.assert_allclose(nib.load(out / "LIDC-0001.nii.gz").affine, volume.affine, atol=1e-4)


def test_lidc_rerun_skips_finished_cases_and_overwrite_redoes_them(lidc_tree, tmp_path):
    src, _ = lidc_tree
    out = tmp_path / "out"
    preprocess_lidc(src, out, size=16, spacing=2.0)
    stamp = (out / "LIDC-0001.nii.gz").stat().st_mtime_ns
    again = {r.case: r for r in preprocess_lidc(src, out, size=16, spacing=2.0)}
    assert (out / "LIDC-0001.nii.gz").stat().st_mtime_ns == stamp
    assert again["LIDC-0001"].status == "done" and "kept" in again["LIDC-0001"].reason
    assert again["LIDC-0001"].output_size == "16 x 16 x 16"  # details survive from the first run
    assert again["LIDC-0002"].status == "failed"  # failed cases are retried, and fail again
    os.utime(out / "LIDC-0001.nii.gz", ns=(0, 0))
    redone = {r.case: r for r in preprocess_lidc(src, out, size=16, spacing=2.0, overwrite=True)}
    assert redone["LIDC-0001"].reason == "" and (out / "LIDC-0001.nii.gz").stat().st_mtime_ns != 0


def test_lidc_command_exit_status_and_workers(lidc_tree, tmp_path):
    src, _ = lidc_tree
    runner = CliRunner()
    args = ["preprocess", "lidc", "--src", str(src), "--size", "16", "--spacing", "2", "--workers", "2"]
    result = runner.invoke(_cli(), args + ["--out", str(tmp_path / "all")])
    assert result.exit_code == 1, result.output
    assert "1 of 3 cases done, 2 failed" in result.output
    assert (tmp_path / "all" / "LIDC-0001.nii.gz").is_file()

    only_good = tmp_path / "good"
    only_good.mkdir()
    os.symlink(src / "LIDC-0001", only_good / "LIDC-0001")
    result = runner.invoke(_cli(), ["preprocess", "lidc", "--src", str(only_good), "--out", str(tmp_path / "ok"),
                                    "--size", "16", "--spacing", "2"])
    assert result.exit_code == 0, result.output


def test_output_inside_source_is_refused(lidc_tree):
    src, _ = lidc_tree
    with pytest.raises(DataError, match="inside the source"):
        preprocess_lidc(src, src / "processed", size=16)


def test_rad_chestct_npz(tmp_path):
    src = tmp_path / "rad"
    src.mkdir()
    slices, rows, cols = 30, 40, 36
    k, j, i = np.meshgrid(np.arange(slices), np.arange(rows), np.arange(cols), indexing="ij")
    ct = (-800 + 10 * k + 2 * j + i).astype(np.int16)
    np.savez_compressed(src / "trn00001.npz", ct=ct)
    np.savez_compressed(src / "trn00002.npz", volume=ct)  # wrong key
    np.savez_compressed(src / "trn00003.npz", ct=ct[0])  # 2D
    out = tmp_path / "out"
    results = {r.case: r for r in preprocess_rad_chestct(src, out, size=32)}
    assert results["trn00001"].status == "done"
    assert "no array 'ct'" in results["trn00002"].reason and "trn00002.npz" in results["trn00002"].reason
    assert "3D" in results["trn00003"].reason
    volume = read_volume(out / "trn00001.nii.gz")
    assert volume.spacing == pytest.approx((DOCUMENTED_SPACING_MM,) * 3)
    # No resampling by default: a centre crop (x, y: 40/36 -> 32) and air padding (z: 30 -> 32).
    assert (volume.array[0] == -1000).all() and (volume.array[-1] == -1000).all()
    np.testing.assert_array_equal(volume.array[1:31], ct[:, 4:36, 2:34])
    assert _manifest(out)["trn00001"]["original_spacing"] == "0.8 x 0.8 x 0.8"


def test_rad_chestct_resampled_spacing(tmp_path):
    src = tmp_path / "rad"
    src.mkdir()
    np.savez_compressed(src / "a.npz", ct=np.full((20, 20, 20), 40, np.int16))
    preprocess_rad_chestct(src, tmp_path / "out", size=8, spacing=2.0)
    volume = read_volume(tmp_path / "out" / "a.nii.gz")
    assert volume.spacing == (2.0, 2.0, 2.0)
    assert (volume.array[2:6, 2:6, 2:6] == 40).all()


def test_rerun_redoes_a_damaged_earlier_output(lidc_tree, tmp_path):
    src, _ = lidc_tree
    out = tmp_path / "out"
    preprocess_lidc(src, out, size=16, spacing=2.0)
    good = read_volume(out / "LIDC-0001.nii.gz").array
    data = (out / "LIDC-0001.nii.gz").read_bytes()
    (out / "LIDC-0001.nii.gz").write_bytes(data[: len(data) // 2])  # a half-copied output
    again = {r.case: r for r in preprocess_lidc(src, out, size=16, spacing=2.0)}
    assert again["LIDC-0001"].status == "done" and "kept" not in again["LIDC-0001"].reason
    np.testing.assert_array_equal(read_volume(out / "LIDC-0001.nii.gz").array, good)


def _series_image(folder):
    """The SimpleITK image of the CT series under ``folder``, as preprocessing reads it."""
    from prdit.data.dicom import find_dicom_files, read_series, scan_headers, select_series

    series, _ = scan_headers(find_dicom_files(folder))
    uid, _ = select_series(series)
    return read_series(series[uid])


def test_lidc_label_map_stays_on_its_structure(lidc_tree, tmp_path):
    import SimpleITK as sitk

    from prdit.data.io import Volume, write_volume
    from prdit.data.labels import LABELS, write_label_table

    src, _ = lidc_tree
    image = _series_image(src / "LIDC-0001")
    hu = sitk.GetArrayFromImage(image)
    threshold = float(np.median(hu))
    # The bright half of the scan (HU rise along x, y and z) is the liver, in prdit's own indices.
    write_volume(src / "labels" / "LIDC-0001.nii.gz", Volume(
        array=np.where(hu > threshold, LABELS["liver"], 0).astype(np.uint8), spacing=image.GetSpacing(),
        origin=image.GetOrigin(), direction=np.asarray(image.GetDirection()).reshape(3, 3)))
    write_label_table(src / "labels")
    out = tmp_path / "out"
    status = {r.case: r.status for r in preprocess_lidc(src, out, size=32, spacing=1.0)}
    assert status == {"LIDC-0001": "done", "LIDC-0002": "failed", "LIDC-0003": "failed"}  # labels/ is no patient
    assert _manifest(out)["LIDC-0001"]["labels"] == "labels/LIDC-0001.nii.gz"
    volume = read_volume(out / "LIDC-0001.nii.gz")
    labels = read_volume(out / "labels" / "LIDC-0001.nii.gz")
    assert labels.array.dtype == np.uint8 and labels.array.shape == volume.array.shape
    np.testing.assert_allclose(labels.affine, volume.affine, atol=1e-4)
    assert (out / "labels" / "labels.json").is_file()
    # Nearest neighbour moves a label by at most half a source voxel (0.35, 0.4, 1.25 mm): about 11 HU
    # of the field, so labelled voxels are bright and bright voxels inside the scan are labelled.
    liver = labels.array == LABELS["liver"]
    scanned = volume.array > -1000
    assert liver.sum() > 100 and set(np.unique(labels.array)) == {0, LABELS["liver"]}
    assert (volume.array[liver] > threshold - 15).all()
    assert liver[scanned & (volume.array > threshold + 15)].all()
    assert not liver[~scanned].any()  # outside the scan: background


def test_rad_chestct_label_map_follows_crop_pad_and_resampling(tmp_path):
    from prdit.data.io import Volume, write_volume
    from prdit.data.labels import LABELS

    src = tmp_path / "rad"
    src.mkdir()
    ct = np.full((30, 40, 36), -800, np.int16)
    ct[4:16, 6:22, 4:16] = 700  # a bone block off the centre, in no symmetric place
    ct[18:28, 24:38, 20:34] = 60
    np.savez_compressed(src / "trn00001.npz", ct=ct)
    np.savez_compressed(src / "trn00002.npz", ct=ct)  # a scan without a label map
    ts = np.zeros(ct.shape, np.int16)
    ts[4:16, 6:22, 4:16] = 116  # TotalSegmentator: sternum
    ts[18:28, 24:38, 20:34] = 5  # liver
    write_volume(src / "labels" / "trn00001.nii.gz", Volume(array=ts, spacing=(DOCUMENTED_SPACING_MM,) * 3))
    expected = np.zeros(ct.shape, np.uint8)
    expected[ts == 116], expected[ts == 5] = LABELS["sternum"], LABELS["liver"]

    # Default grid: the same centre crop (x, y) and air padding (z) as the image, voxel for voxel.
    results = preprocess_rad_chestct(src, tmp_path / "crop", size=32, label_table="totalsegmentator")
    results = {r.case: r for r in results}
    assert results["trn00001"].labels == "labels/trn00001.nii.gz" and results["trn00002"].labels == ""
    labels = read_volume(tmp_path / "crop" / "labels" / "trn00001.nii.gz").array
    assert (labels[0] == 0).all() and (labels[-1] == 0).all()
    np.testing.assert_array_equal(labels[1:31], expected[:, 4:36, 2:34])
    assert not (tmp_path / "crop" / "labels" / "trn00002.nii.gz").exists()

    # Resampled to 2 mm: the label stays on its structure.
    preprocess_rad_chestct(src, tmp_path / "2mm", size=16, spacing=2.0, label_table="totalsegmentator")
    volume = read_volume(tmp_path / "2mm" / "trn00001.nii.gz")
    labels = read_volume(tmp_path / "2mm" / "labels" / "trn00001.nii.gz")
    np.testing.assert_allclose(labels.affine, volume.affine, atol=1e-4)
    sternum, liver = labels.array == LABELS["sternum"], labels.array == LABELS["liver"]
    assert sternum.sum() == pytest.approx(12 * 16 * 12 * 0.8**3 / 2**3, rel=0.25)  # block volume / voxel volume
    assert liver.sum() == pytest.approx(10 * 14 * 14 * 0.8**3 / 2**3, rel=0.25)
    assert np.median(volume.array[sternum]) > 400 and 0 < np.median(volume.array[liver]) < 120
    assert (volume.array > 600)[~sternum].sum() == 0  # every bright voxel is labelled bone


def test_bad_label_maps_fail_their_case_or_the_run(tmp_path):
    from prdit.data.io import Volume, write_volume

    src = tmp_path / "rad"
    src.mkdir()
    ct = np.full((10, 12, 14), 40, np.int16)
    for name in ("good", "unknown", "grid"):
        np.savez_compressed(src / f"{name}.npz", ct=ct)
    labels = np.zeros(ct.shape, np.uint8)
    write_volume(src / "labels" / "good.nii.gz", Volume(array=labels, spacing=(DOCUMENTED_SPACING_MM,) * 3))
    write_volume(src / "labels" / "unknown.nii.gz", Volume(array=labels + 250, spacing=(DOCUMENTED_SPACING_MM,) * 3))
    write_volume(src / "labels" / "grid.nii.gz", Volume(array=labels, spacing=(1.0,) * 3))
    out = tmp_path / "out"
    results = {r.case: r for r in preprocess_rad_chestct(src, out, size=8, label_table="totalsegmentator")}
    assert results["good"].status == "done"
    assert results["unknown"].status == "failed" and "label value(s) 250" in results["unknown"].reason
    assert str(src / "labels" / "unknown.nii.gz") in results["unknown"].reason
    assert results["grid"].status == "failed" and "spacing" in results["grid"].reason
    # A failed case writes nothing: neither its volume nor its label map.
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["good.nii.gz", "labels.json"]
    assert not (out / "unknown.nii.gz").exists()

    # A label map with no scan stops the run before any case, naming the file (a typo in a name).
    write_volume(src / "labels" / "god.nii.gz", Volume(array=labels, spacing=(DOCUMENTED_SPACING_MM,) * 3))
    result = CliRunner().invoke(_cli(), ["preprocess", "rad-chestct", "--src", str(src), "--out", str(tmp_path / "o2"),
                                         "--size", "8", "--label-table", "totalsegmentator"])
    assert isinstance(result.exception, DataError) and "god.nii.gz: label map with no scan" in str(result.exception)
    assert not (tmp_path / "o2").exists()
    # No table given and none beside the maps: the run says how to give one.
    (src / "labels" / "god.nii.gz").unlink()
    with pytest.raises(DataError, match="--label-table totalsegmentator"):
        preprocess_rad_chestct(src, tmp_path / "o3", size=8)
