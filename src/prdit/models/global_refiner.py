"""Stage 2 — the global residual DiT (docs/method.md §5): full self-attention over every patch token of
the volume, predicting a residual that is added to the frozen local denoiser's output."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from prdit.models.embeddings import positional_encoding_3d
from prdit.models.layers import Mlp, modulate


class PatchEmbed(nn.Module):
    """``LN_affine(fc2(GELU_tanh(fc1(x))) + skip(x))``: raw patch tokens -> width D."""

    def __init__(self, token_size: int, hidden_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(token_size, 4 * hidden_size)
        self.fc2 = nn.Linear(4 * hidden_size, hidden_size)
        self.skip = nn.Linear(token_size, hidden_size, bias=False)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, C·P³]`` -> ``[B, N, D]``."""
        return self.norm(self.fc2(F.gelu(self.fc1(tokens), approximate="tanh")) + self.skip(tokens))


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (never forms N×N).

    On the devices in ``bf16_devices`` (CUDA by default) the attention kernel alone runs in
    bf16, as the reference's autocast around the kernel does, which lets PyTorch pick the flash
    kernel; the qkv and output projections stay in the input precision (fp32 unless the whole
    network runs under bf16 autocast, ``train.precision=bf16``).
    """

    def __init__(self, dim: int, num_heads: int, bf16_devices: tuple[str, ...] = ("cuda",)) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bf16_devices = bf16_devices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> ``[B, N, D]``."""
        b, n, d = x.shape
        # qkv output is laid out [3, heads, D/heads] (the DiT convention)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if x.device.type in self.bf16_devices:
            out = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).to(q.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


@contextlib.contextmanager
def numerics(model: nn.Module, precision: str) -> Iterator[None]:
    """Set the matmul and attention precision of a resolved ``precision`` for the duration.

    ``tf32``: TF32 matmuls, attention in bf16 (as trained). ``fp32``: strict fp32, attention
    included (sampling with ``--precision fp32``, and the JVP of consistency distillation).
    ``bf16``: TF32, and the whole network under bf16 autocast (the caller's).
    """
    attention = [m for m in model.modules() if hasattr(m, "bf16_devices")]
    saved_attention = [m.bf16_devices for m in attention]
    saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for m in attention:
            m.bf16_devices = ("cuda",) if precision != "fp32" else ()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision != "fp32"
        yield
    finally:
        for m, value in zip(attention, saved_attention):
            m.bf16_devices = value
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning on the fine time condition."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, N, D]``, ``c`` ``[B, D]`` -> ``[B, N, D]``."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        d = x.shape[-1]
        x = x + gate1.unsqueeze(1) * self.attn(modulate(F.layer_norm(x, (d,), eps=1e-6), shift1, scale1))
        x = x + gate2.unsqueeze(1) * self.mlp(modulate(F.layer_norm(x, (d,), eps=1e-6), shift2, scale2))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map to each token's ``S³·C_out`` core."""

    def __init__(self, dim: int, core_out_size: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, core_out_size)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> ``[B, N, S³·C_out]``."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(F.layer_norm(x, (x.shape[-1],), eps=1e-6), shift, scale))


class GlobalRefiner(nn.Module):
    """Patch embedding + fixed positional encoding + L DiT blocks + final layer."""

    def __init__(self, token_size: int, core_out_size: int, hidden_size: int, depth: int,
                 num_heads: int, grid: tuple[int, int, int], mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(token_size, hidden_size)
        self.register_buffer("pos_embed", positional_encoding_3d(grid, hidden_size), persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, core_out_size)
        self.grad_checkpointing = False

    def forward(self, tokens: torch.Tensor, c: torch.Tensor, label_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, N, C·P³]`` raw noisy tokens + ``[B, D]`` condition (+ ``[B, N, D]`` embedded label patches) ->
        residual ``[B, N, S³·C_out]``."""
        x = self.patch_embed(tokens)
        if label_tokens is not None:
            x = x + label_tokens
        x = x + self.pos_embed.to(tokens.dtype)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, c, use_reentrant=False)
            else:
                x = block(x, c)
        return self.final_layer(x, c)
