"""Label-map conditioning (docs/method.md §20): a learned embedding per voxel, cut into the image's
overlapping patches, entering the global refiner through its own patch embedding and the local
denoiser through its per-token modulation, each by a zero-initialised projection.

A label map is ``[B, D, H, W]`` int64 on the volume's grid with values ``0..K−1`` (``K`` = the
size of the model's label set); index ``K`` is "no label", the null condition that training
drops maps to and classifier-free guidance compares against. Because every projection into the
network starts at zero, a conditional model initialised from an unconditional one returns its
output bit for bit, for any label map, until training moves the projections.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from prdit.errors import ConfigError, DataError
from prdit.models.global_refiner import PatchEmbed
from prdit.models.patches import patchify

STAGES = ("stage2", "both")
"""Which stages see the label map: the global refiner alone, or the local denoiser too."""
EMBED_DIM = 4
"""Width E of the per-voxel label embedding: the label patches are ``E·P³`` wide, E times the image's."""


@dataclass(frozen=True)
class Conditioning:
    """The label set (names in index order), which stages see the map and the per-voxel embedding width."""

    labels: tuple[str, ...]
    stages: str = "stage2"
    embed_dim: int = EMBED_DIM

    @property
    def num_labels(self) -> int:
        """K, the size of the label set."""
        return len(self.labels)

    @property
    def null_index(self) -> int:
        """The index of "no label" (K): the null condition of classifier-free guidance."""
        return len(self.labels)

    @property
    def stage1(self) -> bool:
        """Whether the local denoiser sees the label map."""
        return self.stages == "both"

    def validate(self, depth: int) -> None:
        """Raise :class:`ConfigError` for a setting that cannot work on a network of ``depth`` DiT blocks."""
        if self.stages not in STAGES:
            raise ConfigError(f"conditioning stages must be one of {', '.join(STAGES)}, got '{self.stages}'")
        if depth == 0 and not self.stage1:
            raise ConfigError("conditioning 'stage2' conditions the global refiner, which a stage-1 model (depth 0) "
                              "lacks: condition a stage-1 model with 'both', or train it unconditional")
        if len(self.labels) < 1 or len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"the label set must name each index once, got {list(self.labels)}")
        if self.embed_dim < 1:
            raise ConfigError(f"the label embedding width must be >= 1, got {self.embed_dim}")

    def to_dict(self) -> dict:
        """JSON-ready: the stages, the embedding width and the label table (name -> index)."""
        return {"stages": self.stages, "embed_dim": self.embed_dim,
                "labels": {name: index for index, name in enumerate(self.labels)}}

    @classmethod
    def from_dict(cls, values: dict) -> "Conditioning":
        """Inverse of :meth:`to_dict`; a table whose indices are not ``0..K−1`` raises :class:`ConfigError`."""
        table = values.get("labels") or {}
        try:
            by_index = sorted((int(index), str(name)) for name, index in dict(table).items())
        except (TypeError, ValueError):
            by_index = None
        if by_index is None or [index for index, _ in by_index] != list(range(len(by_index))):
            raise ConfigError(f"the conditioning's label table must number its labels 0..K-1 once each, "
                              f"got {table}")
        return cls(labels=tuple(name for _, name in by_index), stages=values.get("stages", "stage2"),
                   embed_dim=int(values.get("embed_dim", EMBED_DIM)))


