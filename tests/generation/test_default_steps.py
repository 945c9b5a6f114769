"""One default per purpose: with no steps given, plain sampling takes the process's ``sample_steps`` and
guided reconstruction its ``guided_steps``, from the command line and from ``PRDiTPipeline`` alike."""

import json

from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.io import write_volume
from prdit.data.phantoms import generate_phantom
from prdit.diffusion import IaNDiffusion


def invoke(*args):
    result = CliRunner().invoke(app, [*map(str, args), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_ian_samples_with_its_measured_steps_and_reconstructs_with_the_references():
    assert (IaNDiffusion.sample_steps, IaNDiffusion.guided_steps) == (100, 1000)


def test_prdit_sample_without_steps_takes_the_sampling_default(model_dir, tmp_path):
    invoke("sample", model_dir, "--out", tmp_path, "--no-previews")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["sampler"], manifest["steps"]) == ("pc", IaNDiffusion.sample_steps)


def test_prdit_reconstruct_without_steps_takes_the_guided_default(model_dir, spacing, tmp_path, monkeypatch):
    # 1,000 guided steps take a minute even on this tiny model: both defaults shrink, and stay apart
    monkeypatch.setattr(IaNDiffusion, "sample_steps", 5)
    monkeypatch.setattr(IaNDiffusion, "guided_steps", 6, raising=False)
    volume = generate_phantom(16, seed=7)
    volume.spacing = spacing
    ct = write_volume(tmp_path / "ct.nii.gz", volume)
    printed = invoke("reconstruct", model_dir, "--task", "sr", "--simulate-from", ct, "--out", tmp_path / "sr",
                     "--no-previews").output
    manifest = json.loads((tmp_path / "sr" / "manifest.json").read_text())
    assert (manifest["sampler"]["sampler"], manifest["sampler"]["steps"]) == ("pc", IaNDiffusion.guided_steps)
    assert f"{IaNDiffusion.guided_steps} guided pc steps" in printed
