"""Training previews sample with the process's default steps unless the config names them."""

from types import SimpleNamespace

import torch

from prdit.data.normalization import Normalization
from prdit.diffusion import IaNDiffusion
from prdit.training.config import LogConfig
from prdit.training.previews import save_training_preview


class Counting(torch.nn.Module):
    """A stand-in network at 8³ that predicts zeros and counts its calls."""

    config = SimpleNamespace(in_channels=1, input_size=(8, 8, 8))

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.zeros(x.shape[0], 2, *x.shape[2:])


def test_preview_steps_follow_the_process_unless_set(tmp_path, monkeypatch):
    monkeypatch.setattr(IaNDiffusion, "sample_steps", 3)
    model = Counting()
    save_training_preview(model, IaNDiffusion(), Normalization(), tmp_path / "preview.png", num=1,
                          steps=LogConfig().preview_steps, seed=0, device=torch.device("cpu"))
    assert model.calls == 3 and (tmp_path / "preview.png").is_file()
    model = Counting()
    save_training_preview(model, IaNDiffusion(), Normalization(), tmp_path / "preview.png", num=1,
                          steps=LogConfig(preview_steps=5).preview_steps, seed=0, device=torch.device("cpu"))
    assert model.calls == 5
