"""``prdit reconstruct`` with a tiny untrained model: what the folder holds, the geometry of the
result, resuming and refusing, measurement files and their checks."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prdit.cli import app, main
from prdit.data.io import read_volume, write_volume
from prdit.data.normalization import Normalization
from prdit.data.phantoms import generate_phantom
from prdit.diffusion import IaNDiffusion
from prdit.errors import ConfigError, DataError
from prdit.inverse.operators import DEFAULT_MASK_PATTERN, make_mask
from prdit.model_folder import save_model_folder
from prdit.models import create_model

SPACING = (2.0, 1.5, 2.5)  # x, y, z: anisotropic, so an axis mix-up shows
OLD = 1_000_000_000  # an mtime far in the past, so any rewrite shows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    model = create_model("PRDiT-T/6/1", input_size=16)
    torch.nn.init.normal_(model.local_denoiser.output.weight, std=0.1, generator=torch.Generator().manual_seed(0))
    save_model_folder(path, model, IaNDiffusion(), Normalization(), spacing=SPACING)
    return path


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    """A 16³ phantom with a non-trivial origin and the model's spacing."""
    volume = generate_phantom(16, seed=7)
    volume.spacing, volume.origin = SPACING, (10.0, -20.0, 30.0)
    return write_volume(tmp_path_factory.mktemp("ct") / "ct.nii.gz", volume)


def reconstruct(*args):
    """Run ``prdit reconstruct`` in-process; the project's errors come back as ``result.exception``."""
    return CliRunner().invoke(app, ["reconstruct", *map(str, args), "--steps", "4", "--quiet", "--device", "cpu"])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.mark.parametrize("task,extra", [("sr", []), ("infill", ["--mask-pattern", "centre_cube"]),
                                        ("deblur", []), ("xray", ["--views", "1"])])
def test_simulate_from_writes_reconstruction_baseline_previews_and_metrics(task, extra, model_dir, ct, tmp_path):
    out = tmp_path / task
    printed = ok(reconstruct(model_dir, "--task", task, "--simulate-from", ct, "--out", out, *extra)).output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == task and manifest["seed"] == 0 and manifest["sampler"]["steps"] == 4
    assert manifest["guidance"]["jump"] == manifest["sampler"]["jump"]
    for name in ("reconstruction", "baseline"):
        assert set(manifest["metrics"][name]) == {"psnr", "ssim"}
        assert f"PSNR {manifest['metrics'][name]['psnr']:.2f} dB" in printed
    truth, result = read_volume(ct), read_volume(out / "reconstruction.nii.gz")
    assert result.array.shape == truth.array.shape and result.array.dtype == np.int16
    np.testing.assert_allclose(result.spacing, truth.spacing)
    np.testing.assert_allclose(result.origin, truth.origin)
    assert sorted(p.name for p in (out / "previews").iterdir()) == [
        "baseline.png", "ground_truth.png", "measurement.png", "reconstruction.png"]
    assert (out / manifest["files"]["measurement"]).is_file()


def test_a_finished_run_is_kept_another_refused_and_overwrite_redoes(model_dir, ct, tmp_path):
    out = tmp_path / "sr"
    ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", out, "--no-previews"))
    os.utime(out / "reconstruction.nii.gz", (OLD, OLD))
    again = ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", out, "--no-previews"))
    assert "already holds" in again.output and os.stat(out / "reconstruction.nii.gz").st_mtime == OLD
    other = reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", out, "--scale", "5")
    assert isinstance(other.exception, ConfigError) and "guidance" in str(other.exception)
    assert os.stat(out / "reconstruction.nii.gz").st_mtime == OLD
    ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", out, "--scale", "5", "--overwrite"))
    assert os.stat(out / "reconstruction.nii.gz").st_mtime != OLD
    assert json.loads((out / "manifest.json").read_text())["guidance"]["scale"] == 5.0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "reconstruction.nii.gz").write_bytes(b"mine")
    refused = reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", foreign)
    assert isinstance(refused.exception, ConfigError) and (foreign / "reconstruction.nii.gz").read_bytes() == b"mine"


def test_measurement_files_give_the_measurements_geometry(model_dir, ct, tmp_path):
    simulated = tmp_path / "simulated"
    ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", simulated, "--no-previews"))
    low = read_volume(simulated / "measurement.nii.gz")
    assert low.array.shape == (4, 4, 4)
    np.testing.assert_allclose(low.spacing, np.array(SPACING) * 4)
    out = tmp_path / "from-file"
    ok(reconstruct(model_dir, "--task", "sr", "--measurement", simulated / "measurement.nii.gz", "--out", out))
    result, truth = read_volume(out / "reconstruction.nii.gz"), read_volume(ct)
    np.testing.assert_allclose(result.spacing, truth.spacing)
    np.testing.assert_allclose(result.origin, truth.origin)  # the fine grid of the same field of view
    assert json.loads((out / "manifest.json").read_text())["metrics"] == {}

    xray = tmp_path / "xray"
    ok(reconstruct(model_dir, "--task", "xray", "--simulate-from", ct, "--out", xray, "--no-previews"))
    assert np.load(xray / "measurement.npy").shape == (2, 128, 128)
    ok(reconstruct(model_dir, "--task", "xray", "--measurement", xray / "measurement.npy", "--angles", "0,90",
                   "--out", tmp_path / "xray-file"))
    wrong = reconstruct(model_dir, "--task", "xray", "--measurement", xray / "measurement.npy", "--angles", "0",
                        "--out", tmp_path / "wrong")
    assert isinstance(wrong.exception, DataError) and "measurement.npy" in str(wrong.exception)


