"""MedicalNet ResNet-50: architecture, key names, and strict loading of checkpoints as distributed."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from prdit.errors import CheckpointError
from prdit.evaluation.medicalnet import (FEATURE_DIM, MedicalNetResNet50, backbone_state_dict, load_medicalnet,
                                         random_medicalnet)


@pytest.fixture(scope="module")
def source_model() -> MedicalNetResNet50:
    model = random_medicalnet(seed=1)
    # Non-trivial BN statistics, so a checkpoint that lost its buffers would show in the outputs.
    generator = torch.Generator().manual_seed(0)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
        elif name.endswith("running_var"):
            buffer.copy_(1.0 + 0.5 * torch.rand(buffer.shape, generator=generator))
    return model


def medicalnet_format(model: MedicalNetResNet50) -> dict:
    """A checkpoint the way MedicalNet distributes one: DataParallel names, old PyTorch, with a seg head."""
    state = OrderedDict((f"module.{k}", v.clone()) for k, v in model.state_dict().items()
                        if not k.endswith("num_batches_tracked"))
    state["module.conv_seg.0.weight"] = torch.zeros(32, 2048, 3, 3, 3)
    state["module.conv_seg.1.weight"] = torch.ones(32)
    return {"state_dict": state}


def test_architecture_shapes_strides_and_dilations():
    model = random_medicalnet(seed=0)
    x = torch.zeros(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert model.feature_map(x).shape == (2, 2048, 2, 2, 2)
        assert model(torch.zeros(1, 1, 32, 24, 16)).shape == (1, FEATURE_DIM)
    assert model.conv1.kernel_size == (7, 7, 7) and model.conv1.stride == (2, 2, 2)
    assert [len(layer) for layer in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 4, 6, 3]
    assert model.layer2[0].conv2.stride == (2, 2, 2)
    assert model.layer3[0].conv2.stride == (1, 1, 1) and model.layer3[0].conv2.dilation == (2, 2, 2)
    assert model.layer4[2].conv2.dilation == (4, 4, 4) and model.layer4[2].conv2.padding == (4, 4, 4)
    names = set(model.state_dict())
    for name in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
                 "layer1.0.downsample.1.running_mean", "layer3.0.downsample.0.weight", "layer4.2.bn3.bias"):
        assert name in names
    assert "layer1.1.downsample.0.weight" not in names


def test_random_init_is_reproducible_from_seed():
    a, b, c = random_medicalnet(3), random_medicalnet(3), random_medicalnet(4)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_medicalnet_checkpoint_with_module_prefix_loads(tmp_path, source_model):
    path = tmp_path / "resnet_50_23dataset.pth"
    # MedicalNet's files predate the zip format: save in the legacy one.
    torch.save(medicalnet_format(source_model), path, _use_new_zipfile_serialization=False)
    loaded = load_medicalnet(path)
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded(x), source_model.eval()(x))
    assert not loaded.training


def test_plain_state_dict_loads(tmp_path, source_model):
    path = tmp_path / "plain.pth"
    torch.save(source_model.state_dict(), path)
    loaded = load_medicalnet(path)
    assert torch.equal(loaded.layer4[2].bn3.running_var, source_model.layer4[2].bn3.running_var)


@pytest.mark.parametrize("change, named", [
    (lambda s: s.pop("module.layer2.1.bn2.running_mean"), "missing keys: layer2.1.bn2.running_mean"),
    (lambda s: s.pop("module.layer1.0.downsample.0.weight"), "layer1.0.downsample.0.weight"),
    (lambda s: s.__setitem__("module.fc.weight", torch.zeros(2, 2048)), "unexpected keys: fc.weight"),
    (lambda s: s.__setitem__("module.conv1.weight", torch.zeros(64, 1, 3, 3, 3)), "wrong shapes: conv1.weight"),
])
def test_checkpoint_that_does_not_fit_is_an_error_naming_the_keys(source_model, change, named):
    checkpoint = medicalnet_format(source_model)
    change(checkpoint["state_dict"])
    with pytest.raises(CheckpointError, match="not a MedicalNet ResNet-50 checkpoint") as info:
        backbone_state_dict(checkpoint, source_model)
    assert named in str(info.value)


def test_checkpoint_file_with_a_missing_key_fails_to_load(tmp_path, source_model):
    checkpoint = medicalnet_format(source_model)
    del checkpoint["state_dict"]["module.layer3.5.conv2.weight"]
    path = tmp_path / "resnet_50.pth"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"resnet_50.pth is not a MedicalNet ResNet-50 checkpoint "
                                              r"\(missing keys: layer3.5.conv2.weight\)"):
        load_medicalnet(path)


def test_unreadable_or_absent_weights_are_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_medicalnet(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_medicalnet(garbage)
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(CheckpointError, match="state dict"):
        load_medicalnet(tensor_only)
