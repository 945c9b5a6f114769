import json

import numpy as np
import pydicom
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.dicom_writer import read_dicom_series
from prdit.data.io import read_volume, write_volume
from prdit.generation.sampling import volume_seed


def sample(*args):
    result = CliRunner().invoke(app, ["sample", *map(str, args), "--steps", "4", "--quiet", "--no-previews"])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_sample_format_both_writes_a_dicom_series_equal_to_the_nifti(model_dir, tmp_path, spacing):
    sample(model_dir, "--out", tmp_path, "--num", 2, "--seed", 5, "--format", "both")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["volume_format"] == "both"
    for entry in manifest["volumes"]:
        i = entry["index"]
        assert entry["dicom"] == f"dicom/sample_{i:05d}" and entry["file"] == f"sample_{i:05d}.nii.gz"
        nifti = read_volume(tmp_path / entry["file"])
        dicom = read_dicom_series(tmp_path / entry["dicom"])
        np.testing.assert_array_equal(dicom.array, nifti.array)
        np.testing.assert_allclose(dicom.spacing, spacing, atol=1e-4)
        np.testing.assert_allclose(dicom.origin, nifti.origin, atol=1e-4)
        first = pydicom.dcmread(sorted((tmp_path / entry["dicom"]).glob("*.dcm"))[0])
        digest = manifest["model"]["weights_sha256"]
        assert first.PatientID == f"PRDIT-{digest[:8]}-{volume_seed(5, i)}-{i}"
        assert f"PRDiT-T/6/2 seed {volume_seed(5, i)} index {i}" in first.SeriesDescription


def test_sample_format_dicom_writes_only_the_series_and_resumes(model_dir, tmp_path):
    sample(model_dir, "--out", tmp_path, "--num", 1, "--seed", 5, "--format", "dicom")
    assert not list(tmp_path.glob("*.nii.gz"))
    series = tmp_path / "dicom" / "sample_00000"
    assert len(list(series.glob("*.dcm"))) == 16
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["volume_format"] == "dicom" and manifest["volumes"][0]["file"] is None
    before = sorted(p.stat().st_mtime_ns for p in series.glob("*.dcm"))
    result = sample(model_dir, "--out", tmp_path, "--num", 1, "--seed", 5, "--format", "dicom")
    assert "skipped 1" in result.output
    assert sorted(p.stat().st_mtime_ns for p in series.glob("*.dcm")) == before


def test_sample_refuses_an_unknown_format(model_dir, tmp_path):
    from prdit.errors import ConfigError

    result = CliRunner().invoke(app, ["sample", str(model_dir), "--out", str(tmp_path), "--format", "png"])
    assert isinstance(result.exception, ConfigError) and "nifti, dicom, both" in str(result.exception)
    assert not (tmp_path / "manifest.json").exists()


def test_series_folders_are_read_back_by_view_and_evaluate(model_dir, tmp_path):
    from prdit.data.phantoms import generate_phantom

    out, real = tmp_path / "samples", tmp_path / "real"
    sample(model_dir, "--out", out, "--num", 3, "--seed", 5, "--format", "both")
    for i in range(3):
        write_volume(real / f"phantom_{i}.nii.gz", generate_phantom(16, seed=i))
    result = CliRunner().invoke(app, ["view", str(out / "dicom" / "sample_00000"), "--out", str(tmp_path / "page.html")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "sample_00000" in (tmp_path / "page.html").read_text()

    def evaluate(fake, report):
        result = CliRunner().invoke(app, ["evaluate", "--fake", str(fake), "--real", str(real), "--features",
                                          "random-init", "--seed", "0", "--metrics", "msssim", "--no-cache",
                                          "--quiet", "--out", str(report)])
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(report.read_text())

    from_dicom = evaluate(out / "dicom", tmp_path / "dicom.json")
    from_nifti = evaluate(out, tmp_path / "nifti.json")
    assert from_dicom["fake"]["count"] == from_nifti["fake"]["count"] == 3
    assert from_dicom["msssim"] == from_nifti["msssim"]


def test_a_run_killed_while_writing_a_series_leaves_it_under_partial_and_the_resumed_run_clears_it(model_dir,
                                                                                                   tmp_path):
    import os
    import subprocess
    import sys

    # kill -9 in the middle of the second series: the process ends at once, no cleanup runs.
    killed = ("import os, sys, pydicom\n"
              "write, count = pydicom.dcmwrite, [0]\n"
              "def dies_at_the_20th_slice(*args, **kwargs):\n"
              "    count[0] += 1\n"
              "    if count[0] == 20:\n"
              "        os._exit(9)\n"
              "    return write(*args, **kwargs)\n"
              "pydicom.dcmwrite = dies_at_the_20th_slice\n"
              "from prdit.cli import main\n"
              "sys.argv = ['prdit', *sys.argv[1:]]\n"
              "main()\n")
    args = ["sample", str(model_dir), "--out", str(tmp_path), "--num", "2", "--seed", "5", "--format", "dicom"]
    result = subprocess.run([sys.executable, "-c", killed, *args, "--steps", "4", "--quiet", "--no-previews"],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == 9, result.stderr[-2000:]
    left = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.name.startswith(".") and ".partial" in p.name]
    assert left and all(p.parts[0] == ".partial" for p in left), left  # the half-written series is in OUT/.partial

    sample(*args[1:])
    hidden = [p for p in tmp_path.rglob(".*") if p.name not in (".journal",)]
    assert not hidden, hidden
    for i in range(2):
        assert len(list((tmp_path / "dicom" / f"sample_{i:05d}").glob("*.dcm"))) == 16
