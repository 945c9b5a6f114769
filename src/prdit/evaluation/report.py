"""The evaluation suite as one call: ``evaluate(real, fake, config)`` -> a JSON-ready report.

Used by ``prdit evaluate``, the demo and the benchmarks. The report carries, besides the
numbers, everything needed to judge and reproduce them: sample counts, input size, the
feature network and the SHA-256 of its weights, the MS-SSIM settings, the critic's split,
steps and seed, and warnings (small-N FID bias, a random feature network). Every set-level
metric but FID carries an interval (statistics.py; FID's bias depends on N, so FID∞ beside it
carries FID's) unless ``config.bootstrap.resamples`` is 0.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prdit import __version__
from prdit.distributed import current, on_main
from prdit.errors import DataError
from prdit.evaluation import statistics
from prdit.evaluation.config import FEATURE_METRICS, EvaluationConfig
from prdit.evaluation.volumes import VolumeSet, VolumeSource

VolumeInput = Sequence[VolumeSource] | np.ndarray | str | Path | VolumeSet


def evaluate(real: VolumeInput | None, fake: VolumeInput, config: EvaluationConfig,
             train: VolumeInput | None = None) -> dict:
    """Compute the configured metrics of generated volumes ``fake`` against ``real``; returns the report dict.

    ``real``/``fake``: a directory, a text list of files, a list of paths or ``[D, H, W]``
    arrays, an ``[N, D, H, W]`` array, or a ``VolumeSet``. Real volumes stored larger than the
    generated ones are block-averaged to the generated size as training data are. With
    ``config.real_stats`` naming an existing file, FID and MMD use its real features and
    ``real`` may be None (then MS-SSIM is computed for the generated set only, and the
    Wasserstein estimate, which needs real volumes, is an error). ``train``, the training volumes
    (as ``real``), is what the memorisation check compares generated and real volumes with.
    """
    from prdit.device import resolve_device

    info = current()  # under torchrun the ranks share feature extraction and MS-SSIM pairs; rank 0 does the rest
    fake_set = _volume_set(fake, config.fake_units, config, "generated", "sampling")
    stats_file = Path(config.real_stats).expanduser() if config.real_stats else None
    # Rank 0's view of the file decides for every rank: a rank that alone saw it would skip the real set's
    # feature extraction, which the others share with it.
    reuse_stats = stats_file is not None and on_main(stats_file.is_file, info)
    if real is None and not reuse_stats:
        raise DataError("no real volumes: give the real set" + (f" (--real-stats {stats_file} does not exist yet; "
                        "it is written from the real set on the first run)" if stats_file else ""))
    if real is None and "wasserstein" in config.metrics:
        raise DataError("the Wasserstein estimate trains a critic on real volumes: give the real set, or leave "
                        "wasserstein out of the metrics")
    if real is None and "hu_wasserstein" in config.metrics:
        raise DataError("W(HU) compares the voxel values of real and generated volumes: give the real set, or leave "
                        "hu_wasserstein out of the metrics")
    if "memorisation" in config.metrics and (train is None or real is None):
        raise DataError("the memorisation check compares generated volumes with the training volumes (--train), "
                        "and held-out real volumes (--real) with the same training volumes as its reference: give both")
    real_set = None if real is None else _volume_set(real, config.real_units, config, "real", "training",
                                                     size=None if config.resize else fake_set.shape)
    if real_set is not None and real_set.shape != fake_set.shape:
        raise DataError(f"real volumes are {real_set.shape} but generated volumes are {fake_set.shape}; metrics "
                        "compare volumes at one size")
    device = resolve_device(config.device)
    report: dict = {"prdit_version": __version__, "metrics": list(config.metrics),
                    "samples": {"real": len(real_set) if real_set is not None else None, "fake": len(fake_set)},
                    "input_size": list(fake_set.shape), "fake": fake_set.describe(),
                    "real": real_set.describe() if real_set is not None else None,
                    "device": str(device), "warnings": [], "timings_s": {}}
    if "hu" in (fake_set.units, real_set.units if real_set is not None else None):
        report["normalization"] = config.normalization.to_dict()

    network = real_features = fake_features = None
    if any(m in FEATURE_METRICS for m in config.metrics) or ("memorisation" in config.metrics
                                                               and config.features_available):
        start = time.perf_counter()
        network, real_features, fake_features = _features(real_set, fake_set, stats_file, reuse_stats, config,
                                                          device, report)
        report["samples"]["real"] = len(real_features)
        report["timings_s"]["features"] = time.perf_counter() - start
        if info.is_main:
            _feature_metrics(report, network, real_features, fake_features, config)

    if "msssim" in config.metrics:
        start = time.perf_counter()
        real_counts, fake_counts = statistics.paired_counts(len(real_set) if real_set is not None else 0,
                                                            len(fake_set), config.bootstrap)
        report["msssim"] = {"fake": _msssim(fake_set, fake_counts, config, device)}
        if real_set is not None:
            report["msssim"]["real"] = _msssim(real_set, real_counts, config, device)
        report["timings_s"]["msssim"] = time.perf_counter() - start

    if "hu_wasserstein" in config.metrics and info.is_main:
        start = time.perf_counter()
        report["hu_wasserstein"] = _hu_wasserstein(real_set, fake_set, config)
        report["timings_s"]["hu_wasserstein"] = time.perf_counter() - start

    if "adherence" in config.metrics and info.is_main:
        from prdit.evaluation.adherence import adherence

        start = time.perf_counter()
        report["adherence"] = adherence(real_set, fake_set, config, device, config.progress)
        report["timings_s"]["adherence"] = time.perf_counter() - start

    if "wasserstein" in config.metrics and info.is_main:
        from prdit.evaluation.wasserstein import wasserstein_estimate

        start = time.perf_counter()
        report["wasserstein"] = wasserstein_estimate(real_set, fake_set, config.critic, device, config.progress)
        report["timings_s"]["wasserstein"] = time.perf_counter() - start

    if "memorisation" in config.metrics:
        start = time.perf_counter()
        entry = _memorisation(train, real_set, fake_set, config, device, network, real_features, fake_features)
    if "memorisation" in config.metrics and info.is_main:
        report["memorisation"] = entry
        report["samples"]["training"] = report["memorisation"]["training_volumes"]
        report["warnings"] += report["memorisation"]["warnings"]
        report["timings_s"]["memorisation"] = time.perf_counter() - start

    if not info.is_main:
        report["partial"] = f"rank {info.rank} of {info.world_size}: rank 0's report holds every metric"
        return report
    if config.bootstrap.resamples:
        report["bootstrap"] = {"resamples": config.bootstrap.resamples, "seed": config.bootstrap.seed,
                               "level": config.bootstrap.level, "fid_blocks": config.bootstrap.fid_blocks,
                               "subsample_fraction": config.bootstrap.subsample_fraction,
                               "method": {m: statistics.METHODS[m] for m in config.metrics if m in statistics.METHODS}}
    report["protocol"] = _protocol(report, real_set, fake_set, config)
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
    from rich.markup import escape
    from rich.table import Table

    n_real, n_fake = report["samples"]["real"], report["samples"]["fake"]
    if report.get("reference_stats"):
        n_real = f"{n_real} (from {report['reference_stats']['path']})"
    table = Table(title=f"PRDiT evaluation: {n_fake} generated vs {n_real} real, "
                        f"{'x'.join(map(str, report['input_size']))}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("published way")
    table.add_column("notes")
    network = report.get("feature_network", {})
    features_note = network.get("label", "MedicalNet ResNet-50")
    if network and not network["comparable_with_published"]:
        features_note += ": NOT comparable with published numbers"
    if network.get("weights_sha256") and network.get("kind") == "ct-resnet152":
        features_note += f" (weights sha256 {network['weights_sha256'][:12]})"
    if "fid" in report:
        fid = report["fid"]
        note = f"{features_note}; raw {fid['value']:.6g}"
        if "infinity" in fid:
            note += f"; no interval: {statistics.FID_NOTE}"
        table.add_row("FID x10^3", format(fid["value"] * 1e3, ".4f"), _published(report, "fid"), note)
        if "infinity" in fid:
            infinity = fid["infinity"]
            if infinity["value"] is None:
                table.add_row("FID-inf x10^3", "-", "no", infinity["note"])
            else:
                table.add_row("FID-inf x10^3", _with_interval(infinity["value"], infinity, ".4f", 1e3), "no",
                              f"FID extrapolated to N = infinity by the jackknife over {infinity['blocks']} blocks a "
                              "set; compares across N; rank by it where the intervals separate")
    if "mmd" in report:
        mmd = report["mmd"]
        if "skipped" in mmd:
            table.add_row("MMD", "-", _published(report, "mmd"), mmd["skipped"])
        else:
            table.add_row("MMD", _with_interval(mmd["value"], mmd.get("interval"), ".4f"), _published(report, "mmd"),
                          f"{features_note}; biased V-statistic, all-pairs median (published)")
        unbiased = mmd["unbiased"]
        table.add_row("MMD (unbiased)", _with_interval(unbiased["value"], unbiased.get("interval"), ".4f"), "no",
                      "U-statistic, distinct-pair median; not the published estimator")
    if "kid" in report:
        kid = report["kid"]
        table.add_row("KID x10^3", _with_interval(kid["value"], kid.get("interval"), ".4f", 1e3), "no",
                      f"± {kid['std'] * 1e3:.2g} (std over {kid['subsets']} subsets of {kid['subset_size']}); "
                      "polynomial kernel, unbiased (clean-fid / torch-fidelity convention)")
    if "prdc" in report:
        prdc = report["prdc"]
        if "skipped" in prdc:
            table.add_row("precision/recall", "-", "no", prdc["skipped"])
        for name in ("precision", "recall", "density", "coverage"):
            if name in prdc:
                pair = name in ("precision", "recall")
                source = (f"k = {prdc['k_precision_recall']}, Kynkäänniemi et al. 2019" if pair
                          else f"k = {prdc['k_density_coverage']}, Naeem et al. 2020")
                table.add_row(name, _with_interval(prdc[name], prdc.get("intervals", {}).get(name), ".4f"), "no",
                              f"{features_note}; {source} (PRDC reference code)")
    if "msssim" in report:
        for which, label in (("fake", "generated"), ("real", "real")):
            if which not in report["msssim"]:
                continue
            entry = report["msssim"][which]
            setting = "published setting" if entry["published_setting"] else "NOT the published setting"
            pairs = (f"all {entry['pairs']} pairs" if entry["all_pairs"] else
                     f"sampled estimate: {entry['pairs']} of {entry['total_pairs']} pairs, Monte-Carlo error "
                     f"± {entry['monte_carlo_error']:.2g}")
            published = entry["published_setting"] and entry["all_pairs"]
            table.add_row(f"MS-SSIM ({label})", _with_interval(entry["mean"], entry.get("interval"), ".4f"),
                          "yes" if published else "no",
                          f"{pairs}, kernel {entry['kernel_size']}, {entry['scales']} scales: {setting}")
    if "hu_wasserstein" in report:
        entry = report["hu_wasserstein"]
        table.add_row("W(HU)", _with_interval(entry["value"], entry.get("interval"), ".2f"), "no",
                      f"1D Wasserstein of the voxel HU distributions, window {entry['window_hu'][0]:g} to "
                      f"{entry['window_hu'][1]:g} HU, 1-HU bins")
    if "memorisation" in report:
        entry = report["memorisation"]
        correlation, top = entry["correlation"], entry["top_pairs"][0]
        familywise = correlation["familywise"]
        note = (f"{correlation['flagged']} of {entry['generated_volumes']} above correlation "
                f"{correlation['threshold']:.4f} ({correlation['threshold_from']}, shifts up to "
                f"{correlation['shift_voxels']} voxel)")
        if entry["any_false_flag_probability"] is not None:
            note += (f", a rule that flags at least one of {entry['generated_volumes']} fresh volumes with probability "
                     f"{entry['any_false_flag_probability']:.0%}")
        if "skipped" not in familywise:
            note += (f"; {familywise['flagged']} above {familywise['threshold']:.4f}, the threshold any fresh volume "
                     f"crosses with probability at most {familywise['rate']:.0%}")
        note += (f"; most similar: {Path(top['generated']).name} ~ {Path(top['training']).name}, "
                 f"r = {top['correlation']:.4f}")
        if "flagged" in entry["features"]:
            note += f"; {entry['features']['flagged']} by feature distance"
        if "page" in entry:
            note += f"; pairs shown in {entry['page']}"
        table.add_row("memorisation", f"{entry['flagged_fraction']:.1%} flagged", "no", escape(note))
    if "adherence" in report:
        from prdit.evaluation.adherence import table_rows

        for row in table_rows(report["adherence"]):
            table.add_row(*row)
    if "wasserstein" in report:
        entry = report["wasserstein"]
        table.add_row("Wasserstein (critic)", f"{entry['value']:.4f}", _published(report, "wasserstein"),
                      f"± {entry['standard_error']:.2g} (s.e.); "
                      f"held out {entry['split']['real']['held_out']}+{entry['split']['fake']['held_out']}, "
                      f"{entry['steps']} steps, seed {entry['seed']}")
    return table


def _feature_metrics(report: dict, network, real_features: np.ndarray, fake_features: np.ndarray,
                     config: EvaluationConfig) -> None:
    """FID, MMD, KID and PRDC as configured, each with its bootstrap interval, into ``report``."""
    if "fid" in config.metrics:
        report["fid"] = _fid(real_features, fake_features, network.comparable, report["warnings"])
    if "mmd" in config.metrics:
        report["mmd"] = _mmd(real_features, fake_features, network.comparable, report["warnings"])
    if "kid" in config.metrics:
        from prdit.evaluation.kid import kid

        report["kid"] = {**kid(real_features, fake_features, config.kid), "comparable_with_published": False}
    if "prdc" in config.metrics:
        report["prdc"] = _prdc(real_features, fake_features, config, report["warnings"])
    if config.bootstrap.resamples and any(m in FEATURE_METRICS for m in config.metrics):
        start = time.perf_counter()
        _feature_intervals(report, real_features, fake_features, config)
        report["timings_s"]["bootstrap_features"] = time.perf_counter() - start


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


def _with_interval(value: float, interval: dict | None, spec: str, scale: float = 1.0) -> str:
    """``value [low, high]`` (the bootstrap interval), or the value alone; escaped for rich's markup."""
    from rich.markup import escape

    text = format(value * scale, spec)
    if interval is None:
        return text
    if interval["low"] is None:
        return f"{text} (no interval: too few samples)"
    return escape(f"{text} [{format(interval['low'] * scale, spec)}, {format(interval['high'] * scale, spec)}]")


