"""The memorisation check (docs/method.md §17): does the generator copy its training volumes?

A generator that reproduces training patients leaks them. For every generated volume the check
finds its nearest training volume by

* **correlation**: the Pearson correlation of the model-range voxels, maximised over
  translations of up to ``shift`` voxels per axis (default 1: 27 translations). A copy moved by
  one voxel correlates less with its original than unrelated phantoms correlate with each other
  (at 32³: 0.90–0.94 against 0.93–0.98), so without the search a shifted copy would pass. The
  training volume's centre (``shift`` voxels off each face) is compared with the generated
  volume's region of the same size moved by the translation;
* **feature distance**: the Euclidean distance between feature vectors, when a feature network
  is configured.

The held-out real volumes (the real set, never trained on) against the same training set give
the reference: how close an unseen volume of the distribution comes to the training set by
chance. A generated volume whose correlation exceeds every held-out volume's (or a stated
threshold), or whose feature distance is below every held-out volume's, is flagged as a likely
copy. With n held-out volumes a fresh volume beats all of them with probability 1/(n + 1), and
with M generated volumes, none of them copies, at least one is flagged with probability about
M/(M + n) (the largest of M + n exchangeable values is a generated one): 50 % with as many
generated as held out. The report states both. Beside it, a threshold with a stated family-wise
rate (``familywise_rate``, 5 %: the chance of any false flag in the run): a Gumbel distribution
fitted by moments to the held-out similarities (the nearest-training similarity is a maximum,
whose tail is of that kind) and its 1 − rate/M quantile, so that by the union bound M fresh
volumes cross it with probability at most the rate (feature distances: the same on their
negatives). Checked by simulation on exchangeable data (tests/evaluation/test_memorisation.py).

The correlation streams: queries (generated and held-out volumes) are taken ``query_chunk`` at
a time, and for each chunk the training volumes pass ``train_chunk`` at a time; each
translation is one matrix product of normalised crops. Memory holds the two chunks, never the
sets. Time is (2·shift + 1)³ · N_queries · N_train · voxels multiply-adds: at 128³ with 1,000
generated, 1,000 held-out and 1,000 training volumes about 1.1e14, minutes on a GPU and many
hours on a CPU (``--device``); ``shift 0`` divides it by 27.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from prdit.data.normalization import Normalization
from prdit.errors import DataError
from prdit.evaluation.config import MemorisationConfig
from prdit.evaluation.volumes import VolumeSet

# A held-out volume this close to a training volume is (almost surely) in the training set too.
OVERLAP_CORRELATION = 0.999
EULER_GAMMA = 0.5772156649015329
FAMILYWISE_RULE = ("Gumbel fitted by moments to the held-out similarities, its 1 - rate/M quantile: M fresh volumes "
                   "cross it with probability at most the rate (union bound)")


@dataclass
class Nearest:
    """For each query volume: its largest similarity to the training set, which training volume, and how shifted."""

    similarity: np.ndarray  # [N]
    index: np.ndarray  # [N] training indices
    shift: np.ndarray  # [N, 3] translation (z, y, x) in voxels of the query that matched


def translations(shift: int) -> list[tuple[int, int, int]]:
    """Every translation ``(dz, dy, dx)`` with components in ``[-shift, shift]``, the identity first."""
    steps = sorted(range(-shift, shift + 1), key=abs)
    return list(itertools.product(steps, steps, steps))


@torch.no_grad()
def nearest_by_correlation(queries: list[VolumeSet], train: VolumeSet,
                           config: MemorisationConfig = MemorisationConfig(), device: str | torch.device = "cpu",
                           progress: bool = True) -> list[Nearest]:
    """For every volume of every query set, its nearest training volume by correlation maximised over translations."""
    from prdit.evaluation.features import full_fp32

    s = config.shift
    shape = train.shape
    if any(q.shape != shape for q in queries):
        raise DataError(f"the memorisation check compares volumes of one size; training volumes are {shape}, "
                        f"the others {[q.shape for q in queries]}")
    if min(shape) <= 2 * s:
        raise DataError(f"volumes of {shape} are too small for translations of {s} voxels per axis")
    device = torch.device(device)
    items = [(k, i) for k, q in enumerate(queries) for i in range(len(q))]
    best = torch.full((len(items),), -2.0, dtype=torch.float64)
    best_index = torch.zeros(len(items), dtype=torch.long)
    best_shift = torch.zeros(len(items), dtype=torch.long)
    offsets = translations(s)
    centre = tuple(slice(s, n - s) for n in shape)
    passes = -(-len(items) // config.query_chunk) * -(-len(train) // config.train_chunk)
    bar = tqdm(total=passes, desc="memorisation (correlation)", unit="chunk pair", disable=not progress)
    with full_fp32():  # TF32's 10-bit mantissa would blur correlations of 0.999 and 0.99
        for q_start in range(0, len(items), config.query_chunk):
            chunk = items[q_start:q_start + config.query_chunk]
            rows = torch.arange(q_start, q_start + len(chunk))
            query = torch.from_numpy(np.stack([queries[k][i] for k, i in chunk])).to(device)
            for t_start in range(0, len(train), config.train_chunk):
                indices = range(t_start, min(t_start + config.train_chunk, len(train)))
                reference = _normalised(torch.from_numpy(train.batch(indices)[:, 0]).to(device)[(slice(None), *centre)])
                for o, offset in enumerate(offsets):
                    moved = tuple(slice(s + d, n - s + d) for d, n in zip(offset, shape))
                    value, where = (_normalised(query[(slice(None), *moved)]) @ reference.T).double().cpu().max(dim=1)
                    better = value > best[rows]
                    best[rows[better]] = value[better]
                    best_index[rows[better]] = where[better] + t_start
                    best_shift[rows[better]] = o
                bar.update(1)
    bar.close()
    shifts = np.asarray(offsets)[best_shift.numpy()]
    results, start = [], 0
    for q in queries:
        stop = start + len(q)
        results.append(Nearest(best[start:stop].numpy(), best_index[start:stop].numpy(), shifts[start:stop]))
        start = stop
    return results


def familywise_threshold(held_out: np.ndarray, queries: int, rate: float) -> float:
    """The similarity that any of ``queries`` fresh volumes exceeds with probability at most ``rate``: the
    1 − rate/queries quantile of a Gumbel distribution fitted by moments to the held-out similarities ``[n]``."""
    held_out = np.asarray(held_out, np.float64)
    if len(held_out) < 2:
        raise DataError("a family-wise threshold needs at least 2 held-out volumes")
    scale = held_out.std(ddof=1) * np.sqrt(6.0) / np.pi
    location = held_out.mean() - EULER_GAMMA * scale
    return float(location - scale * np.log(-np.log1p(-rate / queries)))


def familywise_entry(held_out: np.ndarray, generated: np.ndarray, rate: float, larger: bool = True) -> dict:
    """The family-wise flag of ``generated`` scores ``[M]`` against held-out ones ``[n]`` (``larger``: a copy
    scores higher, as a correlation; else lower, as a distance); skipped with fewer than 2 held-out volumes,
    which have no spread to fit."""
    entry = {"rate": rate, "rule": FAMILYWISE_RULE}
    if len(held_out) < 2:
        return {**entry, "skipped": "a family-wise threshold needs at least 2 held-out volumes"}
    sign = 1.0 if larger else -1.0
    threshold = sign * familywise_threshold(sign * np.asarray(held_out), len(generated), rate)
    flagged = generated > threshold if larger else generated < threshold
    return {**entry, "threshold": threshold, "flagged": int(flagged.sum())}


def nearest_by_features(queries: np.ndarray, train: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Distance ``[N]`` from each query feature ``[N, F]`` to its nearest training feature ``[M, F]``, and which."""
    from prdit.evaluation.prdc import pairwise_distances

    distance, index = np.empty(len(queries)), np.empty(len(queries), np.int64)
    for start in range(0, len(queries), chunk):
        block = pairwise_distances(queries[start:start + chunk], train)
        index[start:start + chunk] = block.argmin(axis=1)
        distance[start:start + chunk] = block.min(axis=1)
    return distance, index


