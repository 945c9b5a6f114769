"""Adherence: does a generated volume obey the label map it was generated from? (docs/method.md §20)

Three measurements of a set of generated volumes, each paired with its label map, against a real
set paired with its own maps:

* **Median HU inside each label**: for every generated volume and label, the median HU of its
  voxels inside the label, against the real set's range for that label (the 0.5th to 99.5th
  percentile of the real volumes' medians). Reported per label and overall as the fraction of
  (volume, label) pairs inside the range: it says the tissue painted where the map asks for lung
  has lung's density.
* **Dice of a reference segmenter**: the segmenter's prediction on the generated volume against
  the map it came from, per label and as the mean over the segmenter's ``mean_labels`` (those it
  segments well on real volumes), next to the same segmenter's Dice on the real set: its ceiling.
* **Mask-swap gap**: Dice against the volume's own map minus Dice against another volume's map,
  the maps paired by a fixed derangement (seeded, no volume keeps its own). A model that ignores
  its map and draws a plausible chest scores a Dice against its own map that an unrelated map
  reaches as well; the gap is what the map, not the prior, placed.

Intervals (95 %, volumes the unit; checked by simulation in tests/evaluation/test_adherence.py):
a fraction of volumes inside a range is a proportion, whose percentile bootstrap collapses to
[1, 1] whenever no volume in the set falls outside (at a true 97 % and 64 volumes, one set in
seven: it covered 86.8 % of 400 simulated sets, the Wilson interval 96.8 %), so proportions
carry the Wilson score interval; the overall fraction, over (volume,
label) pairs that share a volume, the Wilson interval with the pairs counted as the effective
number the between-volume spread allows (Kish's design effect; with no pair outside, one per
volume). Dice and the gap are means of per-volume values, with the percentile bootstrap over
volumes (``statistics.resample_counts``). The real range is the ruler the generated volumes are
held to: intervals are conditional on the real set given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from prdit.data.io import ITK_SUFFIXES, Volume, read_volume, volume_suffix
from prdit.data.labels import (LABELS, LABELS_FOLDER, PHANTOM_LABELS, TABLE_NAME, label_path, read_label_map, stem,
                               table_for)
from prdit.errors import DataError
from prdit.evaluation.config import AdherenceConfig, BootstrapConfig, EvaluationConfig
from prdit.evaluation.volumes import VolumeSet

WILSON_METHOD = "Wilson score interval of a proportion over volumes"
CLUSTER_METHOD = ("Wilson score interval over (volume, label) pairs at the effective number of pairs the "
                  "between-volume spread allows (Kish's design effect; one pair a volume when none falls outside)")
MEAN_METHOD = "percentile bootstrap over volumes of the mean of per-volume values"


# ---------------------------------------------------------------------------------------
# Per-volume measurements
# ---------------------------------------------------------------------------------------


def label_medians(hu: np.ndarray, labels: np.ndarray, num_labels: int = len(PHANTOM_LABELS)) -> np.ndarray:
    """Median HU inside each label ``[K]`` of a volume ``[D, H, W]`` and its map ``[D, H, W]``; NaN where absent."""
    flat, values = labels.ravel().astype(np.int64), hu.ravel().astype(np.float64)
    order = np.lexsort((values, flat))
    flat, values = flat[order], values[order]
    starts = np.searchsorted(flat, np.arange(num_labels), side="left")
    ends = np.searchsorted(flat, np.arange(num_labels), side="right")
    medians = np.full(num_labels, np.nan)
    for k in np.flatnonzero(ends > starts):
        medians[k] = np.median(values[starts[k]:ends[k]])
    return medians


def dice_per_label(prediction: np.ndarray, target: np.ndarray, num_labels: int = len(PHANTOM_LABELS)) -> np.ndarray:
    """Dice of each label ``[K]`` between two label maps ``[D, H, W]``; NaN where the target lacks the label."""
    prediction, target = prediction.ravel().astype(np.int64), target.ravel().astype(np.int64)
    both = np.bincount(target[prediction == target], minlength=num_labels)[:num_labels]
    sizes = (np.bincount(prediction, minlength=num_labels)[:num_labels]
             + np.bincount(target, minlength=num_labels)[:num_labels])
    present = np.bincount(target, minlength=num_labels)[:num_labels] > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present, 2.0 * both / sizes, np.nan)


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``n`` ≥ 2 items that moves every item: ``partner[i] != i``."""
    if n < 2:
        raise ValueError("a derangement needs at least 2 items")
    rng = np.random.default_rng(seed)
    while True:  # a random permutation is a derangement with probability about 1/e
        partner = rng.permutation(n)
        if not np.any(partner == np.arange(n)):
            return partner


