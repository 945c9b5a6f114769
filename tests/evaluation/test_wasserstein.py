"""WGAN-GP critic: about zero for one distribution, clearly positive for different ones, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from prdit.evaluation.config import CriticConfig
from prdit.evaluation.volumes import VolumeSet
from prdit.evaluation.wasserstein import Critic, wasserstein_estimate

# Small and quick: 16^3 phantoms, 64 per set, a few hundred steps at a higher learning rate.
QUICK = CriticConfig(steps=200, batch_size=8, lr=1e-3, seed=0)


def test_critic_reduces_any_size_to_a_score():
    import torch

    for shape in [(16, 16, 16), (32, 24, 16), (64, 64, 64)]:
        assert Critic(shape)(torch.zeros(2, 1, *shape)).shape == (2,)


@pytest.mark.slow
def test_estimate_is_about_zero_for_one_distribution_and_large_for_different_ones(phantoms16):
    real, other = VolumeSet(phantoms16[:64]), phantoms16[64:128]
    noise = np.random.default_rng(0).standard_normal(other.shape).astype(np.float32)
    same = wasserstein_estimate(real, VolumeSet(other), QUICK, progress=False)
    different = wasserstein_estimate(real, VolumeSet(np.clip(other + 0.2 * noise, -1, 1)), QUICK, progress=False)
    assert abs(same["value"]) < 1.0
    assert abs(same["value"]) < 3 * same["standard_error"]
    assert different["value"] > 2.5
    assert different["value"] > 5 * different["standard_error"]
    assert same["split"] == {"train_fraction": 0.5, "real": {"train": 32, "held_out": 32},
                             "fake": {"train": 32, "held_out": 32}}


def test_estimate_is_deterministic_for_a_seed(phantoms16):
    real, fake = VolumeSet(phantoms16[:8]), VolumeSet(np.clip(phantoms16[8:16] + 0.1, -1, 1))
    config = CriticConfig(steps=5, batch_size=4, seed=3)
    first = wasserstein_estimate(real, fake, config, progress=False)
    again = wasserstein_estimate(real, fake, config, progress=False)
    other_seed = wasserstein_estimate(real, fake, CriticConfig(steps=5, batch_size=4, seed=4), progress=False)
    assert first == again
    assert first["value"] != other_seed["value"]
    assert (first["steps"], first["seed"], first["gp_weight"]) == (5, 3, 10.0)