def _prdc(real_features: np.ndarray, fake_features: np.ndarray, config: EvaluationConfig,
          report_warnings: list) -> dict:
    """Precision/recall/density/coverage, or why they were left out (too few samples for k neighbours)."""
    from prdit.evaluation.prdc import prdc

    try:
        return prdc(real_features, fake_features, config.prdc)
    except DataError as err:
        report_warnings.append(f"precision/recall/density/coverage left out: {err}")
        return {"skipped": str(err), "k_precision_recall": config.prdc.k_precision_recall,
                "k_density_coverage": config.prdc.k_density_coverage}


def _feature_intervals(report: dict, real_features: np.ndarray, fake_features: np.ndarray,
                       config: EvaluationConfig) -> None:
    """Add the bootstrap interval of every feature metric in ``report`` to its entry."""
    boot = config.bootstrap
    counts = statistics.paired_counts(len(real_features), len(fake_features), boot)
    if "fid" in report:  # FID itself gets none: its bias depends on N (statistics.FID_NOTE)
        entry = statistics.fid_infinity(real_features, fake_features, boot)
        value = None if entry["value"] is None else entry["value"] * 1e3
        report["fid"]["infinity"] = {**entry, "value_x1e3": value, **_scaled(entry, 1e3)}
    if "mmd" in report:
        report["mmd"]["interval"] = statistics.interval(
            statistics.mmd_resamples(real_features, fake_features, *counts), boot, statistics.PAIRS_NOTE)
        report["mmd"]["unbiased"]["interval"] = statistics.interval(
            statistics.mmd_resamples(real_features, fake_features, *counts, unbiased=True), boot,
            statistics.PAIRS_NOTE)
    if "kid" in report:
        subsets = report["kid"]["subset_size"] < min(len(real_features), len(fake_features))
        entry = statistics.interval(statistics.kid_resamples(real_features, fake_features, *counts), boot,
                                    statistics.KID_NOTE if subsets else statistics.PAIRS_NOTE)
        report["kid"]["interval"] = {**entry, **_scaled(entry, 1e3)}
    if "prdc" in report and "skipped" not in report["prdc"]:
        values = statistics.prdc_subsamples(real_features, fake_features, boot, config.prdc)
        averaged = {"precision": len(fake_features), "density": len(fake_features), "recall": len(real_features),
                    "coverage": len(real_features)}  # the set each is a mean over
        report["prdc"]["intervals"] = {
            name: statistics.subsample_interval(report["prdc"][name], v, averaged[name], boot,
                                                (0.0, np.inf if name == "density" else 1.0))
            for name, v in values.items()}


