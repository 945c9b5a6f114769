"""Shared fixtures for the inverse-problem tests: one torch thread and a held-out phantom."""

from __future__ import annotations

import pytest
import torch

from prdit.data.normalization import Normalization
from prdit.data.phantoms import generate_phantom


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def phantom32() -> tuple[torch.Tensor, tuple[float, float, float]]:
    """A 32³ chest phantom in the model range ``[1, 1, 32, 32, 32]`` and its spacing (x, y, z) in mm."""
    volume = generate_phantom(32, seed=3)
    return torch.from_numpy(Normalization().to_model(volume.array))[None, None], volume.spacing