class LabelPatches(nn.Module):
    """``Embedding(K + 1, E)`` per voxel, cut into the image's patches: ``[B, D, H, W]`` -> ``[B, N, E·P³]``."""

    def __init__(self, num_labels: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_labels + 1, embed_dim)
        self.patch_size, self.stride = patch_size, stride

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Each token's ``[E, P, P, P]`` label patch, flattened, in the image tokens' order."""
        embedded = self.embedding(labels).permute(0, 4, 1, 2, 3)  # [B, E, D, H, W]
        return patchify(embedded, self.patch_size, self.stride)


class LabelTokens(nn.Module):
    """Stage 2: the label patches' own patch embedding and a zero-initialised projection to width D,
    added to the image tokens."""

    def __init__(self, conditioning: Conditioning, patch_size: int, stride: int, hidden_size: int) -> None:
        super().__init__()
        self.patches = LabelPatches(conditioning.num_labels, conditioning.embed_dim, patch_size, stride)
        self.patch_embed = PatchEmbed(conditioning.embed_dim * patch_size**3, hidden_size)
        self.projection = nn.Linear(hidden_size, hidden_size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """``[B, D, H, W]`` -> ``[B, N, D_model]`` to add to the embedded image tokens."""
        return self.projection(self.patch_embed(self.patches(labels)))


class LabelModulation(nn.Module):
    """Stage 1: each token's label patch -> Linear(E·P³ → W) + SiLU -> a zero-initialised Linear(W → 6W),
    added per token to the six shift/scale vectors the coarse condition gives the local denoiser."""

    def __init__(self, conditioning: Conditioning, patch_size: int, stride: int, token_size: int) -> None:
        super().__init__()
        self.patches = LabelPatches(conditioning.num_labels, conditioning.embed_dim, patch_size, stride)
        self.hidden = nn.Linear(conditioning.embed_dim * patch_size**3, token_size)
        self.projection = nn.Linear(token_size, 6 * token_size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """``[B, D, H, W]`` -> ``[B, N, 6W]``."""
        return self.projection(F.silu(self.hidden(self.patches(labels))))


class LabelConditioning(nn.Module):
    """The label map's way into each conditioned stage, and the checks of a label map."""

    def __init__(self, conditioning: Conditioning, patch_size: int, stride: int, token_size: int,
                 hidden_size: int, depth: int) -> None:
        super().__init__()
        conditioning.validate(depth)
        self.conditioning = conditioning
        # Stage 1's part first: its parameter names start "label_conditioning.stage1." (trained with stage 1).
        self.stage1 = LabelModulation(conditioning, patch_size, stride, token_size) if conditioning.stage1 else None
        self.stage2 = LabelTokens(conditioning, patch_size, stride, hidden_size) if depth > 0 else None

    def projections(self) -> list[nn.Linear]:
        """The zero-initialised layers through which the label map reaches the network."""
        return [part.projection for part in (self.stage1, self.stage2) if part is not None]

    def check(self, labels: torch.Tensor, volume_shape: tuple[int, ...]) -> None:
        """Raise unless ``labels`` is an integer ``[B, D, H, W]`` map of ``volume_shape`` = ``[B, D, H, W]`` with
        values in ``0..K`` (K: no label)."""
        k = self.conditioning.num_labels
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise DataError(f"a label map holds integer class indices, got {labels.dtype}; "
                            f"pass it as int64 (values 0..{k - 1})")
        if tuple(labels.shape) != tuple(volume_shape):
            raise DataError(f"label map of shape {list(labels.shape)} for volumes {list(volume_shape)}: "
                            f"give one [D, H, W] map on the volume's grid per volume")
        low, high = torch.aminmax(labels)
        if int(low) < 0 or int(high) > k:
            raise DataError(f"label map values lie in {int(low)}..{int(high)}; this model knows labels 0..{k - 1} "
                            f"({', '.join(self.conditioning.labels[:4])}, ...) and {k} for 'no label'")

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``[B, D, H, W]`` int64 -> the local denoiser's per-token modulation ``[B, N, 6W]`` and the global
        refiner's token addition ``[B, N, D]`` (None for a stage not conditioned)."""
        labels = labels.long()
        modulation = self.stage1(labels) if self.stage1 is not None else None
        tokens = self.stage2(labels) if self.stage2 is not None else None
        return modulation, tokens


def drop_labels(labels: torch.Tensor, null_index: int, map_p: float, class_p: float,
                generator: torch.Generator) -> torch.Tensor:
    """Condition dropout for classifier-free guidance: each whole map ``[B, D, H, W]`` becomes the null index
    with probability ``map_p``, and, with ``class_p`` > 0, each class of each remaining map with ``class_p``."""
    b = labels.shape[0]
    whole = torch.rand(b, generator=generator, device=generator.device).to(labels.device) < map_p
    labels = torch.where(whole.reshape(b, 1, 1, 1), torch.full_like(labels, null_index), labels)
    if class_p > 0:
        dropped = torch.rand(b, null_index + 1, generator=generator, device=generator.device).to(labels.device)
        dropped = dropped < class_p
        dropped[:, null_index] = False
        labels = torch.where(dropped.gather(1, labels.reshape(b, -1)).reshape(labels.shape),
                             torch.full_like(labels, null_index), labels)
    return labels