def _scaled(interval: dict, scale: float) -> dict:
    """The bounds ×10³ (``low_x1e3``, ``high_x1e3``), as FID and KID are printed."""
    return {f"{k}_x1e3": None if interval[k] is None else interval[k] * scale for k in ("low", "high")}


def _msssim(volumes: VolumeSet, counts: np.ndarray, config: EvaluationConfig, device) -> dict:
    """MS-SSIM diversity of one set with its bootstrap interval from the volumes' resamples ``counts`` ``[B, N]``."""
    from prdit.evaluation.msssim import pairwise_msssim

    pairs, values, entry = pairwise_msssim(volumes, config.msssim, config.batch_size, device, config.progress)
    if config.bootstrap.resamples:
        entry["interval"] = statistics.interval(statistics.pair_mean_resamples(pairs, values, counts),
                                                config.bootstrap, statistics.PAIRS_NOTE)
    return entry


def _hu_wasserstein(real_set: VolumeSet, fake_set: VolumeSet, config: EvaluationConfig) -> dict:
    """W(HU) between the sets' voxel HU distributions, with its bootstrap interval (volumes resampled)."""
    from prdit.evaluation.hu_wasserstein import hu_histograms, hu_wasserstein

    real, fake = (hu_histograms(s, config.normalization, config.progress) for s in (real_set, fake_set))
    entry = hu_wasserstein(real, fake, config.normalization)
    if config.bootstrap.resamples:
        counts = statistics.paired_counts(len(real_set), len(fake_set), config.bootstrap)
        entry["interval"] = statistics.interval(
            statistics.hu_wasserstein_resamples(real, fake, *counts, entry["bin_width_hu"]), config.bootstrap)
    return entry


