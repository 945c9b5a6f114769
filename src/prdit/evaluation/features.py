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
from prdit.data.normalization import Normalization
from prdit.device import resolve_device
from prdit.distributed import current, gather_in_order, on_main, shard
from prdit.errors import CheckpointError
from prdit.evaluation import ct_resnet
from prdit.evaluation.medicalnet import (FEATURE_DIM, NAME, load_medicalnet,
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
    """The feature network together with what identifies it in reports and cache keys.

    ``kind`` is one of :data:`prdit.evaluation.config.FEATURE_KINDS`; ``weights_sha256`` names
    pretrained weights, ``seed`` a random initialisation.
    """

    model: torch.nn.Module
    weights: str | None
    weights_sha256: str | None
    seed: int | None
    kind: str = "medicalnet"
    normalization: Normalization | None = None

    @property
    def comparable(self) -> bool:
        """Whether numbers from this network can be compared with published ones (pretrained MedicalNet only)."""
        return self.kind == "medicalnet" and self.weights is not None

    @property
    def pretrained(self) -> bool:
        """Whether the network has learned weights (rather than a random initialisation)."""
        return self.weights_sha256 is not None

    def describe(self) -> dict:
        """What the report says about the network."""
        ct = self.kind == "ct-resnet152"
        info = {"name": ct_resnet.NAME if ct else NAME, "label": ct_resnet.LABEL if ct else "MedicalNet ResNet-50",
                "kind": self.kind, "feature_dim": ct_resnet.FEATURE_DIM if ct else FEATURE_DIM,
                "precision": "fp32 (TF32 off)", "weights": self.weights, "weights_sha256": self.weights_sha256,
                "comparable_with_published": self.comparable}
        if ct:
            info["input"] = ct_resnet.INPUT_CONVENTION
            info["note"] = ("CT-pretrained network: FID and MMD compare runs that name the same weights digest; they "
                            "are not comparable with published numbers, which use MedicalNet ResNet-50")
        elif not self.pretrained:
            info["label"] = "random-init MedicalNet ResNet-50"
            info["random_init_seed"] = self.seed
            info["warning"] = ("randomly initialised feature network: FID and MMD are NOT comparable with "
                               "published numbers")
        return info

    def cache_identity(self) -> str:
        """The part of a cache key that names the network (and, for the CT network, its HU mapping)."""
        if self.kind == "ct-resnet152":
            norm = self.normalization or Normalization()
            return f"ct-resnet152:sha256:{self.weights_sha256}:hu[{norm.hu_min:g},{norm.hu_max:g}]"
        return f"sha256:{self.weights_sha256}" if self.pretrained else f"random-init:{self.seed}"


def feature_network(weights: str | None = None, seed: int | None = None, kind: str | None = None,
                    normalization: Normalization | None = None) -> FeatureNetwork:
    """The network of ``kind``: ``medicalnet`` (from ``weights``; with ``weights=None`` and the kind
    unnamed, a random initialisation from ``seed``), ``random-init`` or ``ct-resnet152`` (the installed
    CT-pretrained weights; ``normalization`` maps the training range back to HU for it)."""
    if kind is None:
        kind = "medicalnet" if weights is not None else "random-init"
    if kind == "ct-resnet152":
        norm = normalization or Normalization()
        path = ct_resnet.weights_path()
        model = ct_resnet.CTFeatures(ct_resnet.load_ct_resnet(path), norm.hu_min, norm.hu_max)
        return FeatureNetwork(model, str(path), ct_resnet.WEIGHTS_SHA256, None, kind, norm)
    if kind == "medicalnet" and weights is not None:
        return FeatureNetwork(load_medicalnet(weights), str(Path(weights).expanduser()), file_sha256(weights), None)
    if kind == "medicalnet":
        raise CheckpointError("MedicalNet features need a weights file (resnet_50_23dataset.pth); pass its path")
    if seed is None:
        raise CheckpointError("no MedicalNet weights given and no seed for a random initialisation")
    return FeatureNetwork(random_medicalnet(seed), None, None, seed, "random-init")


@torch.no_grad()
def extract_features(volumes: VolumeSet, network: FeatureNetwork, batch_size: int = 4,
                     device: str | torch.device = "cpu", cache_dir: str | Path | None = None,
                     progress: bool = True) -> np.ndarray:
    """Features of every volume: ``[N, 2048]`` float64 (from the cache when present). Under torchrun the ranks
    share the volumes and every rank gets all the features; rank 0 reads and writes the cache."""
    info = current()
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps({"version": FEATURES_VERSION, "network": network.cache_identity(),
                                         "volumes": volumes.content_hash()}).encode()).hexdigest()
        cache_file = Path(cache_dir).expanduser() / f"{key}.npz"
        # Rank 0 alone looks and sends what it finds: a rank deciding alone (a node-local cache folder, another
        # job's entry appearing meanwhile) would skip the gather below that the others wait in.
        cached = on_main(lambda: _read_cache(cache_file), info)
        if cached is not None:
            return cached.astype(np.float64)
    device = resolve_device(str(device))
    model = network.model.to(device).eval()
    mine = shard(range(len(volumes)), info)  # under torchrun each rank takes its share of the volumes
    rows: list[np.ndarray] = []
    bar = tqdm(total=len(mine), desc=f"features ({volumes.name})", unit="vol", disable=not (progress and info.is_main))
    with full_fp32():
        for start in range(0, len(mine), batch_size):
            indices = mine[start:start + batch_size]
            batch = torch.from_numpy(volumes.batch(indices)).to(device)
            rows.extend(model(batch).float().cpu().numpy())
            bar.update(len(indices))
    bar.close()
    features = np.stack(gather_in_order(rows, info)).astype(np.float32)
    if not info.is_main:
        return features.astype(np.float64)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(".partial.npz")
        np.savez(partial, features=features, network=network.cache_identity(), volumes=volumes.content_hash())
        partial.replace(cache_file)  # atomic: a crashed run never leaves a truncated cache entry
    return features.astype(np.float64)


def _read_cache(cache_file: Path) -> np.ndarray | None:
    """The cached features ``[N, F]`` (float32) of ``cache_file``, or None where there is no entry."""
    if not cache_file.is_file():
        return None
    with np.load(cache_file) as cached:
        return cached["features"]