def test_bad_input_is_refused_with_a_clear_error_before_out_is_made(model_dir, ct, tmp_path):
    missing = tmp_path / "missing.nii.gz"
    mask = tmp_path / "mask.nii.gz"
    write_volume(mask, read_volume(ct).__class__(array=np.full((16, 16, 16), 2, np.uint8)))
    cases = [(["--task", "infill", "--measurement", ct], ConfigError, "mask"),
             (["--task", "paint", "--simulate-from", ct], ConfigError, "unknown task"),
             (["--task", "sr"], ConfigError, "--measurement"),
             (["--task", "sr", "--measurement", ct], DataError, "ct.nii.gz"),
             (["--task", "sr", "--simulate-from", ct, "--jump", "0"], ConfigError, "jump"),
             (["--task", "sr", "--measurement", missing], DataError, "missing.nii.gz"),
             (["--task", "deblur", "--simulate-from", missing], DataError, "missing.nii.gz"),
             (["--task", "infill", "--mask", missing, "--simulate-from", ct], DataError, "missing.nii.gz"),
             (["--task", "infill", "--mask", mask, "--simulate-from", ct], DataError, "mask.nii.gz")]
    for args, error, words in cases:
        result = reconstruct(model_dir, *args, "--out", tmp_path / "bad")
        assert isinstance(result.exception, error) and words in str(result.exception), (args, result.exception)
        assert not (tmp_path / "bad").exists(), args
    result = reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", mask)
    assert isinstance(result.exception, ConfigError) and "mask.nii.gz" in str(result.exception)


def test_a_missing_measurement_is_one_line_naming_the_file(model_dir, tmp_path, monkeypatch, capsys):
    """The console command prints the project's error, not a traceback, and exits with status 2."""
    missing = tmp_path / "views.npy"
    monkeypatch.setattr(sys, "argv", ["prdit", "reconstruct", str(model_dir), "--task", "xray", "--measurement",
                                      str(missing), "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_infill_simulated_without_a_mask_takes_the_default_pattern(model_dir, ct, tmp_path):
    out = tmp_path / "infill"
    printed = ok(reconstruct(model_dir, "--task", "infill", "--simulate-from", ct, "--out", out,
                             "--no-previews")).output
    assert f"note: no --mask or --mask-pattern: infill of the {DEFAULT_MASK_PATTERN} pattern" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["operator"]["pattern"] == DEFAULT_MASK_PATTERN
    assert any(DEFAULT_MASK_PATTERN in note for note in manifest["notes"])
    known = read_volume(out / "mask.nii.gz").array.astype(bool)
    assert np.array_equal(known, make_mask(DEFAULT_MASK_PATTERN, known.shape).known.numpy())


def test_infill_guidance_changes_the_reconstruction(model_dir, ct, tmp_path):
    """ρ matters for infill too: the same seed with --scale 0 and --scale 3 gives different volumes."""
    volumes = {}
    for scale in ("0", "3"):
        out = tmp_path / f"scale-{scale}"
        ok(reconstruct(model_dir, "--task", "infill", "--mask-pattern", "centre_cube", "--simulate-from", ct,
                       "--out", out, "--scale", scale, "--no-previews"))
        volumes[scale] = read_volume(out / "reconstruction.nii.gz").array
    assert not np.array_equal(volumes["0"], volumes["3"])


def test_format_both_writes_the_reconstruction_as_a_dicom_series_too(model_dir, ct, tmp_path):
    import pydicom

    from prdit.data.dicom_writer import read_dicom_series
    from prdit.generation.sampling import volume_seed

    out = tmp_path / "both"
    ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", out, "--seed", 3, "--format", "both",
                   "--no-previews"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["volume_format"] == "both"
    assert manifest["files"]["reconstruction"] == "reconstruction.nii.gz"
    assert manifest["files"]["dicom"] == "dicom/reconstruction"
    nifti, dicom = read_volume(out / "reconstruction.nii.gz"), read_dicom_series(out / "dicom" / "reconstruction")
    np.testing.assert_array_equal(dicom.array, nifti.array)
    np.testing.assert_allclose(dicom.origin, nifti.origin, atol=1e-4)
    first = pydicom.dcmread(sorted((out / "dicom" / "reconstruction").glob("*.dcm"))[0])
    digest, seed = manifest["model"]["weights_sha256"], volume_seed(3, 0)
    assert first.PatientID == f"PRDIT-{digest[:8]}-{seed}-0"
    assert "RECONSTRUCTION sr" in first.SeriesDescription
    assert "already holds" in ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", out,
                                             "--seed", 3, "--format", "both", "--no-previews")).output


