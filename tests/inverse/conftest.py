"""Shared fixtures for the inverse-problem tests: one torch thread and a held-out phantom."""

from __future__ import annotations

import pytest
import torch

from prdit.data.normalization import Normalization
from prdit.data.phantoms import generate_phantom


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tensors here are small: one thread is as fast, and immune to oversubscribed CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def phantom32() -> tuple[torch.Tensor, tuple[float, float, float]]:
    """A 32³ chest phantom in the model range ``[1, 1, 32, 32, 32]`` and its spacing (x, y, z) in mm."""
    volume = generate_phantom(32, seed=3)
    return torch.from_numpy(Normalization().to_model(volume.array))[None, None], volume.spacing
