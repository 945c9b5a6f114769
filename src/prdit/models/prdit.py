"""The PRDiT network: tokenise, local denoiser (stage 1), global residual DiT (stage 2),
un-patchify (docs/method.md §1–6), and the stage-1 → stage-2 hand-over."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from prdit.errors import CheckpointError, ConfigError
from prdit.models.conditioning import Conditioning, LabelConditioning
from prdit.models.embeddings import TimestepEmbedder
from prdit.models.global_refiner import GlobalRefiner
from prdit.models.local_denoiser import LocalDenoiser
from prdit.models.patches import patchify, unpatchify

# Parameters that belong to stage 1 (the local denoiser's label modulation among them); stage 2 freezes them all
# except that modulation, which keeps training with stage 2's loss (docs/method.md §20).
STAGE1_PREFIXES = ("time_embed.shared.", "time_embed.coarse_head.", "local_denoiser.", "label_conditioning.stage1.")
STAGE1_LABELS = "label_conditioning.stage1."


@dataclass(frozen=True)
class PRDiTConfig:
    """Everything that fixes a PRDiT network's shape."""

    input_size: tuple[int, int, int] = (64, 64, 64)
    in_channels: int = 1
    out_channels: int = 2  # per output voxel: 2C = [ε̂, x̂₀] for IaN, C = the velocity for flow matching
    patch_size: int = 12
    stride: int = 8
    hidden_size: int = 768
    depth: int = 0
    num_heads: int = 12
    mlp_ratio: float = 4.0
    conditioning: Conditioning | None = None  # label maps (docs/method.md §20); None: unconditional

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens per axis ``(D/S, H/S, W/S)``."""
        return tuple(s // self.stride for s in self.input_size)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for shapes that cannot work."""
        if len(self.input_size) != 3 or any(s <= 0 for s in self.input_size):
            raise ConfigError(f"input_size must be three positive sizes (D, H, W), got {self.input_size}")
        bad = [s for s in self.input_size if s % self.stride]
        if bad:
            raise ConfigError(f"input size {self.input_size} is not divisible by the patch stride {self.stride}; "
                              f"use a multiple of {self.stride} (e.g. {self.stride * 8}, 64, 128, 256)")
        if self.patch_size < self.stride or (self.patch_size - self.stride) % 2:
            raise ConfigError(f"patch size {self.patch_size} must be at least the stride {self.stride} "
                              f"and differ from it by an even number")
        if (self.patch_size - self.stride) // 2 >= min(self.input_size):
            raise ConfigError(f"input size {self.input_size} is too small for patch size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"width {self.hidden_size} is not divisible by {self.num_heads} heads; "
                              f"choose heads among {[h for h in range(1, 33) if self.hidden_size % h == 0]}")
        if self.hidden_size < 6:
            raise ConfigError(f"width must be at least 6, got {self.hidden_size}")
        if self.depth < 0 or self.in_channels < 1:
            raise ConfigError("depth must be >= 0 and in_channels >= 1")
        if self.conditioning is not None:
            self.conditioning.validate(self.depth)

    def to_dict(self) -> dict:
        """JSON-ready dict (``input_size`` as a list)."""
        values = asdict(self)
        values["input_size"] = list(self.input_size)
        values["conditioning"] = self.conditioning.to_dict() if self.conditioning is not None else None
        return values


