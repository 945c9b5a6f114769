"""MedicalNet / Med3D 3D ResNet-50: the feature network of 3D FID and MMD.

The architecture and parameter names follow the MedicalNet release (Chen et al., 2019), so
its checkpoints (``resnet_50.pth``, ``resnet_50_23dataset.pth``) load without renaming:
Bottleneck blocks [3, 4, 6, 3], shortcut type B (1x1x1 conv + BN when the shape changes),
a 7^3 stride-2 stem and a stride-2 max-pool, layer2 at stride 2, layer3 and layer4 at stride
1 with dilation 2 and 4. The segmentation head (``conv_seg``) is replaced by global average
pooling, giving 2048-d features.

Loading is strict: a silently random feature network is the most common way published 3D
FID numbers go wrong, so every key must match, with two exceptions that MedicalNet's own
files need: ``num_batches_tracked`` buffers (absent in checkpoints from old PyTorch) and the
``conv_seg.*`` head (present, unused).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from prdit.errors import CheckpointError

FEATURE_DIM = 2048
LAYERS = (3, 4, 6, 3)
NAME = "MedicalNet 3D ResNet-50 (Med3D), global average pooled"


class Bottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3 (strided, dilated), 1x1x1 expand, residual add."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, D, H, W]`` -> ``[B, 4 * planes, D', H', W']``."""
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ResNet3d(nn.Module):
    """What the 3D ResNet backbones share: layers of Bottleneck blocks with a type-B shortcut, the
    stem -> max-pool -> layer1..4 feature map, global average pooling, and the initialisation."""

    inplanes: int

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            # Shortcut type B: a learned projection wherever the residual changes shape.
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _initialize(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The input through the stem, the max-pool and the four layers: ``[B, 2048, D', H', W']``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features ``[B, 2048]``."""
        return self.feature_map(x).mean(dim=(2, 3, 4))


class MedicalNetResNet50(ResNet3d):
    """Med3D ResNet-50 backbone; ``forward`` takes ``[B, 1, D, H, W]`` in the training range and returns
    pooled features ``[B, 2048]`` (the feature map, MedicalNet's head input, is ``D/8, H/8, W/8``)."""

    def __init__(self) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv3d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, LAYERS[0])
        self.layer2 = self._make_layer(128, LAYERS[1], stride=2)
        self.layer3 = self._make_layer(256, LAYERS[2], dilation=2)
        self.layer4 = self._make_layer(512, LAYERS[3], dilation=4)
        self._initialize()


def random_medicalnet(seed: int) -> MedicalNetResNet50:
    """A randomly initialised network, reproducible from ``seed`` (smoke tests only)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MedicalNetResNet50()
    return model.eval()


def load_medicalnet(path: str | Path) -> MedicalNetResNet50:
    """Load a MedicalNet ResNet-50 checkpoint strictly (``{"state_dict": ...}`` or a plain state dict)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file; download MedicalNet's resnet_50_23dataset.pth "
                              "(or resnet_50.pth) and pass its path")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for unreadable or unsafe pickles
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(err).__name__}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})") from err
    model = MedicalNetResNet50()
    model.load_state_dict(backbone_state_dict(checkpoint, model, source=str(path)), strict=False)
    return model.eval()


def backbone_state_dict(checkpoint: object, model: MedicalNetResNet50, source: str = "checkpoint") -> dict:
    """The checkpoint's backbone tensors under the model's names; raises CheckpointError on any mismatch."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: expected a state dict of tensors, or {{'state_dict': ...}} as "
                              "MedicalNet distributes them")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("conv_seg.")}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
                   for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {name_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {name_list(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {name_list(wrong_shape)}")
    if problems:
        raise CheckpointError(f"{source} is not a MedicalNet ResNet-50 checkpoint ({'; '.join(problems)}); "
                              "use resnet_50_23dataset.pth or resnet_50.pth from MedicalNet")
    return state


def name_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
