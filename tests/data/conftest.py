import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed random generator: shuffled file names and orders are the same on every run."""
    return np.random.default_rng(1234)