def _memorisation(train: VolumeInput, real_set: VolumeSet, fake_set: VolumeSet, config: EvaluationConfig, device,
                  network, real_features: np.ndarray | None, fake_features: np.ndarray | None) -> dict:
    """The memorisation check against the training volumes, on feature distances too where there is a network."""
    from prdit.evaluation.features import extract_features
    from prdit.evaluation.memorisation import memorisation_check

    train_set = _volume_set(train, config.real_units, config, "training", "training",
                            size=None if config.resize else fake_set.shape)
    features = None
    if network is not None:
        train_features = extract_features(train_set, network, config.batch_size, device, config.cache_dir,
                                          config.progress)
        features = {"fake": fake_features, "real": real_features, "train": train_features}
    if not current().is_main:
        return None  # the features were a shared step; the check itself is rank 0's
    return memorisation_check(fake_set, real_set, train_set, config.memorisation, device, config.progress, features,
                              config.normalization)


def _published(report: dict, metric: str) -> str:
    entry = report["protocol"][metric]
    return "yes" if entry["published"] else "no"


def _features(real_set: VolumeSet | None, fake_set: VolumeSet, stats_file: Path | None, reuse_stats: bool,
              config: EvaluationConfig, device, report: dict):
    """The feature network and both feature sets; real features from (or saved to) the stats file."""
    from prdit.evaluation.features import FEATURES_VERSION, extract_features, feature_network
    from prdit.evaluation.reference import (ReferenceStats, load_reference_stats, save_reference_stats)

    network = feature_network(config.weights, config.seed, config.features, config.normalization)
    report["feature_network"] = network.describe()
    if "warning" in report["feature_network"]:
        report["warnings"].append(report["feature_network"]["warning"])
    kwargs = dict(network=network, batch_size=config.batch_size, device=device, cache_dir=config.cache_dir,
                  progress=config.progress)
    identity = {"identity": network.cache_identity()}
    if reuse_stats:
        def load() -> ReferenceStats:
            units, normalization = ((real_set.units, real_set.normalization) if real_set is not None
                                    else (config.real_units, config.normalization))
            stats = load_reference_stats(stats_file, identity, FEATURES_VERSION, units, normalization)
            if list(stats.input_size) != list(fake_set.shape):
                raise DataError(f"{stats_file}: reference statistics of {stats.input_size} volumes, but the "
                                f"generated volumes are {list(fake_set.shape)}")
            if real_set is not None and stats.real["sha256"] != real_set.content_hash():
                raise DataError(f"{stats_file}: made from another real set than the one given (content hash "
                                "differs); leave out the real set to use the file, or give a new --real-stats path")
            return stats

        stats = on_main(load)  # the file rank 0 found, read there and sent to every rank
        real_features = stats.features
        report["reference_stats"] = {"path": str(stats_file), "real": stats.real, "reused": True}
    else:
        real_features = extract_features(real_set, **kwargs)
        if stats_file is not None and current().is_main:
            save_reference_stats(stats_file, ReferenceStats(
                features=real_features, network={**network.describe(), **identity},
                input_size=list(real_set.shape), real=real_set.describe(), features_version=FEATURES_VERSION))
            report["reference_stats"] = {"path": str(stats_file), "real": real_set.describe(), "reused": False}
    return network, real_features, extract_features(fake_set, **kwargs)


