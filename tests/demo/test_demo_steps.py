"""The demo's sampling and super-resolution steps, left unset, are its model's process's defaults."""

import pytest

from prdit.data.normalization import Normalization
from prdit.data.phantoms import write_phantoms
from prdit.demo import run as demo
from prdit.diffusion import IaNDiffusion
from prdit.model_folder import save_model_folder
from prdit.models import create_model


class Recorded(Exception):
    """Raised by the recording stand-ins once they have seen the settings."""


@pytest.fixture()
def model_dir(tmp_path):
    save_model_folder(tmp_path / "model", create_model("PRDiT-T/6/2", input_size=16), IaNDiffusion(), Normalization())
    return tmp_path / "model"


def test_the_demo_samples_and_reconstructs_with_the_process_steps(model_dir, tmp_path, monkeypatch):
    import prdit.generation.pipeline as pipeline
    import prdit.generation.run as generation

    monkeypatch.setattr(IaNDiffusion, "sample_steps", 7)
    monkeypatch.setattr(IaNDiffusion, "guided_steps", 9)
    seen = []

    def record_run(pipe, out, indices, settings, *args, **kwargs):
        seen.append(pipe.settings(settings).steps)
        raise Recorded

    def record_sampling(model, process, generators, settings, *args, **kwargs):
        seen.append(settings.steps)
        raise Recorded

    monkeypatch.setattr(generation, "generate_to_folder", record_run)
    monkeypatch.setattr(pipeline, "sample_volumes", record_sampling)
    settings = demo.DemoSettings(size=16)
    with pytest.raises(Recorded):
        demo._sample(model_dir, tmp_path / "samples", settings, progress=False)
    write_phantoms(1, 16, tmp_path / "phantoms", seed=0)
    (tmp_path / "val.txt").write_text(f"{next((tmp_path / 'phantoms').glob('*.nii.gz'))}\n")
    with pytest.raises(Recorded):
        demo._super_resolution(model_dir, tmp_path / "val.txt", tmp_path / "superres.json", settings)
    assert seen == [7, 9]
    assert demo._sampling_config(settings).resolved(IaNDiffusion()).steps == 7
