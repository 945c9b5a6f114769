"""MS-SSIM diversity: mean 3D MS-SSIM over pairs of volumes of one set (lower = more diverse).

MS-SSIM itself is MONAI's ``compute_ms_ssim``. The default is the published setting: 3D, a
3^3 Gaussian window (sigma 1.5), five scales with the standard weights (Wang et al., 2003),
data range 1, volumes in the model range [-1, 1] as they are (neither mapped to [0, 1] nor
clipped), as the published script feeds them. SSIM's stabilising constants are fixed by the
data range, not by the values, so mapping to [0, 1] would change every value (three 48^3
phantoms: 0.6595 this way, 0.6884 mapped). MONAI's size rule needs at least 48 voxels per side
for five scales; smaller volumes (the 32^3 demo) get the most scales that fit with the standard
weights truncated and renormalised, and the report says the setting is not the published one.
Values are comparable only between equal settings.

The published script averages all N(N−1) ordered pairs of distinct volumes; MS-SSIM is
symmetric, so the mean over the N(N−1)/2 unordered pairs is the same number. All of them are
computed up to ``max_pairs`` (2016: every pair of 64 volumes); beyond that a uniform sample of
``max_pairs`` distinct pairs estimates the mean, and the summary gives its Monte-Carlo error
(the standard error of a sample without replacement from the finite set of pairs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from prdit.distributed import current, gather_in_order, shard
from prdit.errors import ConfigError, DataError
from prdit.evaluation.config import MSSSIMConfig
from prdit.evaluation.volumes import VolumeSet

STANDARD_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
PUBLISHED = {"kernel_size": 3, "kernel_sigma": 1.5, "scales": 5}


def msssim_settings(shape: Sequence[int], config: MSSSIMConfig = MSSSIMConfig()) -> dict:
    """Kernel size, sigma, scale count and weights for volumes of ``shape`` ``(D, H, W)``, and whether
    that is the published setting."""
    side = min(shape)
    kernel = config.kernel_size
    scale_options = [config.scales] if config.scales is not None else range(len(STANDARD_WEIGHTS), 0, -1)
    for scales in scale_options:
        if not 1 <= scales <= len(STANDARD_WEIGHTS):
            raise ConfigError(f"MS-SSIM scales must be 1..{len(STANDARD_WEIGHTS)}, got {scales}")
        # MONAI's rule (side // (scales - 1)^2 must exceed kernel_size - 1), and the window must
        # fit inside the coarsest scale.
        largest = min(side // max(1, scales - 1) ** 2, side // 2 ** (scales - 1))
        if kernel >= 3 and kernel % 2 == 1 and kernel <= largest:
            # The five standard weights as MONAI has them (they sum to 1.0001); fewer are renormalised.
            weights = np.asarray(STANDARD_WEIGHTS[:scales])
            if scales < len(STANDARD_WEIGHTS):
                weights = weights / weights.sum()
            settings = {"kernel_size": int(kernel), "kernel_sigma": config.kernel_sigma, "scales": int(scales)}
            return {**settings, "weights": [float(w) for w in weights],
                    "published_setting": settings == PUBLISHED}
    raise ConfigError(f"volumes of shape {tuple(shape)} are too small for MS-SSIM with an odd kernel of "
                      f"{kernel} (at least 3) and {config.scales or 'any number of'} scales")


def sample_pairs(n: int, max_pairs: int, seed: int = 0) -> np.ndarray:
    """All distinct index pairs ``[P, 2]`` if there are at most ``max_pairs``, else that many drawn uniformly without
    repeats."""
    if n < 2:
        raise DataError(f"MS-SSIM diversity needs at least 2 volumes, got {n}")
    total = n * (n - 1) // 2
    if total <= max_pairs:
        return np.array(np.triu_indices(n, k=1)).T
    rng = np.random.default_rng(seed)
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < max_pairs:
        i, j = rng.choice(n, size=2, replace=False)
        chosen.add((min(i, j), max(i, j)))
    return np.array(sorted(chosen))


def ms_ssim(a: torch.Tensor, b: torch.Tensor, settings: dict) -> torch.Tensor:
    """3D MS-SSIM of pairs ``[B, 1, D, H, W]`` in the training range, fed as they are -> ``[B]``."""
    from monai.metrics.regression import compute_ms_ssim

    return compute_ms_ssim(a.float(), b.float(), spatial_dims=3, data_range=1.0,
                           kernel_size=settings["kernel_size"], kernel_sigma=settings["kernel_sigma"],
                           weights=settings["weights"])[:, 0]


def msssim_diversity(volumes: VolumeSet, config: MSSSIMConfig = MSSSIMConfig(), batch_size: int = 4,
                     device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Mean pairwise MS-SSIM of a set, with its spread, the pair count and the settings used."""
    return pairwise_msssim(volumes, config, batch_size, device, progress)[2]


@torch.no_grad()
def pairwise_msssim(volumes: VolumeSet, config: MSSSIMConfig = MSSSIMConfig(), batch_size: int = 4,
                    device: str | torch.device = "cpu",
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """The volume pairs ``[P, 2]``, their MS-SSIM ``[P]`` and the summary of :func:`msssim_diversity`. Under
    torchrun the ranks share the pairs and every rank gets all the values."""
    settings = msssim_settings(volumes.shape, config)
    pairs = sample_pairs(len(volumes), config.max_pairs, config.seed)
    info = current()
    mine = np.asarray(shard(pairs, info)).reshape(-1, 2)  # under torchrun each rank takes its share of the pairs
    values: list[float] = []
    bar = tqdm(total=len(mine), desc=f"MS-SSIM ({volumes.name})", unit="pair",
               disable=not (progress and info.is_main))
    for start in range(0, len(mine), batch_size):
        chunk = mine[start:start + batch_size]
        a = torch.from_numpy(volumes.batch(chunk[:, 0])).to(device)
        b = torch.from_numpy(volumes.batch(chunk[:, 1])).to(device)
        values.extend(ms_ssim(a, b, settings).cpu().numpy().tolist())
        bar.update(len(chunk))
    bar.close()
    values = np.asarray(gather_in_order(values, info), dtype=np.float64)
    return pairs, values, {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                           "pairs": int(len(values)), "volumes": len(volumes), **sampling_error(values, len(volumes)),
                           **settings}


def sampling_error(values: np.ndarray, volumes: int) -> dict:
    """Whether the per-pair values ``[P]`` are all pairs of ``volumes``, and if not, the Monte-Carlo standard error
    of their mean as an estimate of the all-pairs mean (sampling without replacement from the finite set of pairs)."""
    total = volumes * (volumes - 1) // 2
    if len(values) >= total:
        return {"all_pairs": True, "total_pairs": total, "monte_carlo_error": 0.0}
    finite_population = 1.0 - len(values) / total
    error = float(values.std(ddof=1) / np.sqrt(len(values)) * np.sqrt(finite_population))
    return {"all_pairs": False, "total_pairs": total, "monte_carlo_error": error}
