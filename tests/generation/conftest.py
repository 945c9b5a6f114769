import pytest
import torch

from prdit.data.normalization import Normalization
from prdit.diffusion import IaNDiffusion
from prdit.models import create_model
from prdit.model_folder import save_model_folder

SPACING = (2.0, 1.5, 2.5)  # x, y, z: anisotropic, so an axis mix-up shows


def tiny_model(name: str = "PRDiT-T/6/2", seed: int = 0) -> torch.nn.Module:
    """A tiny 16³ model whose zero-initialised layers are perturbed, so outputs are non-trivial
    (and large enough that the HU window clips them)."""
    model = create_model(name, input_size=16)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


@pytest.fixture(scope="session")
def spacing():
    return SPACING


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    save_model_folder(path, tiny_model(), IaNDiffusion(), Normalization(), spacing=SPACING)
    return path


@pytest.fixture(scope="session")
def make_model_folder(tmp_path_factory):
    """``make_model_folder(name, normalization)``: a model folder of another tiny model."""

    def make(name: str = "PRDiT-T/6/2", normalization: Normalization = Normalization()):
        path = tmp_path_factory.mktemp("model")
        save_model_folder(path, tiny_model(name), IaNDiffusion(), normalization, spacing=SPACING)
        return path

    return make
