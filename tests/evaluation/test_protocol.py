"""The published evaluation protocol end to end: the README's `prdit evaluate` step as written."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.dataset import load_training_array, split_volumes
from prdit.data.io import write_volume
from prdit.data.normalization import Normalization
from prdit.data.phantoms import generate_phantom
from prdit.diffusion import IaNDiffusion
from prdit.errors import DataError
from prdit.evaluation.config import EvaluationConfig, MSSSIMConfig
from prdit.evaluation.medicalnet import random_medicalnet
from prdit.evaluation.report import evaluate
from prdit.evaluation.volumes import VolumeSet
from prdit.models import create_model
from prdit.model_folder import save_model_folder

# The model's own HU window, unlike the default, so the test sees whether --model is used.
MODEL_NORMALIZATION = Normalization(hu_min=-1000.0, hu_max=600.0)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """Stored 64³ real scans with a split, a 32³ model folder, 32³ generated HU samples, MedicalNet-format weights."""
    root = tmp_path_factory.mktemp("workflow")
    for i in range(6):
        write_volume(root / "data" / f"case{i}.nii.gz", generate_phantom(64, seed=i))
    split_volumes(root / "data", val_fraction=0.5, seed=42)
    save_model_folder(root / "model", create_model("PRDiT-T/6/0", input_size=32), IaNDiffusion(), MODEL_NORMALIZATION)
    for i in range(4):
        phantom = generate_phantom(32, seed=100 + i)
        write_volume(root / "samples" / f"sample_{i:05d}.nii.gz", phantom)
    weights = root / "resnet_50_23dataset.pth"
    model = random_medicalnet(seed=3)
    torch.save({"state_dict": OrderedDict((f"module.{k}", v) for k, v in model.state_dict().items()
                                          if not k.endswith("num_batches_tracked"))}, weights)
    return root


def _evaluate(args: list[str]):
    return CliRunner().invoke(app, ["evaluate", *args, "--metrics", "fid,mmd,msssim", "--msssim-pairs", "2",
                                    "--no-cache", "--quiet"])


def test_readme_step_runs_as_written_and_pools_the_real_set_as_training_does(workflow):
    root = workflow
    out = root / "report.json"
    result = _evaluate(["--real", str(root / "data" / "val.txt"), "--fake", str(root / "samples"),
                        "--model", str(root / "model"), "--weights", str(root / "resnet_50_23dataset.pth"),
                        "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["input_size"] == [32, 32, 32] and report["samples"] == {"real": 3, "fake": 4}
    assert report["real"]["units"] == "hu" and report["fake"]["units"] == "hu"  # inferred, no flags given
    assert "block-averaged from [64, 64, 64]" in report["real"]["sizing"]
    assert report["normalization"] == MODEL_NORMALIZATION.to_dict()
    assert report["protocol"]["fid"]["published"] and report["protocol"]["mmd"]["published"]
    assert "published" in result.output


def test_real_volumes_are_exactly_the_training_arrays(workflow):
    files = sorted((workflow / "data").glob("case*.nii.gz"))
    pooled = VolumeSet(files, units="auto", normalization=MODEL_NORMALIZATION, size=(32, 32, 32))
    for i, path in enumerate(files):
        np.testing.assert_array_equal(pooled[i], load_training_array(path, 32, MODEL_NORMALIZATION))
    # The smoothing resize, the only way before, is a different set of volumes.
    resized = VolumeSet(files, units="auto", normalization=MODEL_NORMALIZATION, resize=(32, 32, 32))
    rms = float(np.sqrt(np.mean([(resized[i] - pooled[i]) ** 2 for i in range(len(files))])))
    assert rms > 0.02, rms


def test_reference_statistics_are_saved_once_and_reused(workflow, tmp_path):
    root = workflow
    stats = tmp_path / "lidc-val-stats.npz"
    common = ["--fake", str(root / "samples"), "--model", str(root / "model"),
              "--weights", str(root / "resnet_50_23dataset.pth"), "--real-stats", str(stats)]
    first = _evaluate(["--real", str(root / "data" / "val.txt"), *common, "--out", str(tmp_path / "a.json")])
    assert first.exit_code == 0, first.output
    assert stats.is_file()
    second = _evaluate([*common, "--out", str(tmp_path / "b.json")])  # no real volumes at all
    assert second.exit_code == 0, second.output
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert b["reference_stats"]["reused"] is True and b["samples"]["real"] == 3
    assert b["fid"]["value"] == pytest.approx(a["fid"]["value"], rel=1e-9)
    assert b["mmd"]["value"] == pytest.approx(a["mmd"]["value"], rel=1e-9)
    assert "real" not in b["msssim"]
    # Another feature network must not use these statistics.
    other = EvaluationConfig(features="random-init", seed=1, real_stats=str(stats), metrics=("fid",), progress=False,
                             cache_dir=None, normalization=MODEL_NORMALIZATION)
    with pytest.raises(DataError, match="feature network"):
        evaluate(None, root / "samples", other)
    # Nor a real set other than the one they were made from.
    config = EvaluationConfig(weights=str(root / "resnet_50_23dataset.pth"), real_stats=str(stats),
                              metrics=("fid",), progress=False, cache_dir=None, normalization=MODEL_NORMALIZATION)
    with pytest.raises(DataError, match="another real set"):
        evaluate(sorted((root / "data").glob("case*.nii.gz"))[:2], root / "samples", config)


def test_reference_statistics_refuse_another_normalisation_or_units(workflow, tmp_path):
    stats, samples = tmp_path / "stats.npz", workflow / "samples"
    common = dict(features="random-init", seed=1, real_stats=str(stats), metrics=("fid",), progress=False,
                  cache_dir=None)
    made = evaluate(workflow / "data" / "val.txt", samples, EvaluationConfig(normalization=MODEL_NORMALIZATION,
                                                                              **common))
    assert made["reference_stats"]["real"]["normalization"] == MODEL_NORMALIZATION.to_dict()
    reused = evaluate(None, samples, EvaluationConfig(normalization=MODEL_NORMALIZATION, **common))
    assert reused["reference_stats"]["reused"] and reused["fid"]["value"] == pytest.approx(made["fid"]["value"])
    # The default HU window is not the one the real volumes were normalised with.
    with pytest.raises(DataError, match="normalised with .* give the --model"):
        evaluate(None, samples, EvaluationConfig(**common))
    with pytest.raises(DataError, match="--real-units hu"):
        evaluate(None, samples, EvaluationConfig(normalization=MODEL_NORMALIZATION, real_units="model", **common))
    # Statistics that do not record their normalisation are not trusted.
    with np.load(stats) as archive:
        contents = dict(archive)
    header = json.loads(str(contents["header"]))
    del header["real"]["normalization"]
    np.savez(stats, **{**contents, "header": np.array(json.dumps(header))})
    with pytest.raises(DataError, match="does not record"):
        evaluate(None, samples, EvaluationConfig(normalization=MODEL_NORMALIZATION, **common))


def test_units_are_inferred_and_ambiguous_values_need_a_flag(workflow, tmp_path):
    norm = Normalization()
    model_range = np.stack([norm.to_model(generate_phantom(16, seed=i).array) for i in range(2)])
    assert VolumeSet(list(model_range), units="auto").units == "model"
    hu = [generate_phantom(16, seed=i).array for i in range(2)]
    assert VolumeSet(hu, units="auto").units == "hu"
    with pytest.raises(DataError, match="--real-units"):
        VolumeSet([np.full((16, 16, 16), 40.0, np.float32)], units="auto", name="real")


def test_model_flag_and_normalisation_flags_exclude_each_other(workflow):
    result = _evaluate(["--real", str(workflow / "data" / "val.txt"), "--fake", str(workflow / "samples"),
                        "--model", str(workflow / "model"), "--hu-max", "1000", "--features", "random-init",
                        "--seed", "0"])
    assert result.exit_code != 0 and "--model gives the normalisation" in str(result.exception)


def test_published_msssim_setting_is_the_default_at_64(tmp_path):
    norm = Normalization()
    volumes = np.stack([norm.to_model(generate_phantom(64, seed=i).array) for i in range(2)])
    report = evaluate(volumes, volumes, EvaluationConfig(metrics=("msssim",), msssim=MSSSIMConfig(max_pairs=1),
                                                         progress=False))
    entry = report["msssim"]["fake"]
    assert (entry["kernel_size"], entry["scales"], entry["published_setting"]) == (3, 5, True)
    assert report["protocol"]["msssim"] == {"published": True, "why_not": []}


def test_a_truncated_real_file_is_an_error_not_a_score(workflow, tmp_path):
    source = workflow / "data" / "case0.nii.gz"
    damaged = tmp_path / "case0.nii.gz"
    damaged.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(DataError, match="case0.nii.gz.*truncated or corrupt"):
        VolumeSet([damaged], units="auto")
