"""The evaluation suite as one call: ``evaluate(real, fake, config)`` -> a JSON-ready report.

Used by ``prdit evaluate``, the demo and the benchmarks. The report carries, besides the
numbers, everything needed to judge and reproduce them: sample counts, input size, the
feature network and the SHA-256 of its weights, the MS-SSIM settings, the critic's split,
steps and seed, and warnings (small-N FID bias, a random feature network).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prdit import __version__
from prdit.errors import DataError
from prdit.evaluation.config import FEATURE_METRICS, EvaluationConfig
from prdit.evaluation.volumes import VolumeSet, VolumeSource

VolumeInput = Sequence[VolumeSource] | np.ndarray | str | Path | VolumeSet


def evaluate(real: VolumeInput, fake: VolumeInput, config: EvaluationConfig) -> dict:
    """Compute the configured metrics of generated volumes ``fake`` against ``real``; returns the report dict.

    ``real``/``fake``: a directory, a text list of files, a list of paths or ``[D, H, W]``
    arrays, an ``[N, D, H, W]`` array, or a ``VolumeSet``.
    """
    from prdit.device import resolve_device
    from prdit.evaluation.features import extract_features, feature_network

    real_set = _volume_set(real, config.real_units, config, "real")
    fake_set = _volume_set(fake, config.fake_units, config, "generated")
    if real_set.shape != fake_set.shape:
        raise DataError(f"real volumes are {real_set.shape} but generated volumes are {fake_set.shape}; metrics "
                        "compare volumes at one size (pass resize=(D, H, W) / --resize D,H,W to resize both)")
    device = resolve_device(config.device)
    report: dict = {"prdit_version": __version__, "metrics": list(config.metrics),
                    "samples": {"real": len(real_set), "fake": len(fake_set)},
                    "input_size": list(real_set.shape), "real": real_set.describe(), "fake": fake_set.describe(),
                    "device": str(device), "warnings": [], "timings_s": {}}
    if "hu" in (config.real_units, config.fake_units):
        report["normalization"] = config.normalization.to_dict()

    if any(m in FEATURE_METRICS for m in config.metrics):
        start = time.perf_counter()
        network = feature_network(config.weights, config.seed)
        report["feature_network"] = network.describe()
        if not network.comparable:
            report["warnings"].append(network.describe()["warning"])
        kwargs = dict(network=network, batch_size=config.batch_size, device=device,
                      cache_dir=config.cache_dir, progress=config.progress)
        real_features = extract_features(real_set, **kwargs)
        fake_features = extract_features(fake_set, **kwargs)
        report["timings_s"]["features"] = time.perf_counter() - start
        if "fid" in config.metrics:
            report["fid"] = _fid(real_features, fake_features, network.comparable, report["warnings"])
        if "mmd" in config.metrics:
            from prdit.evaluation.mmd import mmd_squared

            squared, bandwidth = mmd_squared(real_features, fake_features)
            report["mmd"] = {"value": float(np.sqrt(max(squared, 0.0))), "mmd_squared": squared,
                             "bandwidth": bandwidth, "kernel": "RBF, bandwidth = median pairwise distance of "
                             "real features, unbiased MMD^2, reported sqrt(max(MMD^2, 0))",
                             "comparable_with_published": network.comparable}

    if "msssim" in config.metrics:
        from prdit.evaluation.msssim import msssim_diversity

        start = time.perf_counter()
        report["msssim"] = {
            "fake": msssim_diversity(fake_set, config.msssim, config.batch_size, device, config.progress),
            "real": msssim_diversity(real_set, config.msssim, config.batch_size, device, config.progress),
        }
        report["timings_s"]["msssim"] = time.perf_counter() - start

    if "wasserstein" in config.metrics:
        from prdit.evaluation.wasserstein import wasserstein_estimate

        start = time.perf_counter()
        report["wasserstein"] = wasserstein_estimate(real_set, fake_set, config.critic, device, config.progress)
        report["timings_s"]["wasserstein"] = time.perf_counter() - start

    report["config"] = config.to_dict()
    return report


def write_report(report: dict, path: str | Path) -> Path:
    """Write the report as indented JSON."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def report_table(report: dict):
    """A rich ``Table`` of the headline numbers of a report."""
    from rich.table import Table

    n_real, n_fake = report["samples"]["real"], report["samples"]["fake"]
    table = Table(title=f"PRDiT evaluation: {n_fake} generated vs {n_real} real, "
                        f"{'x'.join(map(str, report['input_size']))}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("notes")
    network = report.get("feature_network", {})
    features_note = ("random-init features: NOT comparable" if network and not network["comparable_with_published"]
                     else "MedicalNet ResNet-50")
    if "fid" in report:
        fid = report["fid"]
        table.add_row("FID x10^3", f"{fid['value_x1e3']:.4f}", f"{features_note}; raw {fid['value']:.6g}")
    if "mmd" in report:
        table.add_row("MMD", f"{report['mmd']['value']:.4f}", f"{features_note}; RBF, median bandwidth")
    if "msssim" in report:
        for which, label in (("fake", "generated"), ("real", "real")):
            entry = report["msssim"][which]
            table.add_row(f"MS-SSIM ({label})", f"{entry['mean']:.4f}",
                          f"{entry['pairs']} pairs, kernel {entry['kernel_size']}, {entry['scales']} scales")
    if "wasserstein" in report:
        entry = report["wasserstein"]
        table.add_row("Wasserstein (critic)", f"{entry['value']:.4f}",
                      f"± {entry['standard_error']:.2g} (s.e.); "
                      f"held out {entry['split']['real']['held_out']}+{entry['split']['fake']['held_out']}, "
                      f"{entry['steps']} steps, seed {entry['seed']}")
    return table


def _fid(real_features: np.ndarray, fake_features: np.ndarray, comparable: bool, report_warnings: list) -> dict:
    from prdit.evaluation.frechet import fid_from_features, small_sample_warning

    value = fid_from_features(real_features, fake_features)
    entry = {"value": value, "value_x1e3": value * 1e3, "n_real": len(real_features), "n_fake": len(fake_features),
             "feature_dim": int(real_features.shape[1]), "comparable_with_published": comparable}
    note = small_sample_warning(len(real_features), len(fake_features), real_features.shape[1])
    if note is not None:
        entry["warning"] = note
        report_warnings.append(note)
        warnings.warn(note, stacklevel=3)
    return entry


def _volume_set(source: VolumeInput, units: str, config: EvaluationConfig, name: str) -> VolumeSet:
    if isinstance(source, VolumeSet):
        return source
    return VolumeSet(source, units=units, normalization=config.normalization, resize=config.resize,
                     memory_budget_gib=config.memory_budget_gib, name=name)