def test_format_dicom_writes_only_the_series_of_the_reconstruction(model_dir, ct, tmp_path):
    out = tmp_path / "dicom"
    ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", out, "--format", "dicom",
                   "--no-previews"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert not (out / "reconstruction.nii.gz").exists() and manifest["files"]["reconstruction"] is None
    assert len(list((out / manifest["files"]["dicom"]).glob("*.dcm"))) == 16
    assert "already holds" in ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", out,
                                             "--format", "dicom", "--no-previews")).output
    result = reconstruct(model_dir, "--task", "sr", "--simulate-from", ct, "--out", out, "--format", "png")
    assert isinstance(result.exception, ConfigError) and "nifti, dicom, both" in str(result.exception)


# ---------------------------------------------------------------------------------------
# Many cases: a folder or list of inputs, one folder per case, a summary; shared under torchrun
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Three 16³ phantoms in a folder, with the model's spacing."""
    folder = tmp_path_factory.mktemp("cases")
    for k in range(3):
        volume = generate_phantom(16, seed=20 + k)
        volume.spacing = SPACING
        write_volume(folder / f"patient{k}.nii.gz", volume)
    return folder


@pytest.fixture(scope="module")
def cases_run(model_dir, cases, tmp_path_factory):
    out = tmp_path_factory.mktemp("cases-out")
    printed = ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", cases, "--out", out)).output
    return out, printed


def test_a_folder_of_cases_gives_a_folder_per_case_and_mean_and_std(cases_run, model_dir, cases, tmp_path):
    out, printed = cases_run
    summary = json.loads((out / "summary.json").read_text())
    assert [c["case"] for c in summary["cases"]] == ["patient0", "patient1", "patient2"]
    psnr = [json.loads((out / c / "manifest.json").read_text())["metrics"]["reconstruction"]["psnr"]
            for c in ("patient0", "patient1", "patient2")]
    table = summary["mean_std"]["reconstruction"]["psnr"]
    assert table["cases"] == 3
    assert table["mean"] == pytest.approx(np.mean(psnr)) and table["std"] == pytest.approx(np.std(psnr, ddof=1))
    assert "mean ± std over 3 cases" in printed
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("case,input,reconstruction_psnr")
    # a case equals its reconstruction on its own (each case is sampled with the run's seed)
    alone = tmp_path / "alone"
    ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", cases / "patient1.nii.gz", "--out", alone))
    assert np.array_equal(read_volume(alone / "reconstruction.nii.gz").array,
                          read_volume(out / "patient1" / "reconstruction.nii.gz").array)


def test_a_list_of_cases_resumes_and_a_missing_case_is_refused_first(model_dir, cases, cases_run, tmp_path):
    out, _ = cases_run
    listing = tmp_path / "cases.txt"
    listing.write_text("".join(f"{cases / f'patient{k}.nii.gz'}\n" for k in range(3)))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("reconstruction.nii.gz")}
    printed = ok(reconstruct(model_dir, "--task", "sr", "--simulate-from", listing, "--out", out)).output
    assert "0 reconstructed now, 3 found finished" in printed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("reconstruction.nii.gz")} == before
    listing.write_text(listing.read_text() + f"{cases / 'patient9.nii.gz'}\n")
    result = reconstruct(model_dir, "--task", "sr", "--simulate-from", listing, "--out", tmp_path / "new")
    assert isinstance(result.exception, DataError) and "patient9.nii.gz" in str(result.exception)
    assert not (tmp_path / "new").exists()


def test_torchrun_shares_the_cases_and_writes_what_one_process_writes(model_dir, cases, cases_run, tmp_path):
    import subprocess

    out, _ = cases_run
    shared = tmp_path / "shared"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29561", "-m",
               "prdit", "reconstruct", str(model_dir), "--task", "sr", "--simulate-from", str(cases), "--out",
               str(shared), "--steps", "4", "--quiet", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("summary: ") == 1 and "mean ± std over 3 cases" in result.stdout  # rank 0 reports
    for case in ("patient0", "patient1", "patient2"):
        assert np.array_equal(read_volume(shared / case / "reconstruction.nii.gz").array,
                              read_volume(out / case / "reconstruction.nii.gz").array), case
    ours, theirs = (json.loads((folder / "summary.json").read_text()) for folder in (shared, out))
    assert ours["mean_std"]["reconstruction"] == theirs["mean_std"]["reconstruction"]
    assert ours["processes"] == 2