class PRDiT(nn.Module):
    """``model(x [B, C, D, H, W], t [B], labels [B, D, H, W]) -> [B, C_out, D, H, W]``; depth 0 is the stage-1
    model; ``labels`` only for a conditional model."""

    def __init__(self, config: PRDiTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.name: str | None = None  # registry name, set by create_model
        token_size = config.in_channels * config.patch_size**3
        core_out_size = config.stride**3 * config.out_channels
        # Registration order (time embedding, local denoiser, global refiner) mirrors the method.
        self.time_embed = TimestepEmbedder(config.hidden_size, token_size, with_fine_head=config.depth > 0)
        self.local_denoiser = LocalDenoiser(token_size, core_out_size)
        self.global_refiner = (
            GlobalRefiner(token_size, core_out_size, config.hidden_size, config.depth, config.num_heads,
                          config.grid, config.mlp_ratio)
            if config.depth > 0 else None
        )
        self.label_conditioning = (
            LabelConditioning(config.conditioning, config.patch_size, config.stride, token_size, config.hidden_size,
                              config.depth)
            if config.conditioning is not None else None
        )
        self.initialize_weights()

    @property
    def stage(self) -> int:
        """1 for the local denoiser alone, 2 with the global refiner."""
        return 1 if self.global_refiner is None else 2

    def initialize_weights(self) -> None:
        """Spec §6: Xavier everywhere, N(0, 0.02) time embedding, zeroed output paths."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for linear in (self.time_embed.shared[0], self.time_embed.coarse_head, self.time_embed.fine_head):
            if linear is not None:
                nn.init.normal_(linear.weight, std=0.02)
        # A fresh stage-1 model outputs exactly zero.
        for linear in (self.local_denoiser.modulation[-1], self.local_denoiser.output):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        if self.global_refiner is not None:
            nn.init.xavier_uniform_(self.global_refiner.patch_embed.skip.weight, gain=0.1)
            # A fresh stage-2 model outputs exactly its stage-1 output.
            for block in self.global_refiner.blocks:
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
            final = self.global_refiner.final_layer
            for linear in (final.adaLN_modulation[-1], final.linear):
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)
        if self.label_conditioning is not None:
            # A fresh conditional model outputs exactly what it would without labels.
            for linear in self.label_conditioning.projections():
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute DiT block activations in the backward pass (for 256³ training)."""
        if self.global_refiner is not None:
            self.global_refiner.grad_checkpointing = enabled

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, C, D, H, W]``, ``t`` ``[B]`` in [0, T], ``labels`` ``[B, D, H, W]`` (a conditional model only;
        None: the null condition) -> ``[B, C_out, D, H, W]``."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels or tuple(x.shape[2:]) != cfg.input_size:
            raise ConfigError(f"expected input [B, {cfg.in_channels}, {', '.join(map(str, cfg.input_size))}], "
                              f"got {list(x.shape)}; build the model with input_size matching the data")
        label_modulation = label_tokens = None
        if self.label_conditioning is not None:
            if labels is None:  # the null map, valid by construction: no check (a device sync) on it
                labels = torch.full((x.shape[0], *cfg.input_size), cfg.conditioning.null_index, device=x.device)
            else:
                self.check_labels(labels, x.shape[0])
            label_modulation, label_tokens = self.label_conditioning(labels.to(x.device))
        elif labels is not None:
            self.check_labels(labels, x.shape[0])
        tokens = patchify(x, cfg.patch_size, cfg.stride)
        coarse_condition, fine_condition = self.time_embed(t.to(x.device))
        out = self.local_denoiser(tokens, coarse_condition, label_modulation)
        if self.global_refiner is not None:
            out = out + self.global_refiner(tokens, fine_condition, label_tokens)
        return unpatchify(out, cfg.grid, cfg.stride)

    def require_conditioning(self) -> Conditioning:
        """This model's label conditioning; an unconditional model raises :class:`ConfigError`."""
        if self.config.conditioning is None:
            raise ConfigError(f"{self.name or 'this model'} is unconditional (trained without label maps): sample "
                              f"it without labels, or use a model trained with model.conditioning=stage2 or both")
        return self.config.conditioning

    def check_labels(self, labels: torch.Tensor, batch: int) -> None:
        """Raise unless this model is conditional and ``labels`` is an integer ``[batch, D, H, W]`` map of its
        labels (or the null index)."""
        self.require_conditioning()
        self.label_conditioning.check(labels, (batch, *self.config.input_size))

    # --- stage hand-over -------------------------------------------------------------

    def stage1_parameter_names(self) -> list[str]:
        """Names of the parameters that belong to stage 1 (coarse branch, shared time layer, coarse head)."""
        return [name for name, _ in self.named_parameters() if name.startswith(STAGE1_PREFIXES)]

    def load_stage1(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy the stage-1 weights from a stage-1 (or stage-2) state dict, by name and shape.

        Raises :class:`CheckpointError` when a weight is missing or has another shape, e.g. a
        stage-1 model of another width (size letter) or patch size.
        """
        own = self.state_dict()
        names = self.stage1_parameter_names()
        missing = [n for n in names if n not in state_dict]
        if missing:
            raise CheckpointError(f"the stage-1 checkpoint lacks {len(missing)} weight(s), e.g. {missing[:3]}; "
                                  "is it a PRDiT checkpoint?")
        width = own["time_embed.shared.0.weight"].shape[0]
        their_width = state_dict["time_embed.shared.0.weight"].shape[0]
        if their_width != width:
            raise CheckpointError(f"the stage-1 checkpoint has width {their_width}, this model has width {width}: "
                                  "stage 1 and stage 2 must use the same size letter (e.g. PRDiT-B/12/0 → PRDiT-B/12/4)")
        wrong = [f"{n}: {tuple(state_dict[n].shape)} vs {tuple(own[n].shape)}"
                 for n in names if state_dict[n].shape != own[n].shape]
        if wrong:
            raise CheckpointError("the stage-1 checkpoint does not fit this model (patch size or channels differ): "
                                  + "; ".join(wrong[:3]))
        with torch.no_grad():
            params = dict(self.named_parameters())
            for n in names:
                params[n].copy_(state_dict[n])

    def freeze_stage1(self) -> None:
        """Freeze the stage-1 parameters, all but the local denoiser's label modulation: with both stages
        conditioned it keeps training with stage 2's loss, so a model fine-tuned from an unconditional one
        (whose modulation starts at zero) conditions its local denoiser too. Everything else stays trainable."""
        for name, param in self.named_parameters():
            param.requires_grad_(name.startswith(STAGE1_LABELS) or not name.startswith(STAGE1_PREFIXES))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
