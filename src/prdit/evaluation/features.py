"""Feature extraction for FID and MMD: batched, with a progress bar and an on-disk cache.

The cache key is the content hash of the volume set (file bytes, units, normalisation,
resizing) together with the feature network's identity (the weights file's SHA-256, or the
seed of a random initialisation), so a real set's features are computed once and a changed
file or network can never be served stale features.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from prdit.data.io import file_sha256
from prdit.device import resolve_device
from prdit.errors import CheckpointError
from prdit.evaluation.medicalnet import (FEATURE_DIM, NAME, MedicalNetResNet50, load_medicalnet,
                                         random_medicalnet)
from prdit.evaluation.volumes import VolumeSet

# Bump when anything that changes feature values changes (architecture, pooling, input mapping).
FEATURES_VERSION = 1


@contextmanager
def full_fp32():
    """Turn TF32 off (PyTorch enables it for cuDNN convolutions by default) and restore it afterwards.

    TF32 keeps 10 mantissa bits, and published 3D FIDs are of order 1e-3, so features are
    computed in true fp32 on every device rather than risk device-dependent numbers.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@dataclass
class FeatureNetwork:
    """The feature network together with what identifies it in reports and cache keys."""

    model: MedicalNetResNet50
    weights: str | None
    weights_sha256: str | None
    seed: int | None

    @property
    def comparable(self) -> bool:
        """Whether numbers from this network can be compared with published ones."""
        return self.weights is not None

    def describe(self) -> dict:
        """What the report says about the network."""
        info = {"name": NAME, "feature_dim": FEATURE_DIM, "precision": "fp32 (TF32 off)",
                "weights": self.weights, "weights_sha256": self.weights_sha256,
                "comparable_with_published": self.comparable}
        if not self.comparable:
            info["random_init_seed"] = self.seed
            info["warning"] = ("randomly initialised feature network: FID and MMD are NOT comparable with "
                               "published numbers")
        return info

    def cache_identity(self) -> str:
        """The part of a cache key that names the network."""
        return f"sha256:{self.weights_sha256}" if self.comparable else f"random-init:{self.seed}"


def feature_network(weights: str | None = None, seed: int | None = None) -> FeatureNetwork:
    """MedicalNet from a weights file, or (``weights=None``) a random initialisation from ``seed``."""
    if weights is not None:
        return FeatureNetwork(load_medicalnet(weights), str(Path(weights).expanduser()), file_sha256(weights), None)
    if seed is None:
        raise CheckpointError("no MedicalNet weights given and no seed for a random initialisation")
    return FeatureNetwork(random_medicalnet(seed), None, None, seed)


@torch.no_grad()
def extract_features(volumes: VolumeSet, network: FeatureNetwork, batch_size: int = 4,
                     device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
                     progress: bool = True) -> np.ndarray:
    """Features of every volume: ``[N, 2048]`` float64 (from the cache when present)."""
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps({"version": FEATURES_VERSION, "network": network.cache_identity(),
                                         "volumes": volumes.content_hash()}).encode()).hexdigest()
        cache_file = Path(cache_dir).expanduser() / f"{key}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as cached:
                return cached["features"].astype(np.float64)
    device = resolve_device(str(device))
    model = network.model.to(device).eval()
    chunks = []
    bar = tqdm(total=len(volumes), desc=f"features ({volumes.name})", unit="vol", disable=not progress)
    with full_fp32():
        for start in range(0, len(volumes), batch_size):
            indices = range(start, min(start + batch_size, len(volumes)))
            batch = torch.from_numpy(volumes.batch(indices)).to(device)
            chunks.append(model(batch).float().cpu().numpy())
            bar.update(len(indices))
    bar.close()
    features = np.concatenate(chunks).astype(np.float32)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(".partial.npz")
        np.savez(partial, features=features, network=network.cache_identity(), volumes=volumes.content_hash())
        partial.replace(cache_file)  # atomic: a crashed run never leaves a truncated cache entry
    return features.astype(np.float64)
