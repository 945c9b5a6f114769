"""Shared fixtures: sets of synthetic chest CT phantoms in the training range."""

from __future__ import annotations

import numpy as np
import pytest

from prdit.data.normalization import Normalization
from prdit.data.phantoms import generate_phantom


def phantom_set(size: int, count: int, first_seed: int = 0) -> np.ndarray:
    """``[count, size, size, size]`` float32 phantoms in [-1, 1], seeds first_seed.."""
    norm = Normalization()
    return np.stack([norm.to_model(generate_phantom(size, seed=first_seed + i).array) for i in range(count)])


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def phantoms16() -> np.ndarray:
    """128 phantoms of 16^3 (two sets of 64 for the critic)."""
    return phantom_set(16, 128)


@pytest.fixture(scope="session")
def phantoms32() -> np.ndarray:
    """32 phantoms of 32^3."""
    return phantom_set(32, 32)


@pytest.fixture
def evaluate_cli():
    """``prdit evaluate ARGS`` through typer's test runner -> its result."""
    import typer
    from typer.testing import CliRunner

    from prdit.evaluation.cli import register

    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Test app."""

    register(app)
    return lambda args: CliRunner().invoke(app, ["evaluate", *args])