def hu_ranges(real_medians: np.ndarray,
              percentiles: tuple[float, float] = AdherenceConfig.range_percentiles) -> np.ndarray:
    """Per-label range ``[K, 2]``: the ``percentiles`` of the real volumes' medians ``[N, K]`` (NaN where no real
    volume has the label)."""
    ranges = np.full((real_medians.shape[1], 2), np.nan)
    for k in range(real_medians.shape[1]):
        column = real_medians[:, k][np.isfinite(real_medians[:, k])]
        if column.size:
            ranges[k] = np.percentile(column, percentiles)
    return ranges


def inside_range(medians: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Whether each median ``[N, K]`` lies in its label's range ``[K, 2]``: 1.0, 0.0, or NaN where not measured."""
    inside = ((medians >= ranges[:, 0]) & (medians <= ranges[:, 1])).astype(np.float64)
    return np.where(np.isfinite(medians) & np.isfinite(ranges[:, 0]), inside, np.nan)


# ---------------------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------------------


def wilson_interval(successes: float, trials: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (``trials`` may be an effective, fractional number)."""
    from scipy import stats

    if trials <= 0:
        return float("nan"), float("nan")
    z = stats.norm.ppf(0.5 + level / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def proportion_entry(inside: np.ndarray, level: float = 0.95) -> dict:
    """Fraction inside of per-volume indicators ``[N]`` (NaN: not measured) with its Wilson interval."""
    values = inside[np.isfinite(inside)]
    if not values.size:
        return {"value": None, "volumes": 0, "low": None, "high": None}
    low, high = wilson_interval(float(values.sum()), float(values.size), level)
    return {"value": float(values.mean()), "volumes": int(values.size), "low": low, "high": high, "level": level,
            "method": WILSON_METHOD}


def pooled_proportion_entry(inside: np.ndarray, level: float = 0.95) -> dict:
    """Fraction inside over all measured (volume, label) pairs of ``[N, K]`` indicators, with the Wilson interval
    at the effective number of pairs (the pairs of one volume are not independent)."""
    measured = np.isfinite(inside)
    pairs, hits = measured.sum(axis=1).astype(np.float64), np.where(measured, inside, 0.0).sum(axis=1)
    used = pairs > 0
    pairs, hits = pairs[used], hits[used]
    n, total = len(pairs), float(pairs.sum())
    if n == 0:
        return {"value": None, "pairs": 0, "volumes": 0, "low": None, "high": None}
    p = float(hits.sum()) / total
    if 0.0 < p < 1.0 and n > 1:
        # ratio estimator's variance over volumes against the binomial variance of independent pairs
        variance = n / (n - 1) * float(((hits - p * pairs) ** 2).sum()) / total**2
        effective = min(total, p * (1 - p) / variance) if variance > 0 else total
    else:
        effective = float(n)  # nothing to estimate the spread from: count each volume once
    low, high = wilson_interval(p * effective, effective, level)
    return {"value": p, "pairs": int(total), "volumes": n, "effective_pairs": effective, "low": low, "high": high,
            "level": level, "method": CLUSTER_METHOD}


def mean_entry(values: np.ndarray, config: BootstrapConfig) -> dict:
    """Mean of per-volume values ``[N]`` (NaN: not measured) with its percentile bootstrap interval over volumes."""
    from prdit.evaluation.statistics import resample_counts

    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    entry = {"value": float(values.mean()) if values.size else None, "volumes": int(values.size)}
    if not config.resamples or values.size < 2:
        return {**entry, "low": None, "high": None}
    counts = resample_counts(values.size, config.resamples, np.random.default_rng(config.seed))
    resampled = counts @ values / values.size
    tail = 50.0 * (1.0 - config.level)
    low, high = np.percentile(resampled, [tail, 100.0 - tail])
    return {**entry, "low": float(low), "high": float(high), "level": config.level, "resamples": config.resamples,
            "seed": config.seed, "method": MEAN_METHOD}


# ---------------------------------------------------------------------------------------
# The report entry
# ---------------------------------------------------------------------------------------


def adherence(real_set: VolumeSet | None, fake_set: VolumeSet, config: EvaluationConfig,
              device: torch.device | str = "cpu", progress: bool = False) -> dict:
    """The report entry of the adherence metrics: generated volumes against the maps in ``config.adherence.labels``
    (by file name), the real volumes against the maps in ``labels/`` beside them."""
    from prdit.evaluation.segmenter import load_segmenter

    if real_set is None:
        raise DataError("adherence holds generated volumes to the real set's per-label HU range and the segmenter's "
                        "Dice on real volumes: give the real set, with its label maps in labels/ beside it")
    settings = config.adherence
    segmenter = load_segmenter(settings.segmenter)
    if len(fake_set) < 2:
        raise DataError("the mask swap pairs each generated volume with another one's map: give at least 2")
    fake_files = fake_map_files(fake_set, Path(settings.labels))
    real_files = [label_path(item) for item in _files(real_set)]
    _check_grid(segmenter, fake_set, fake_files[0])
    partner = derangement(len(fake_set), settings.swap_seed)
    fake_medians, own, swapped = _measure(fake_set, fake_files, segmenter, config, device, progress, partner)
    real_medians, real, _ = _measure(real_set, real_files, segmenter, config, device, progress)
    ranges = hu_ranges(real_medians, settings.range_percentiles)
    inside = inside_range(fake_medians, ranges)
    covered = [LABELS[name] for name in segmenter.mean_labels]

    boot, level = config.bootstrap, config.bootstrap.level
    intervals = boot.resamples > 0

    def proportion(values: np.ndarray) -> dict:
        entry = proportion_entry(values, level)
        return entry if intervals else {**entry, "low": None, "high": None}

    per_label_hu, per_label_dice, per_label_gap = {}, {}, {}
    inside[:, 0] = np.nan  # background: what a map leaves over (air, the unlabelled), not a structure
    for k, name in enumerate(PHANTOM_LABELS[1:], start=1):
        if not (np.isfinite(fake_medians[:, k]).any() or np.isfinite(real_medians[:, k]).any()):
            continue
        measured = fake_medians[:, k][np.isfinite(fake_medians[:, k])]
        per_label_hu[name] = {
            "range_hu": None if np.isnan(ranges[k, 0]) else [float(ranges[k, 0]), float(ranges[k, 1])],
            "real_volumes": int(np.isfinite(real_medians[:, k]).sum()),
            "generated_median_hu": float(np.median(measured)) if measured.size else None,
            "inside": proportion(inside[:, k])}
        per_label_dice[name] = {"generated": mean_entry(own[:, k], boot), "real": mean_entry(real[:, k], boot),
                                "in_mean": name in segmenter.mean_labels}
        per_label_gap[name] = mean_entry(own[:, k] - swapped[:, k], boot)
    overall = pooled_proportion_entry(inside, level)
    if not intervals:
        overall = {**overall, "low": None, "high": None}

    own_mean, swapped_mean, real_mean = (_mean_over(d, covered) for d in (own, swapped, real))
    return {
        "labels": {"generated": str(settings.labels), "real": f"{LABELS_FOLDER}/ beside the real volumes",
                   "generated_maps": len(fake_files), "real_maps": len(real_files)},
        "segmenter": segmenter.describe(),
        "hu": {"range_percentiles": list(settings.range_percentiles), "inside": overall, "per_label": per_label_hu,
               "definition": "per label, the fraction of generated volumes whose median HU inside the label lies in "
                             "the real set's range of that median"},
        "dice": {"generated": mean_entry(own_mean, boot), "real": mean_entry(real_mean, boot),
                 "mean_labels": list(segmenter.mean_labels), "per_label": per_label_dice,
                 "definition": "per volume, the mean Dice over the mean labels its map holds, averaged over volumes; "
                               "'real' is the segmenter on the real volumes (its ceiling)"},
        "mask_swap": {"gap": mean_entry(own_mean - swapped_mean, boot), "swapped_dice": mean_entry(swapped_mean, boot),
                      "per_label": per_label_gap, "seed": settings.swap_seed,
                      "partner": [str(fake_files[j].name) for j in partner],
                      "definition": "Dice against the volume's own map minus Dice against the map of the volume the "
                                    "seeded derangement pairs it with"},
    }


def fake_map_files(fake_set: VolumeSet, folder: Path) -> list[Path]:
    """Where the generated volumes' maps are: ``folder/<volume name>.nii.gz``."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder of label maps; --labels names the folder holding "
                        f"<volume name>.nii.gz and {TABLE_NAME} for each generated volume")
    return [folder / f"{stem(item)}.nii.gz" for item in _files(fake_set)]


def _measure(volume_set: VolumeSet, map_files: list[Path], segmenter, config: EvaluationConfig, device,
             progress: bool, partner: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per volume and label: median HU inside the label ``[N, K]``, the segmenter's Dice against the volume's map
    ``[N, K]`` and (with ``partner``) against its partner's map ``[N, K]``; one batch of volumes in memory at a time."""
    from tqdm.auto import tqdm

    n, k = len(volume_set), len(PHANTOM_LABELS)
    medians, own = np.full((n, k), np.nan), np.full((n, k), np.nan)
    swapped = None if partner is None else np.full((n, k), np.nan)

    def read(i: int) -> np.ndarray:
        return _read_map(map_files[i], volume_set.items[i], volume_set.shape, segmenter)

    for start in tqdm(range(0, n, config.batch_size), desc=f"adherence ({volume_set.name})", unit="batch",
                      disable=not progress):
        indices = range(start, min(start + config.batch_size, n))
        hu = np.stack([config.normalization.to_hu(volume_set[i]).astype(np.float32) for i in indices])
        predictions = segmenter.predict(hu, device, config.batch_size)
        for volume, prediction, i in zip(hu, predictions, indices):
            labels = read(i)
            medians[i], own[i] = label_medians(volume, labels), dice_per_label(prediction, labels)
            if partner is not None:
                swapped[i] = dice_per_label(prediction, read(int(partner[i])))
    return medians, own, swapped


def _files(volume_set: VolumeSet) -> list[Path]:
    """The set's files: label maps pair with volumes by file name."""
    if not all(isinstance(item, Path) for item in volume_set.items):
        raise DataError(f"{volume_set.name} volumes given as arrays: adherence pairs volume files with their label "
                        f"maps by file name; give a folder or a list of files")
    return list(volume_set.items)


def _read_map(path: Path, volume_path: Path, shape: tuple[int, int, int], segmenter) -> np.ndarray:
    """A label map checked against its volume's grid (its geometry where the file keeps one) and the segmenter's
    labels, at the compared ``shape`` (the centre voxel of each pooled block, as training takes it)."""
    if not path.is_file():
        raise DataError(f"{path}: no label map for {volume_path}; each volume needs its map under its own file name")
    volume = read_volume(volume_path)
    if volume_path.is_dir() or volume_suffix(volume_path) in ITK_SUFFIXES:
        reference = volume
    else:  # .npy/.npz keep no origin or orientation: the grid is the shape, and the map's geometry is taken as is
        own = read_volume(path)
        reference = Volume(array=volume.array, spacing=own.spacing, origin=own.origin, direction=own.direction)
    labels = read_label_map(path, table_for(path, None), reference)
    unknown = sorted(set(np.unique(labels).tolist()) - set(segmenter.prdit_indices.tolist()))
    if unknown:
        raise DataError(f"{path}: holds label(s) {', '.join(PHANTOM_LABELS[i] for i in unknown)}, which the "
                        f"segmenter {segmenter.folder} does not know; pass a segmenter trained on these labels "
                        f"(--segmenter DIR)")
    if any(stored % size for stored, size in zip(labels.shape, shape)):
        raise DataError(f"{path}: label map of {labels.shape} voxels cannot be taken to the compared {shape}")
    f = [stored // size for stored, size in zip(labels.shape, shape)]
    return np.ascontiguousarray(labels[f[0] // 2::f[0], f[1] // 2::f[1], f[2] // 2::f[2]])


def _check_grid(segmenter, fake_set: VolumeSet, first_map: Path) -> None:
    """The segmenter must have been trained at the volumes' size and spacing."""
    from prdit.evaluation.segmenter import CONFIG_FILE

    config_file = segmenter.folder / CONFIG_FILE
    if segmenter.input_size is not None and tuple(segmenter.input_size) != tuple(fake_set.shape):
        raise DataError(f"{config_file}: the segmenter was trained on {list(segmenter.input_size)} volumes, these are "
                        f"{list(fake_set.shape)}; pass a segmenter trained at this size (--segmenter DIR)")
    if segmenter.spacing is not None and first_map.is_file():
        spacing = read_volume(first_map).spacing
        if not np.allclose(spacing, segmenter.spacing, rtol=1e-3, atol=0.0):
            raise DataError(f"{first_map}: spacing {tuple(float(s) for s in spacing)} mm, but the segmenter "
                            f"{config_file} was trained at {tuple(segmenter.spacing)} mm; pass a segmenter trained at "
                            f"this spacing (--segmenter DIR)")


def _mean_over(dice: np.ndarray, labels: list[int]) -> np.ndarray:
    """Per-volume mean Dice ``[N]`` over ``labels`` present in each volume's map (NaN where none is)."""
    if not labels:
        return np.full(len(dice), np.nan)
    chosen = dice[:, labels]
    present = np.isfinite(chosen)
    with np.errstate(invalid="ignore"):
        return np.where(present.any(axis=1), np.where(present, chosen, 0.0).sum(axis=1) / present.sum(axis=1), np.nan)


def table_rows(entry: dict) -> list[tuple[str, str, str, str]]:
    """Rows (metric, value, published way, notes) of the report table for an adherence entry."""
    from rich.markup import escape

    hu, dice, swap = entry["hu"], entry["dice"], entry["mask_swap"]
    low, high = hu["range_percentiles"]
    outside = sorted(((e["inside"]["value"], name) for name, e in hu["per_label"].items()
                      if e["inside"]["value"] is not None), key=lambda pair: pair[0])[:3]
    worst = ", ".join(f"{name} {value:.0%}" for value, name in outside)
    labels = dice["mean_labels"]
    left_out = [name for name in entry["segmenter"]["labels"] if name not in labels and name != "background"]
    return [
        ("HU inside real range", escape(_formatted(hu["inside"], ".1%")), "no",
         escape(f"(volume, label) pairs whose median HU lies in the real set's p{low:g}-p{high:g} range of that "
                f"median; fewest inside: {worst}")),
        ("Dice (generated)", escape(_formatted(dice["generated"], ".3f")), "no",
         escape(f"reference segmenter on the generated volumes vs their maps, mean over the {len(labels)} labels "
                f"it segments (left out: {', '.join(left_out) or 'none'})")),
        ("Dice (real, ceiling)", escape(_formatted(dice["real"], ".3f")), "no",
         "the same segmenter on the real volumes vs their maps"),
        ("mask-swap gap", escape(_formatted(swap["gap"], ".3f")), "no",
         escape(f"Dice vs own map minus Dice vs another volume's map ({_formatted(swap['swapped_dice'], '.3f')}; "
                f"derangement seed {swap['seed']})")),
    ]


def _formatted(entry: dict, spec: str) -> str:
    """``value [low, high]`` of an entry (the value alone where it has no interval)."""
    if entry["value"] is None:
        return "-"
    text = format(entry["value"], spec)
    if entry.get("low") is None:
        return text
    return f"{text} [{format(entry['low'], spec)}, {format(entry['high'], spec)}]"