def _mmd(real_features: np.ndarray, fake_features: np.ndarray, comparable: bool, report_warnings: list) -> dict:
    """The published MMD (left out, with the reason, where its bandwidth is undefined) and the unbiased one."""
    from prdit.evaluation.mmd import mmd_squared, mmd_squared_biased

    skipped = {}
    try:
        squared, gamma = mmd_squared_biased(real_features, fake_features)
    except DataError as err:  # two real volumes: the published median bandwidth is 0
        squared, gamma, skipped = math.nan, None, {"skipped": str(err)}
        report_warnings.append(f"published MMD left out: {err}")
    unbiased, bandwidth = mmd_squared(real_features, fake_features)
    return {**skipped, "value": math.nan if skipped else float(np.sqrt(max(squared, 0.0))),
            "mmd_squared": squared, "gamma": gamma,
            "estimator": "RBF kernel, gamma = 1/(2 median squared distance over all ordered pairs of real "
                         "features, self-pairs included; torch's lower median), biased V-statistic, sqrt(max(MMD^2, 0)) (published)",
            "comparable_with_published": comparable,
            "unbiased": {"value": float(np.sqrt(max(unbiased, 0.0))), "mmd_squared": unbiased,
                         "bandwidth": bandwidth, "estimator": "RBF kernel, bandwidth = median distance between "
                         "distinct real features, unbiased U-statistic, sqrt(max(MMD^2, 0))"}}


