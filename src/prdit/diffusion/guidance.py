"""Classifier-free guidance (docs/method.md §20): a conditional network as the denoiser every sampler
calls, mixing its conditional and null-condition outputs ``out_null + w·(out_cond − out_null)``.

The mix is taken on the network's output. Every process reads its prediction from the output
affinely at a fixed ``x_t`` (IaN's ``[ε̂, x̂₀]`` channels as they are, flow matching's velocity,
a consistency model's heads), and the weights ``1 − w`` and ``w`` sum to one, so mixing the output
mixes both IaN heads, x̂₀ and ε̂, and the flow velocity alike, without asking which process it is.
The sampler sees one ``(x, t) -> output`` callable and never learns that a condition exists.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

PLAIN_GUIDANCE_SCALE = 1.0
"""w = 1: the plain conditional model, one network call a step."""
DEFAULT_GUIDANCE_SCALE = 2.0
"""w when none is given, chosen from a measured table (docs/conditioning.md): on the conditional reference
model, 64 maps, w = 2 against 1 raised the segmenter's Dice from 0.780 to 0.805 (disjoint intervals) and
met every Dice and mask-swap target that w = 1 missed, without a KID or precision/recall difference that
separates; w = 3 lost quality (KID 73 -> 258). It costs two network calls a step (batched)."""

ConditionalNetwork = Callable[..., torch.Tensor]
"""``network(x [B, C, D, H, W], t [B], condition [B, ...]) -> [B, C_out, D, H, W]``."""


class CFGDenoiser:
    """``network`` with ``condition`` guided by scale ``w`` against the null condition (every entry
    ``null_value``): ``(x, t) -> out_null + w·(out_cond − out_null)``.

    w = 1 is one conditional call; any other w puts the conditional and the null rows in one batch of
    ``2B`` through one forward. ``condition`` has one row per row of ``x``.
    """

    def __init__(self, network: ConditionalNetwork, condition: torch.Tensor, null_value: int,
                 scale: float = DEFAULT_GUIDANCE_SCALE) -> None:
        self.network = network
        self.condition = condition
        self.null_value = null_value
        self.scale = float(scale)

    def rows(self, rows: slice) -> "CFGDenoiser":
        """The same guidance for the volumes ``rows`` of the batch (a sampler that calls one volume at a time)."""
        return CFGDenoiser(self.network, self.condition[rows], self.null_value, self.scale)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``[B, C, D, H, W]`` at times ``[B]`` -> the guided output ``[B, C_out, D, H, W]``."""
        condition = self.condition.to(x.device)
        if self.scale == PLAIN_GUIDANCE_SCALE:
            return self.network(x, t, condition)
        null = torch.full_like(condition, self.null_value)
        both = self.network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([condition, null]))
        conditional, unconditional = both.chunk(2)
        return unconditional + self.scale * (conditional - unconditional)
