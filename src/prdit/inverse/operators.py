"""Measurement operators ``A`` for training-free inverse problems (docs/method.md §15), and simulated measurements.

Every operator maps a batch of volumes in the model range, ``[B, 1, D, H, W]``, to a measurement
with plain differentiable torch operations, on whatever device and dtype the input has. All share
one small interface (:class:`Operator`): ``A(x)`` gives the measurement and ``A.describe()`` a
JSON-ready dict of every setting, for manifests. The guided sampler takes any of them.

* :class:`Downsample` — super-resolution: trilinear interpolation to ``1/factor`` of each side
  (``align_corners=False``, no antialiasing, as the reference), ``[B, 1, D/k, H/k, W/k]``.
* :class:`Mask` — infill: ``m ⊙ x`` with ``m = 1`` on known voxels; the makers
  :func:`centre_cube_mask`, :func:`random_voxel_mask` and :func:`axial_slab_mask` build the three
  reference patterns, each described by the region that is *missing*.
* :class:`GaussianBlur` — deblurring: separable 3D Gaussian, kernel 5, σ 2 voxels, normalised to
  sum 1, zero padding (zeros of the model range), same shape as the input.
* :class:`~prdit.inverse.projector.ConeBeamProjector` (in ``projector.py``) — X-ray → CT.

:func:`simulate_measurement` renders a measurement from a ground-truth volume with an operator and
optional seeded Gaussian noise (``--simulate-from``).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from prdit.errors import ConfigError


class Operator(ABC):
    """A differentiable measurement operator ``y = A(x)`` on model-range volumes ``[B, 1, D, H, W]``."""

    name: str

    @abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The measurement of ``x`` ``[B, 1, D, H, W]`` (shape depends on the operator)."""

    @abstractmethod
    def describe(self) -> dict:
        """Every setting of the operator as a JSON-ready dict (``operator`` names the kind)."""

    def measured(self, y: torch.Tensor) -> torch.Tensor:
        """The measurement ``y`` as guidance compares it with ``A(x̂₀)``: what the operator measures of it (all)."""
        return y


def check_volume_batch(x: torch.Tensor, what: str = "volume batch") -> tuple[int, int, int]:
    """``(D, H, W)`` of a ``[B, 1, D, H, W]`` floating-point tensor, or a ``ConfigError`` saying what is wrong."""
    if not isinstance(x, torch.Tensor) or x.dim() != 5 or x.shape[1] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{what} must be a tensor of shape [B, 1, D, H, W], got {shape}")
    if not x.is_floating_point():
        raise ConfigError(f"{what} must be floating point, got {x.dtype}")
    return int(x.shape[2]), int(x.shape[3]), int(x.shape[4])


