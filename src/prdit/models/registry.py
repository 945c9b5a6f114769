"""Model registry: ``PRDiT-{size}/{P}/{depth}`` names -> shapes (docs/method.md §7), plus tiny test variants."""

from __future__ import annotations

from prdit.errors import ConfigError
from prdit.models.conditioning import Conditioning
from prdit.models.prdit import PRDiT, PRDiTConfig

# size letter -> (width D, attention heads)
SIZES = {"XS": (192, 6), "S": (384, 6), "B": (768, 12), "L": (1024, 16), "XL": (1152, 16)}
PATCH_SIZES = (10, 12, 14, 16)
DEPTHS = (0, 1, 2, 3, 4, 8, 10, 12)
STRIDE = 8

# Tiny variants for tests and the CPU demo: 6³ patches with stride 4 (one voxel of halo),
# so 16³–64³ volumes still give 64–4,096 tokens. "T" has a width that is not a multiple of 6.
TINY_SIZES = {"T": (64, 4), "XS": (192, 6)}
TINY_PATCH, TINY_STRIDE = 6, 4
TINY_DEPTHS = (0, 1, 2, 4)


def _build_registry() -> dict[str, dict]:
    registry = {}
    for size, (width, heads) in SIZES.items():
        for patch in PATCH_SIZES:
            for depth in DEPTHS:
                registry[f"PRDiT-{size}/{patch}/{depth}"] = dict(
                    patch_size=patch, stride=STRIDE, hidden_size=width, depth=depth, num_heads=heads)
    for size, (width, heads) in TINY_SIZES.items():
        for depth in TINY_DEPTHS:
            registry[f"PRDiT-{size}/{TINY_PATCH}/{depth}"] = dict(
                patch_size=TINY_PATCH, stride=TINY_STRIDE, hidden_size=width, depth=depth, num_heads=heads)
    return registry


MODELS: dict[str, dict] = _build_registry()


def model_names() -> list[str]:
    """Every registered model name."""
    return list(MODELS)


def model_spec(name: str) -> dict:
    """Shape settings of a registered name; unknown names raise with the valid choices."""
    if name not in MODELS:
        raise ConfigError(
            f"unknown model '{name}'. Valid names are PRDiT-{{{','.join(SIZES)}}}/{{{','.join(map(str, PATCH_SIZES))}}}"
            f"/{{{','.join(map(str, DEPTHS))}}} (stride {STRIDE}), e.g. PRDiT-B/12/0 or PRDiT-B/12/4, and the tiny "
            f"variants PRDiT-{{{','.join(TINY_SIZES)}}}/{TINY_PATCH}/{{{','.join(map(str, TINY_DEPTHS))}}} "
            f"(stride {TINY_STRIDE}); `prdit models` lists them all")
    return dict(MODELS[name])


def create_model(name: str, input_size: int | tuple[int, int, int] = 64, in_channels: int = 1,
                 out_channels: int | None = None, conditioning: Conditioning | None = None) -> PRDiT:
    """Build a registered model for volumes of ``input_size`` (an edge or ``(D, H, W)``); ``out_channels``
    per voxel defaults to ``2·in_channels`` (IaN's ``[ε̂, x̂₀]``); ``conditioning`` makes it take label maps."""
    size = (input_size,) * 3 if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    out_channels = 2 * in_channels if out_channels is None else int(out_channels)
    config = PRDiTConfig(input_size=size, in_channels=in_channels, out_channels=out_channels,
                         conditioning=conditioning, **model_spec(name))
    model = PRDiT(config)
    model.name = name
    return model