def memorisation_check(fake: VolumeSet, real: VolumeSet, train: VolumeSet,
                       config: MemorisationConfig = MemorisationConfig(), device: str | torch.device = "cpu",
                       progress: bool = True, features: dict[str, np.ndarray] | None = None,
                       normalization: Normalization | None = None) -> dict:
    """The report entry: nearest training volumes of generated and held-out volumes, flags and the top pairs.

    ``features``: ``{"fake", "real", "train"}`` feature arrays ``[N, F]`` for the feature-distance check
    (None: correlation only). With ``config.page`` set, the top pairs are written as a viewer page.
    """
    generated, held_out = nearest_by_correlation([fake, real], train, config, device, progress)
    threshold = float(config.threshold) if config.threshold is not None else float(held_out.similarity.max())
    flagged = generated.similarity > threshold
    rate, m, n = config.familywise_rate, len(fake), len(real)
    entry: dict = {
        "generated_volumes": m, "held_out_volumes": n, "training_volumes": len(train),
        "expected_false_flag_rate": 1.0 / (n + 1) if config.threshold is None else None,
        "any_false_flag_probability": m / (m + n) if config.threshold is None else None,
        "correlation": {
            "shift_voxels": config.shift, "translations": len(translations(config.shift)), "threshold": threshold,
            "threshold_from": "stated" if config.threshold is not None else "the largest held-out correlation",
            "held_out": _summary(held_out.similarity), "generated": _summary(generated.similarity),
            "flagged": int(flagged.sum()), "flagged_fraction": float(flagged.mean()),
            "familywise": familywise_entry(held_out.similarity, generated.similarity, rate)},
        "warnings": []}
    if held_out.similarity.max() > OVERLAP_CORRELATION:
        k = int(held_out.similarity.argmax())
        entry["warnings"].append(
            f"held-out volume {_name(real, k)} matches training volume {_name(train, int(held_out.index[k]))} "
            f"(correlation {held_out.similarity[k]:.4f}): the real set overlaps the training set, so it cannot "
            "serve as the unseen reference; give held-out volumes")
    flagged_features = np.zeros(len(fake), bool)
    feature_distance = feature_index = None
    if features is not None:
        feature_distance, feature_index = nearest_by_features(features["fake"], features["train"])
        held_distance, _ = nearest_by_features(features["real"], features["train"])
        flagged_features = feature_distance < held_distance.min()
        entry["features"] = {"threshold": float(held_distance.min()),
                             "threshold_from": "the smallest held-out feature distance",
                             "held_out": _summary(held_distance), "generated": _summary(feature_distance),
                             "flagged": int(flagged_features.sum()), "flagged_fraction": float(flagged_features.mean()),
                             "familywise": familywise_entry(held_distance, feature_distance, rate, larger=False)}
    else:
        entry["features"] = {"skipped": "no feature network configured (--weights, or --features ct-resnet152, or "
                                        "--features random-init --seed S)"}
    either = flagged | flagged_features
    entry["flagged"] = int(either.sum())
    entry["flagged_fraction"] = float(either.mean())
    entry["flagged_volumes"] = [_name(fake, int(i)) for i in np.flatnonzero(either)]
    order = np.argsort(-generated.similarity, kind="stable")[:config.top_pairs]
    entry["top_pairs"] = [{
        "generated": _name(fake, int(i)), "training": _name(train, int(generated.index[i])),
        "generated_index": int(i), "training_index": int(generated.index[i]),
        "correlation": float(generated.similarity[i]), "shift_voxels": [int(v) for v in generated.shift[i]],
        "feature_distance": None if feature_distance is None else float(feature_distance[i]),
        "nearest_by_features": None if feature_index is None else _name(train, int(feature_index[i])),
        "flagged": bool(either[i])} for i in order]
    entry["nearest"] = {"generated": _nearest_lists(generated), "held_out": _nearest_lists(held_out)}
    if config.page is not None:
        entry["page"] = str(write_pairs_page(entry["top_pairs"], fake, train, config.page,
                                             normalization or Normalization()))
    return entry