class Downsample(Operator):
    """Trilinear downsampling by an integer ``factor`` per side (``align_corners=False``)."""

    name = "downsample"

    def __init__(self, factor: int = 4) -> None:
        if int(factor) != factor or factor < 1:
            raise ConfigError(f"downsampling factor must be a positive integer, got {factor}")
        self.factor = int(factor)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, D, H, W]`` -> ``[B, 1, D/k, H/k, W/k]``."""
        shape = check_volume_batch(x)
        if any(side % self.factor for side in shape):
            raise ConfigError(f"volume sides {shape} are not divisible by the downsampling factor {self.factor}")
        size = tuple(side // self.factor for side in shape)
        return F.interpolate(x, size=size, mode="trilinear", align_corners=False)

    def describe(self) -> dict:
        """Settings for a manifest."""
        return {"operator": self.name, "factor": self.factor, "mode": "trilinear", "align_corners": False}


def centre_cube_mask(shape: Sequence[int]) -> torch.Tensor:
    """Known-voxel mask ``[D, H, W]`` (bool) missing the centred box of half of each side (1/8 of the volume)."""
    known = torch.ones(_checked_shape(shape), dtype=torch.bool)
    box = tuple(slice((n - n // 2) // 2, (n - n // 2) // 2 + n // 2) for n in known.shape)
    known[box] = False
    return known


def random_voxel_mask(shape: Sequence[int], missing_fraction: float = 0.9, seed: int = 0) -> torch.Tensor:
    """Known-voxel mask ``[D, H, W]`` (bool) missing exactly ``round(missing_fraction · N)`` voxels drawn with ``seed``.

    The draw uses a CPU generator, so one seed gives the same mask on every machine and device.
    """
    shape = _checked_shape(shape)
    if not 0.0 <= missing_fraction <= 1.0:
        raise ConfigError(f"missing_fraction must be in [0, 1], got {missing_fraction}")
    total = math.prod(shape)
    generator = torch.Generator().manual_seed(int(seed))
    missing = torch.randperm(total, generator=generator)[: round(missing_fraction * total)]
    known = torch.ones(total, dtype=torch.bool)
    known[missing] = False
    return known.reshape(shape)


def axial_slab_mask(shape: Sequence[int], thickness: int | None = None) -> torch.Tensor:
    """Known-voxel mask ``[D, H, W]`` (bool) missing ``thickness`` axial slices in the middle of D (default D/2)."""
    shape = _checked_shape(shape)
    depth = shape[0]
    thickness = depth // 2 if thickness is None else int(thickness)
    if not 0 <= thickness <= depth:
        raise ConfigError(f"slab thickness must be between 0 and the {depth} axial slices, got {thickness}")
    known = torch.ones(shape, dtype=torch.bool)
    start = (depth - thickness) // 2
    known[start:start + thickness] = False
    return known


class Mask(Operator):
    """Infill measurement ``m ⊙ x``: ``known`` ``[D, H, W]`` is True (1) where a voxel is measured."""

    name = "mask"

    def __init__(self, known: torch.Tensor, pattern: dict | None = None) -> None:
        if not isinstance(known, torch.Tensor) or known.dim() != 3:
            raise ConfigError(f"a mask must be a [D, H, W] tensor, got {getattr(known, 'shape', type(known).__name__)}")
        values = known.detach().to("cpu")
        if not bool(((values == 0) | (values == 1)).all()):
            raise ConfigError("a mask may hold only 0 (missing) and 1 (known)")
        self.known = values.bool()
        self.pattern = dict(pattern) if pattern is not None else {"pattern": "custom"}
        self._cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def weights(self, like: torch.Tensor) -> torch.Tensor:
        """The mask as ``[1, 1, D, H, W]`` with the device and dtype of ``like``."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = self.known.to(device=like.device, dtype=like.dtype)[None, None]
        return self._cache[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, D, H, W]`` -> ``[B, 1, D, H, W]`` with missing voxels set to 0."""
        shape = check_volume_batch(x)
        if shape != tuple(self.known.shape):
            raise ConfigError(f"mask of shape {tuple(self.known.shape)} does not fit volumes of shape {shape}")
        return x * self.weights(x)

    def measured(self, y: torch.Tensor) -> torch.Tensor:
        """``m ⊙ y``: a measurement given as a whole volume (``--measurement``) keeps its known voxels only; the
        values elsewhere were never measured and must not enter the residual or its gradient."""
        return self(y)

    def describe(self) -> dict:
        """Settings for a manifest: the pattern that made the mask and its known fraction (not the mask itself)."""
        return {"operator": self.name, **self.pattern, "shape": list(self.known.shape),
                "known_fraction": float(self.known.float().mean())}


# The infill pattern of the benchmark, and of `prdit reconstruct --simulate-from` when no mask is given.
DEFAULT_MASK_PATTERN = "centre_cube"


def make_mask(pattern: str, shape: Sequence[int], **settings) -> Mask:
    """A :class:`Mask` of a named reference pattern: ``centre_cube``, ``random_voxels`` or ``axial_slab``.

    ``settings`` are the maker's keywords; its description lists them with the defaults filled in
    (an axial slab's ``thickness`` None means half the axial slices).
    """
    makers = {"centre_cube": centre_cube_mask, "random_voxels": random_voxel_mask, "axial_slab": axial_slab_mask}
    if pattern not in makers:
        raise ConfigError(f"unknown mask pattern '{pattern}'; choose one of {', '.join(makers)}")
    try:
        bound = inspect.signature(makers[pattern]).bind(shape, **settings)
    except TypeError as error:
        raise ConfigError(f"mask pattern '{pattern}' does not take these settings: {error}") from error
    bound.apply_defaults()  # the manifest records every setting, defaults included
    return Mask(makers[pattern](*bound.args, **bound.kwargs),
                {"pattern": pattern, **{k: v for k, v in bound.arguments.items() if k != "shape"}})


class GaussianBlur(Operator):
    """Separable 3D Gaussian blur, kernel ``size`` voxels (odd), standard deviation ``sigma`` voxels, zero padding."""

    name = "gaussian_blur"

    def __init__(self, size: int = 5, sigma: float = 2.0) -> None:
        if int(size) != size or size < 1 or size % 2 == 0:
            raise ConfigError(f"blur kernel size must be an odd positive integer, got {size}")
        if not sigma > 0:
            raise ConfigError(f"blur sigma must be positive, got {sigma}")
        self.size = int(size)
        self.sigma = float(sigma)
        offsets = torch.arange(self.size, dtype=torch.float64) - self.size // 2
        kernel = torch.exp(-0.5 * (offsets / self.sigma) ** 2)
        self.kernel = kernel / kernel.sum()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, D, H, W]`` -> ``[B, 1, D, H, W]``: the same kernel along D, H and W in turn."""
        check_volume_batch(x)
        kernel = self.kernel.to(device=x.device, dtype=x.dtype)
        pad = self.size // 2
        x = F.conv3d(x, kernel.view(1, 1, -1, 1, 1), padding=(pad, 0, 0))
        x = F.conv3d(x, kernel.view(1, 1, 1, -1, 1), padding=(0, pad, 0))
        return F.conv3d(x, kernel.view(1, 1, 1, 1, -1), padding=(0, 0, pad))

    def describe(self) -> dict:
        """Settings for a manifest."""
        return {"operator": self.name, "kernel_size": self.size, "sigma_voxels": self.sigma, "padding": "zeros"}


def simulate_measurement(operator: Operator, x: torch.Tensor, noise_std: float = 0.0, seed: int = 0) -> torch.Tensor:
    """``A(x) + noise_std · z`` for ground truth ``x`` ``[B, 1, D, H, W]``, ``z ~ N(0, 1)`` drawn from ``seed``.

    ``noise_std`` is in the measurement's own units (model range for downsampling, masking and blur;
    water-equivalent mm for projections). Noise is drawn on the CPU, so a seed gives the same
    measurement on every device. Masked-out voxels stay exactly 0: only measured values are noisy.
    """
    if not noise_std >= 0:
        raise ConfigError(f"measurement noise_std must be >= 0, got {noise_std}")
    with torch.no_grad():
        y = operator(x)
        if noise_std > 0:
            generator = torch.Generator().manual_seed(int(seed))
            noise = torch.randn(y.shape, generator=generator, dtype=torch.float64)
            noise = noise.to(device=y.device, dtype=y.dtype) * noise_std
            y = y + (operator.weights(y) * noise if isinstance(operator, Mask) else noise)
    return y


def _checked_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """``shape`` as three positive ints ``(D, H, W)``, or a ``ConfigError``."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"a mask shape is three positive sides (D, H, W), got {shape}")
    return shape