def _protocol(report: dict, real_set: VolumeSet | None, fake_set: VolumeSet, config: EvaluationConfig) -> dict:
    """Per metric: computed the published way (docs/method.md §13), and if not, why."""
    sizing = []
    for volume_set in (real_set, fake_set):
        if volume_set is not None and volume_set.resize is not None:
            sizing.append(f"{volume_set.name} volumes resized with smoothing (the published protocol block-averages)")
    feature_reasons = list(sizing)
    network = report.get("feature_network")
    if network is not None and not network["comparable_with_published"]:
        feature_reasons.append(f"feature network is {network.get('label', 'not MedicalNet')}, not MedicalNet "
                               "ResNet-50 with its published weights")
    protocol = {}
    for metric in config.metrics:
        if metric in ("fid", "mmd"):
            reasons = feature_reasons
        elif metric in ("kid", "prdc", "hu_wasserstein", "memorisation"):
            reasons = [f"{metric} is not part of the published evaluation; prdit adds it (docs/method.md §17)"]
        elif metric == "adherence":
            reasons = ["adherence to label maps is not part of the published evaluation; prdit adds it "
                       "(docs/method.md §20)"]
        elif metric == "msssim":
            entry = report["msssim"]["fake"]
            reasons = sizing + ([] if entry["published_setting"] else
                                [f"kernel {entry['kernel_size']}, {entry['scales']} scales, sigma "
                                 f"{entry['kernel_sigma']} (published: kernel 3, 5 scales, sigma 1.5)"])
            if not entry["all_pairs"]:
                reasons.append(f"mean of {entry['pairs']} random pairs of the {entry['total_pairs']} (Monte-Carlo "
                               f"error {entry['monte_carlo_error']:.2g}); the published script averages all pairs")
        else:
            reasons = ["no published code exists for the critic-based Wasserstein estimate; this is prdit's own"]
        protocol[metric] = {"published": not reasons, "why_not": reasons}
    return protocol


def _volume_set(source: VolumeInput, units: str, config: EvaluationConfig, name: str, hu_mapping: str,
                size: tuple[int, int, int] | None = None) -> VolumeSet:
    if isinstance(source, VolumeSet):
        return source
    return VolumeSet(source, units=units, normalization=config.normalization, resize=config.resize,
                     memory_budget_gib=config.memory_budget_gib, name=name, size=size, hu_mapping=hu_mapping)
