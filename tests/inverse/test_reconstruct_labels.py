"""``prdit reconstruct --labels``: a conditional model's prior follows a label map, one for every case or one per
case by name; the map is checked before anything is written and is part of what a finished folder must match."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.io import Volume, file_sha256, read_volume, write_volume
from prdit.data.labels import LABELS, write_label_map, write_label_table
from prdit.data.normalization import Normalization
from prdit.data.phantoms import generate_phantom
from prdit.diffusion import IaNDiffusion
from prdit.errors import ConfigError, DataError
from prdit.model_folder import save_model_folder
from prdit.models import create_model

SIZE = 16
SPACING = (2.0, 1.5, 2.5)


def reconstruct(*args):
    """Run ``prdit reconstruct`` in-process; the project's errors come back as ``result.exception``."""
    return CliRunner().invoke(app, ["reconstruct", *map(str, args), "--task", "sr", "--steps", "4", "--quiet",
                                    "--device", "cpu", "--no-previews"])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def cond_dir(make_conditional_model, tmp_path_factory):
    """A tiny conditional PRDiT-T/6/1 (both stages see the map) with every weight off its initialisation."""
    return make_conditional_model(tmp_path_factory.mktemp("cond"), SIZE, SPACING, seed=2)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Two 16³ phantoms on the model's grid: cases a and b."""
    folder = tmp_path_factory.mktemp("cts")
    for name, seed in (("a", 7), ("b", 8)):
        volume = generate_phantom(SIZE, seed=seed)
        volume.spacing, volume.origin = SPACING, (10.0, -20.0, 30.0)
        write_volume(folder / f"{name}.nii.gz", volume)
    return folder


def write_map(path, structure: str, value: int = 0):
    labels = np.full((SIZE,) * 3, LABELS["torso_fat"], dtype=np.uint8)
    labels[4:12, 3:10, 5:11] = LABELS[structure]
    labels[0, 0, 0] = value or labels[0, 0, 0]
    like = Volume(array=labels, spacing=SPACING, origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    write_label_map(path, labels, like)
    write_label_table(path.parent)
    return path


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    """Label maps per case by name (a: heart, b: liver)."""
    folder = tmp_path_factory.mktemp("maps")
    write_map(folder / "a.nii.gz", "heart")
    write_map(folder / "b.nii.gz", "liver")
    return folder


def test_the_prior_follows_the_map_and_the_manifest_records_it(cond_dir, cases, maps, tmp_path):
    out = {name: tmp_path / name for name in ("heart", "liver", "none")}
    ok(reconstruct(cond_dir, "--simulate-from", cases / "a.nii.gz", "--labels", maps / "a.nii.gz",
                   "--guidance-scale", 2, "--out", out["heart"]))
    ok(reconstruct(cond_dir, "--simulate-from", cases / "a.nii.gz", "--labels", maps / "b.nii.gz",
                   "--guidance-scale", 2, "--out", out["liver"]))
    printed = ok(reconstruct(cond_dir, "--simulate-from", cases / "a.nii.gz", "--out", out["none"])).output
    assert "null condition" in printed
    volumes = {k: read_volume(v / "reconstruction.nii.gz").array for k, v in out.items()}
    assert not np.array_equal(volumes["heart"], volumes["liver"])
    assert not np.array_equal(volumes["heart"], volumes["none"])
    manifest = json.loads((out["heart"] / "manifest.json").read_text())
    assert manifest["labels"]["file"] == str((maps / "a.nii.gz").resolve())
    assert manifest["labels"]["sha256"] == file_sha256(maps / "a.nii.gz")
    assert manifest["guidance_scale"] == 2.0
    assert "null condition" in " ".join(json.loads((out["none"] / "manifest.json").read_text())["notes"])
    # the same run again is finished; another map is another run
    assert "already holds" in ok(reconstruct(cond_dir, "--simulate-from", cases / "a.nii.gz", "--labels",
                                             maps / "a.nii.gz", "--guidance-scale", 2, "--out", out["heart"])).output
    result = reconstruct(cond_dir, "--simulate-from", cases / "a.nii.gz", "--labels", maps / "b.nii.gz",
                         "--guidance-scale", 2, "--out", out["heart"])
    assert isinstance(result.exception, ConfigError) and "labels" in str(result.exception)


def test_a_folder_of_maps_gives_each_case_its_own(cond_dir, cases, maps, tmp_path):
    out = tmp_path / "cases"
    ok(reconstruct(cond_dir, "--simulate-from", cases, "--labels", maps, "--out", out))
    for name in ("a", "b"):
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["labels"]["file"] == str((maps / f"{name}.nii.gz").resolve())
    # the case on its own with its map: the same volume
    ok(reconstruct(cond_dir, "--simulate-from", cases / "b.nii.gz", "--labels", maps, "--out", tmp_path / "b"))
    assert np.array_equal(read_volume(tmp_path / "b" / "reconstruction.nii.gz").array,
                          read_volume(out / "b" / "reconstruction.nii.gz").array)


def test_a_missing_or_bad_map_or_an_unconditional_model_is_refused_before_anything_is_written(cond_dir, cases, maps,
                                                                                            tmp_path):

    partial = tmp_path / "partial"
    shutil.copytree(maps, partial)
    (partial / "b.nii.gz").unlink()
    out = tmp_path / "out"
    result = reconstruct(cond_dir, "--simulate-from", cases, "--labels", partial, "--out", out)
    assert isinstance(result.exception, DataError) and "b.nii.gz" in str(result.exception)
    bad = write_map(tmp_path / "bad" / "map.nii.gz", "heart", value=200)
    result = reconstruct(cond_dir, "--simulate-from", cases, "--labels", bad, "--out", out)
    assert isinstance(result.exception, DataError) and "map.nii.gz" in str(result.exception)
    assert not out.exists()
    plain = tmp_path / "plain"
    save_model_folder(plain, create_model("PRDiT-T/6/1", SIZE), IaNDiffusion(), Normalization(), spacing=SPACING)
    result = reconstruct(plain, "--simulate-from", cases / "a.nii.gz", "--labels", maps / "a.nii.gz", "--out", out)
    assert isinstance(result.exception, ConfigError) and "unconditional" in str(result.exception)
    assert not out.exists()