def write_pairs_page(pairs: list[dict], fake: VolumeSet, train: VolumeSet, path: str | Path,
                     normalization: Normalization) -> Path:
    """The top pairs side by side in the viewer of ``prdit view``: generated, then its nearest training volume."""
    from prdit.data.io import Volume
    from prdit.viewer import write_viewer

    volumes, names = [], []
    for rank, pair in enumerate(pairs, start=1):
        for volume_set, index, role in ((fake, pair["generated_index"], "generated"),
                                        (train, pair["training_index"], "training")):
            volumes.append(Volume(normalization.to_hu(volume_set[index]), spacing=_spacing(volume_set, index)))
            names.append(f"#{rank} {role}: {Path(_name(volume_set, index)).name} (r = {pair['correlation']:.4f})")
    if not volumes:
        raise DataError("no pairs to show")
    title = f"prdit memorisation check: the {len(pairs)} generated volumes most like a training volume"
    return write_viewer(volumes, path, names=names, shown=[0, 1], title=title)


def _normalised(volumes: torch.Tensor) -> torch.Tensor:
    """``[B, ...]`` -> ``[B, V]`` rows of zero mean and unit norm (a constant row stays 0: correlation 0)."""
    flat = volumes.float().reshape(len(volumes), -1).clone()  # one copy of the crop, normalised in place
    flat -= flat.mean(dim=1, keepdim=True)
    return flat.div_(flat.norm(dim=1, keepdim=True).clamp_min(1e-12))


def _summary(values: np.ndarray) -> dict:
    return {"max": float(values.max()), "p95": float(np.percentile(values, 95)), "median": float(np.median(values)),
            "min": float(values.min())}


def _nearest_lists(nearest: Nearest) -> dict:
    return {"correlation": [float(v) for v in nearest.similarity], "training_index": [int(i) for i in nearest.index]}


def _name(volumes: VolumeSet, index: int) -> str:
    item = volumes.items[index]
    return str(item) if isinstance(item, Path) else f"{volumes.name}[{index}]"


def _spacing(volumes: VolumeSet, index: int) -> tuple[float, float, float]:
    """Voxel spacing (x, y, z) in mm of a set's volume at the compared size (1 mm for in-memory arrays)."""
    from prdit.data.io import read_volume

    item = volumes.items[index]
    if not isinstance(item, Path):
        return (1.0, 1.0, 1.0)
    stored = read_volume(item)
    factors = [s / c for s, c in zip(stored.array.shape[::-1], volumes.shape[::-1])]  # (x, y, z)
    return tuple(float(sp * f) for sp, f in zip(stored.spacing, factors))
