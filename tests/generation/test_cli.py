import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.io import read_volume
from prdit.data.normalization import Normalization
from prdit.errors import CheckpointError, ConfigError
from prdit.generation.sampling import volume_seed

STEPS = "4"  # with 4 steps the first two are predictor–corrector steps (they draw re-noising)
OLD = 1_000_000_000  # an mtime far in the past, so any rewrite of a file shows


def sample(*args):
    """Run ``prdit sample`` in-process; the project's errors come back as ``result.exception``."""
    return CliRunner().invoke(app, ["sample", *map(str, args), "--steps", STEPS, "--quiet"])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def full_run(model_dir, tmp_path_factory):
    """Volumes 0..2 of seed 4 in batches of 2, with x̂₀."""
    out = tmp_path_factory.mktemp("full")
    ok(sample(model_dir, "--out", out, "--num", 3, "--batch", 2, "--seed", 4, "--save-x0"))
    return out


def arrays(folder, name):
    return read_volume(folder / name).array


def age(folder):
    """Set every output file's mtime to OLD; return them."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    for p in files:
        os.utime(p, (OLD, OLD))
    return files


def test_full_run_writes_hu_nifti_manifest_and_previews(full_run, spacing):
    manifest = json.loads((full_run / "manifest.json").read_text())
    assert manifest["steps"] == 4 and manifest["sampler"] == "pc" and manifest["seed"] == 4
    assert manifest["schedule"] == "uniform"
    assert manifest["hu_range"] == [-1000.0, 1000.0] and manifest["model"]["name"] == "PRDiT-T/6/2"
    assert [v["index"] for v in manifest["volumes"]] == [0, 1, 2]
    for entry in manifest["volumes"]:
        i = entry["index"]
        assert entry["seed"] == volume_seed(4, i)
        assert entry["file"] == f"sample_{i:05d}.nii.gz"
        assert entry["x0_file"] == f"x0/sample_{i:05d}.nii.gz"
        assert (full_run / entry["preview"]).is_file()
    assert (full_run / "grid.png").is_file() and not (full_run / ".partial").exists()
    # view.html: the folder's volumes in the viewer, exact HU (16³ needs no downsampling)
    from prdit.viewer.page import decode_volume, read_page_data

    page = read_page_data((full_run / "view.html").read_text())
    assert [v["name"] for v in page["volumes"]] == [f"sample_{i:05d}" for i in range(3)]
    for i, entry in enumerate(page["volumes"]):
        np.testing.assert_array_equal(decode_volume(entry), arrays(full_run, f"sample_{i:05d}.nii.gz"))
        assert entry["spacing"] == pytest.approx(list(spacing))
    # the x̂₀ files are in their own folder: a directory of volumes holds HU volumes only
    assert sorted(p.name for p in full_run.glob("*.nii.gz")) == [f"sample_{i:05d}.nii.gz" for i in range(3)]


def test_volumes_are_clipped_hounsfield_units_of_the_final_x0(full_run):
    for i in range(3):
        hu = arrays(full_run, f"sample_{i:05d}.nii.gz")
        x0 = arrays(full_run, f"x0/sample_{i:05d}.nii.gz")
        assert hu.dtype == np.int16 and x0.dtype == np.float32 and hu.shape == (16, 16, 16)
        assert hu.min() == -1000 and hu.max() == 1000  # the perturbed model overshoots: clipped
        assert np.abs(x0).max() > 1.0
        np.testing.assert_array_equal(hu, np.rint(Normalization().to_hu(x0)).astype(np.int16))


def test_nifti_geometry_opens_with_the_training_spacing(full_run, spacing):
    image = nib.load(full_run / "sample_00001.nii.gz")
    assert image.shape == (16, 16, 16)
    np.testing.assert_allclose(image.header.get_zooms(), spacing)
    assert image.header.get_xyzt_units()[0] == "mm"
    affine = image.affine  # RAS: x and y flipped from ITK's LPS, centred on the origin
    np.testing.assert_allclose(affine[:3, :3], np.diag([-spacing[0], -spacing[1], spacing[2]]), atol=1e-6)
    centre = affine @ np.array([7.5, 7.5, 7.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-5)
    assert int(image.header["sform_code"]) > 0 and int(image.header["qform_code"]) > 0
    # nibabel's (x, y, z) array is ITK's (z, y, x) array transposed
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0),
                                  arrays(full_run, "sample_00001.nii.gz"))


def test_index_regenerates_one_volume_bit_exactly(full_run, model_dir, tmp_path):
    ok(sample(model_dir, "--out", tmp_path, "--index", 2, "--seed", 4, "--save-x0"))
    assert sorted(p.name for p in tmp_path.glob("*.nii.gz")) == ["sample_00002.nii.gz"]
    for name in ("sample_00002.nii.gz", "x0/sample_00002.nii.gz"):
        np.testing.assert_array_equal(arrays(tmp_path, name), arrays(full_run, name))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [(v["index"], v["seed"]) for v in manifest["volumes"]] == [(2, volume_seed(4, 2))]


def test_resume_skips_existing_volumes_without_touching_them(full_run, model_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(full_run, out)
    (out / "sample_00001.nii.gz").unlink()  # as if the run had stopped before volume 1 ...
    (out / "x0" / "sample_00001.nii.gz").unlink()
    (out / "previews" / "sample_00002.png").unlink()  # ... or before volume 2's preview
    (out / ".partial").mkdir()
    (out / ".partial" / "sample_00001.nii.gz").write_bytes(b"half a file")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["volumes"] = [v for v in manifest["volumes"] if v["index"] != 0]  # written, not yet recorded
    del manifest["schedule"]  # folders written before the option existed resume too
    (out / "manifest.json").write_text(json.dumps(manifest))
    kept = [p for p in age(out) if "00001" not in p.name and p.name not in ("manifest.json", "grid.png", "view.html")]
    result = ok(sample(model_dir, "--out", out, "--num", 4, "--batch", 2, "--seed", 4, "--save-x0"))
    assert "generated 2, skipped 2 existing" in result.output
    assert all(p.stat().st_mtime == OLD for p in kept), [p.name for p in kept if p.stat().st_mtime != OLD]
    assert (out / "previews" / "sample_00002.png").is_file() and not (out / ".partial").exists()
    for name in ("sample_00001.nii.gz", "x0/sample_00001.nii.gz"):
        np.testing.assert_array_equal(arrays(out, name), arrays(full_run, name))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(v["index"], v["seed"]) for v in manifest["volumes"]] == [(i, volume_seed(4, i)) for i in range(4)]
    assert all(v["preview"] and v["x0_file"] for v in manifest["volumes"])


def test_overwrite_replaces_existing_volumes(full_run, model_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(full_run, out)
    age(out)
    result = ok(sample(model_dir, "--out", out, "--num", 2, "--batch", 2, "--seed", 4, "--overwrite"))
    assert "generated 2, skipped 0" in result.output
    for i in range(2):
        assert (out / f"sample_{i:05d}.nii.gz").stat().st_mtime > OLD
        assert not (out / "x0" / f"sample_{i:05d}.nii.gz").exists()  # no --save-x0: the old x̂₀ goes
        np.testing.assert_array_equal(arrays(out, f"sample_{i:05d}.nii.gz"), arrays(full_run, f"sample_{i:05d}.nii.gz"))
    assert (out / "sample_00002.nii.gz").stat().st_mtime == OLD


def test_a_folder_of_another_run_is_not_mixed_in(full_run, model_dir, make_model_folder, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(full_run, out)
    age(out)
    result = sample(model_dir, "--out", out, "--num", 3, "--seed", 5)
    assert isinstance(result.exception, ConfigError)
    assert "holds volumes of another run (seed: folder has 4, now 5)" in str(result.exception)
    result = sample(model_dir, "--out", out, "--num", 3, "--seed", 4, "--schedule", "lambda")
    assert "schedule: folder has 'uniform', now 'lambda'" in str(result.exception)
    assert json.loads((out / "manifest.json").read_text())["output"] == "x0"  # the predictor–corrector's default
    result = sample(model_dir, "--out", out, "--num", 3, "--seed", 4, "--output", "state")
    assert "output: folder has 'x0', now 'state'" in str(result.exception)
    result = sample(make_model_folder(), "--out", out, "--num", 3, "--seed", 4)
    assert "model.weights_sha256" in str(result.exception)
    assert all(p.stat().st_mtime == OLD for p in out.rglob("*") if p.is_file())
    # --overwrite starts the folder afresh
    ok(sample(model_dir, "--out", out, "--index", 0, "--seed", 5, "--overwrite"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 5 and [v["index"] for v in manifest["volumes"]] == [0]
    # sample files without a manifest cannot be checked
    (out / "manifest.json").unlink()
    result = sample(model_dir, "--out", out, "--num", 1, "--seed", 5)
    assert isinstance(result.exception, ConfigError) and "no manifest.json" in str(result.exception)


def test_size_samples_a_model_at_another_resolution(model_dir, tmp_path, spacing):
    ok(sample(model_dir, "--out", tmp_path, "--size", 32, "--no-previews"))
    volume = read_volume(tmp_path / "sample_00000.nii.gz")
    assert volume.array.shape == (32, 32, 32) and volume.spacing == spacing
    assert json.loads((tmp_path / "manifest.json").read_text())["model"]["input_size"] == [32, 32, 32]
    assert not (tmp_path / "previews").exists() and not (tmp_path / "grid.png").exists()


def test_a_quantile_model_writes_nominal_hu_with_a_warning(make_model_folder, tmp_path):
    folder = make_model_folder(normalization=Normalization(kind="quantile", hu_min=-1024, hu_max=2000))
    result = ok(sample(folder, "--out", tmp_path, "--no-previews"))
    assert "HU are nominal" in result.output
    hu = read_volume(tmp_path / "sample_00000.nii.gz").array
    assert hu.dtype == np.int16 and hu.min() >= -1024 and hu.max() <= 2000


def test_bad_arguments_name_the_problem(model_dir, tmp_path):
    cases = [
        (["--index", -1], "--index -1 is not a volume of this run"),
        (["--num", 3, "--index", 3], "--index 3 is not a volume of this run (indices are >= 0 and < --num 3)"),
        (["--num", 0], "--num must be >= 1"),
        (["--sampler", "ddim"], "sampler 'ddim' does not apply to the ian process; choose one of pc, euler, heun"),
        (["--batch", 0], "batch size must be >= 1"),
        (["--precision", "fp16"], "unknown precision 'fp16'"),
        (["--preview-window", "brain"], "unknown preview window 'brain'"),
        (["--size", "12,12"], "--size takes D or D,H,W"),
    ]
    for args, message in cases:
        result = sample(model_dir, "--out", tmp_path / "out", *args)
        assert isinstance(result.exception, ConfigError), (args, result.exception)
        assert message in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_bad_model_folders_name_the_file_and_the_problem(model_dir, make_model_folder, tmp_path):
    def fails(folder, *message):
        result = sample(folder, "--out", tmp_path / "out")
        assert isinstance(result.exception, CheckpointError), result.exception
        for part in message:
            assert part in str(result.exception)

    fails(tmp_path / "nowhere", "not a model folder")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").unlink()
    fails(broken, "missing model.safetensors")
    (broken / "config.json").unlink()
    fails(broken, "missing config.json")
    shutil.copy(model_dir / "model.safetensors", broken)
    (broken / "config.json").write_text("{not json")
    fails(broken, "config.json: not valid JSON")
    config = json.loads((model_dir / "config.json").read_text())
    config["model"]["name"] = "PRDiT-M/6/2"
    (broken / "config.json").write_text(json.dumps(config))
    fails(broken, "config.json", "unknown model 'PRDiT-M/6/2'")
    # weights of another shape: an XS model's weights under a T model's config
    config["model"]["name"] = "PRDiT-T/6/2"
    (broken / "config.json").write_text(json.dumps(config))
    shutil.copy(make_model_folder("PRDiT-XS/6/2") / "model.safetensors", broken)
    fails(broken, "model.safetensors: weights do not fit PRDiT-T/6/2", "wrong shape")
    (broken / "model.safetensors").write_bytes(b"\0" * 64)
    fails(broken, "model.safetensors: not a readable safetensors file")
    assert not (tmp_path / "out").exists()


def test_console_entry_prints_errors_as_one_line(model_dir, tmp_path, monkeypatch, capsys):
    from prdit.cli import main

    monkeypatch.setattr("sys.argv", ["prdit", "sample", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a model folder" in err and "Traceback" not in err
