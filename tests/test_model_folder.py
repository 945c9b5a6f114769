"""Model folders: the process is recorded, format 1 folders still load, one loader for all sources."""

import json

import pytest
import torch

from prdit.data.normalization import Normalization
from prdit.diffusion import FlowMatching, IaNDiffusion
from prdit.errors import CheckpointError, ConfigError
from prdit.generation.pipeline import PRDiTPipeline
from prdit.model_folder import FORMAT_VERSION, load_model_folder, load_weights, read_model_config, save_model_folder
from prdit.models import create_model


def _model(out_channels: int):
    torch.manual_seed(0)
    model = create_model("PRDiT-T/6/1", input_size=16, out_channels=out_channels)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_a_flow_model_folder_records_its_process_and_samples(tmp_path):
    save_model_folder(tmp_path / "fm", _model(1), FlowMatching(), Normalization())
    config = read_model_config(tmp_path / "fm")
    assert config["format_version"] == FORMAT_VERSION and config["process"] == {"kind": "flow", "time_scale": 1000.0}
    assert config["model"]["out_channels"] == 1
    pipe = PRDiTPipeline.from_pretrained(tmp_path / "fm", device="cpu")
    assert pipe.process == FlowMatching()
    out = pipe(num_volumes=1, steps=3, seed=0, output_type="model")
    assert out.volumes.shape == (1, 1, 16, 16, 16) and torch.isfinite(out.volumes).all()
    assert pipe.settings().sampler == "euler" and pipe.settings().steps == 100


def test_a_model_whose_channels_do_not_fit_the_process_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="the flow process needs 1"):
        save_model_folder(tmp_path / "bad", _model(2), FlowMatching(), Normalization())


def test_folders_of_format_1_still_load_as_ian(tmp_path):
    model = _model(2)
    save_model_folder(tmp_path / "v1", model, IaNDiffusion(noise_std=0.5), Normalization())
    config = json.loads((tmp_path / "v1" / "config.json").read_text())
    # What the first release wrote: no process section, learn_sigma, an unread sampling block.
    config["format_version"] = 1
    config["diffusion"] = {"num_timesteps": 1000, "noise_std": 0.5}
    del config["process"]
    config["model"]["learn_sigma"] = True
    del config["model"]["out_channels"]
    config["sampling"] = {"sampler": "pc", "steps": 1000}
    (tmp_path / "v1" / "config.json").write_text(json.dumps(config))
    folder = load_model_folder(tmp_path / "v1")
    assert folder.process == IaNDiffusion() and folder.model.config.out_channels == 2
    assert "sampling" not in folder.extra
    for name, value in model.state_dict().items():
        assert torch.equal(folder.model.state_dict()[name], value)


def test_one_loader_reads_folders_safetensors_and_refuses_what_it_cannot(tmp_path):
    model = _model(2)
    save_model_folder(tmp_path / "m", model, IaNDiffusion(), Normalization())
    from_folder = load_weights(tmp_path / "m")
    from_file = load_weights(tmp_path / "m" / "model.safetensors")
    assert from_folder.step is None and set(from_folder.state) == set(model.state_dict())
    assert all(torch.equal(from_folder.state[k], from_file.state[k]) for k in from_folder.state)
    with pytest.raises(CheckpointError, match="no such run directory"):
        load_weights(tmp_path / "nowhere")
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_weights(tmp_path / "run")
    newer = json.loads((tmp_path / "m" / "config.json").read_text())
    newer["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "m" / "config.json").write_text(json.dumps(newer))
    with pytest.raises(CheckpointError, match="newer than this prdit reads"):
        read_model_config(tmp_path / "m")


def test_saving_leaves_no_partial_files(tmp_path):
    save_model_folder(tmp_path / "m", _model(2), IaNDiffusion(), Normalization())
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
