"""Sampling many volumes so that each one depends only on its own seed.

Volume ``i`` of a run with seed ``s`` is drawn from its own generator, seeded with
:func:`volume_seed` ``(s, i)``: its start noise and every predictor–corrector re-noising come
from that generator alone. With ``exact`` (the default) the network also sees one volume at
a time, because batched matrix products are not bit-identical to unbatched ones (on CPU the
``[B, D]`` conditioning products take another kernel for B = 1). So a volume is bit-identical
whether it was generated in a batch of 8, alone, or after a resumed run — on the same kind of
device with the same precision (CPU and CUDA generators give different noise for one seed).
The sampling loop itself is :func:`prdit.diffusion.sample`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from prdit.diffusion import Denoiser, Hook, Process, SampleResult, sample
from prdit.diffusion.guidance import DEFAULT_GUIDANCE_SCALE, CFGDenoiser
from prdit.errors import ConfigError
from prdit.generation.config import PRECISIONS, SamplingConfig
from prdit.models.global_refiner import numerics

SEED_RULE = "seed of volume i = numpy.random.SeedSequence([seed, i]).generate_state(1, numpy.uint64)[0] >> 1"


def volume_seed(seed: int, index: int) -> int:
    """The seed of volume ``index`` of a run seeded with ``seed`` (a 63-bit integer, see ``SEED_RULE``)."""
    if seed < 0 or index < 0:
        raise ConfigError(f"seed and volume index must be >= 0, got seed {seed}, index {index}")
    # SeedSequence hashes (seed, index), so nearby seeds and indices give unrelated streams.
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def volume_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per volume on ``device``, where its noise is drawn (on CUDA, drawing 256³
    noise on the CPU each step would cost a noticeable share of the step)."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``tf32`` on CUDA (the training numerics, docs/method.md §9), ``fp32`` elsewhere."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type != "cuda":
        raise ConfigError(f"precision 'bf16' needs a CUDA device, got '{device}'; use 'auto' or 'fp32'")
    if precision == "auto":
        return "tf32" if device.type == "cuda" else "fp32"
    return precision


def denoiser(model: torch.nn.Module, precision: str, exact: bool, compile: bool = False,
             labels: torch.Tensor | None = None, guidance_scale: float = DEFAULT_GUIDANCE_SCALE) -> Denoiser:
    """``model`` as the sampler calls it: ``(x [B, C, D, H, W], t [B]) -> fp32 [B, C_out, D, H, W]``.

    ``exact`` calls the network once per volume; ``bf16`` autocasts the network call only, so
    the sampler's arithmetic stays in fp32; ``compile`` runs it through ``torch.compile`` (compiled
    once per model and reused; eager where compiling fails). ``labels`` ``[B, D, H, W]`` (a conditional
    model) guides each volume by its map with classifier-free guidance of scale ``guidance_scale``.
    """
    network = model
    if compile:
        from prdit.device import compiled

        if "_prdit_compiled" not in model.__dict__:  # a plain attribute: not a submodule, not in the state dict
            model.__dict__["_prdit_compiled"] = compiled(model, "sampling")
        network = model.__dict__["_prdit_compiled"]

    guided = (CFGDenoiser(network, labels, model.config.conditioning.null_index, guidance_scale)
              if labels is not None else None)

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if guided is not None:
                if exact:
                    return torch.cat([guided.rows(slice(b, b + 1))(x[b:b + 1], t[b:b + 1]).float()
                                      for b in range(x.shape[0])])
                return guided(x, t).float()
            if exact:
                return torch.cat([network(x[b:b + 1], t[b:b + 1]).float() for b in range(x.shape[0])])
            return network(x, t).float()

    return call


def sample_volumes(model: torch.nn.Module, process: Process, generators: Sequence[torch.Generator],
                   settings: SamplingConfig, device: torch.device, hooks: Sequence[Hook] = (),
                   labels: torch.Tensor | None = None) -> SampleResult:
    """Generate one volume per generator, ``[len(generators), C, D, H, W]`` in the model range;
    ``settings`` resolved against ``process``; ``labels`` ``[len(generators), D, H, W]``: each volume's label map."""
    if not generators:
        raise ConfigError("no volumes to sample")
    cfg = model.config
    shape = (len(generators), cfg.in_channels, *cfg.input_size)
    resolved = resolve_precision(settings.precision, device)
    with numerics(model, resolved):
        network = denoiser(model, resolved, settings.exact, settings.compile, labels, settings.guidance_scale)
        return sample(network, process, shape, settings, device=device, generator=list(generators), hooks=hooks)
