"""How long each evaluation statistic takes on the features of 1,000 real and 1,000 generated volumes.

Synthetic 2048-d features (the size of MedicalNet's and the CT ResNet's), N per set: the time of
each metric's point estimate and of its bootstrap interval (``--bootstrap`` resamples, 200 as
``prdit evaluate`` by default) — FID, the published and the unbiased MMD, KID (100 subsets),
precision/recall/density/coverage (k-NN balls), and the per-volume statistics' bootstraps
(MS-SSIM pair means of 1,000 pairs, W(HU) from 2,000-bin histograms). Feature extraction and
MS-SSIM itself are not included (they depend on the network, volume size and device; see
``feature_separation.py``). Last, the memorisation check's correlation search (27 translations)
on ``--memorisation-size``³ volumes, with the time it projects to 1,000 generated + 1,000
held-out against 1,000 training volumes at 128³ (linear in pairs and voxels).

On a shared machine, run NumPy's BLAS single-threaded (``OPENBLAS_NUM_THREADS=1``): many threads
on few busy cores slow the small eigen- and matrix products of the bootstrap by 10x and more.

    OPENBLAS_NUM_THREADS=1 python benchmarks/evaluation_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.common import add_common_args, report, resolve_device, set_threads

NAME = "evaluation_speed"


def timed(fn) -> tuple[float, object]:
    """Seconds one call of ``fn`` takes, and what it returned."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, time every statistic, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=1000, help="features per set")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples")
    parser.add_argument("--memorisation-size", type=int, default=64, help="side of the volumes of the correlation "
                        "search (64 generated and 64 training volumes)")
    add_common_args(parser, repeats=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)

    from prdit.evaluation import statistics
    from prdit.evaluation.config import BootstrapConfig, MemorisationConfig
    from prdit.evaluation.frechet import fid_from_features
    from prdit.evaluation.kid import kid
    from prdit.evaluation.memorisation import nearest_by_correlation, translations
    from prdit.evaluation.mmd import mmd, mmd_unbiased
    from prdit.evaluation.prdc import prdc
    from prdit.evaluation.volumes import VolumeSet

    n, dim, resamples, side, count = ((60, 64, 10, 16, 4) if args.smoke else
                                      (args.num, args.dim, args.bootstrap, args.memorisation_size, 64))
    rng = np.random.default_rng(0)
    # post-ReLU-like features: non-negative, correlated; the generated set slightly off
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    real = np.abs(rng.standard_normal((n, dim)) @ mixing)
    fake = np.abs((rng.standard_normal((n, dim)) + 0.05) @ mixing)
    config = BootstrapConfig(resamples=resamples, seed=0)
    counts = statistics.paired_counts(n, n, config)

    metrics = {
        "FID (FID-infinity, jackknife)": (lambda: fid_from_features(real, fake),
                                          lambda: statistics.fid_infinity(real, fake, config)),
        "MMD (published)": (lambda: mmd(real, fake), lambda: statistics.mmd_resamples(real, fake, *counts)),
        "MMD (unbiased)": (lambda: mmd_unbiased(real, fake),
                           lambda: statistics.mmd_resamples(real, fake, *counts, unbiased=True)),
        "KID (100 subsets)": (lambda: kid(real, fake)["value"], lambda: statistics.kid_resamples(real, fake, *counts)),
        "precision/recall/density/coverage": (lambda: prdc(real, fake)["precision"],
                                              lambda: statistics.prdc_subsamples(real, fake, config)),
    }
    pairs = np.array([sorted(rng.choice(n, 2, replace=False)) for _ in range(1000)])
    histograms = rng.integers(0, 50, size=(2, n, 2000))
    volume_bootstraps = {
        "MS-SSIM (1,000 pairs)": lambda: statistics.pair_mean_resamples(pairs, rng.uniform(size=len(pairs)), counts[1]),
        "W(HU) (2,000 bins)": lambda: statistics.hu_wasserstein_resamples(histograms[0], histograms[1], *counts, 1.0),
    }
    rows, results = [], []
    for name, (point, bootstrap) in metrics.items():
        point_s, value = timed(point)
        boot_s, values = timed(bootstrap)
        values = values["precision"] if isinstance(values, dict) and "precision" in values else values
        entry = values if isinstance(values, dict) else statistics.interval(values, config)  # FID-infinity's own
        results.append({"metric": name, "point_s": point_s, "bootstrap_s": boot_s, "value": float(value),
                        "interval": [entry["low"], entry["high"]]})
        bounds = "no interval" if entry["low"] is None else f"[{entry['low']:.4g}, {entry['high']:.4g}]"
        rows.append([name, f"{point_s:.2f}", f"{boot_s:.2f}", f"{1e3 * boot_s / resamples:.1f}",
                     f"{value:.4g} {bounds}"])  # FID-infinity is withheld with fewer features than dimensions
    for name, bootstrap in volume_bootstraps.items():
        boot_s, _ = timed(bootstrap)
        results.append({"metric": name, "point_s": None, "bootstrap_s": boot_s})
        rows.append([name, "-", f"{boot_s:.2f}", f"{1e3 * boot_s / resamples:.1f}", "(per-volume values given)"])

    volumes = VolumeSet(rng.uniform(-1, 1, (2 * count, side, side, side)).astype(np.float32))
    queries = VolumeSet(np.stack([volumes[i] for i in range(count)]))
    train = VolumeSet(np.stack([volumes[i] for i in range(count, 2 * count)]))
    search_s, _ = timed(lambda: nearest_by_correlation([queries], train, MemorisationConfig(), device, progress=False))
    shifts = len(translations(MemorisationConfig.shift))
    work = shifts * count * count * (side - 2) ** 3
    projected = search_s * (shifts * 2000 * 1000 * 126**3) / work
    results.append({"metric": "memorisation correlation", "volumes": [count, count], "side": side,
                    "seconds": search_s, "multiply_adds": work, "projected_1000x1000_128_s": projected})
    rows.append([f"memorisation: {count} x {count} at {side}^3, {shifts} shifts", f"{search_s:.2f}", "-", "-",
                 f"projected 2,000 x 1,000 at 128^3: {projected / 3600:.1f} h"])

    notes = [f"{n} real and {n} generated synthetic {dim}-d features; bootstrap: {resamples} resamples of both sets",
             "point: the metric on the full sets; bootstrap: all resamples (from cached Gram/kernel/distance "
             "matrices, the setup included); per resample: bootstrap / resamples",
             f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; memorisation on "
             f"{device.type}, float32 matrix products"]
    report(NAME, device, args, "Evaluation statistics: time per metric and bootstrap", notes,
           ["metric", "point (s)", f"bootstrap B={resamples} (s)", "per resample (ms)", "value [95% interval]"],
           rows, results)


if __name__ == "__main__":
    main()
