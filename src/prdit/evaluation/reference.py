"""Reference statistics of a real set, computed once and reused (``prdit evaluate --real-stats``).

A ``.npz`` file holds the real features ``[N, F]``, their mean ``[F]`` and covariance ``[F, F]``
(float64), and a JSON header naming the feature network (its weights' SHA-256), the feature
version, the compared size, and the real set: its content hash, its units and, for HU, the
normalisation that mapped it to the model range. Loading refuses a file made with another
network, another feature version, other units or another normalisation, so a 1,000-sample
evaluation can skip the real side without ever mixing features of two networks or two mappings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prdit.data.normalization import Normalization
from prdit.errors import DataError

STATS_FORMAT = "prdit-reference-stats"


@dataclass
class ReferenceStats:
    """Real-set features and what they were computed with."""

    features: np.ndarray
    network: dict
    input_size: list[int]
    real: dict  # VolumeSet.describe() of the real set: content hash, units, normalisation
    features_version: int


def save_reference_stats(path: str | Path, stats: ReferenceStats) -> Path:
    """Write ``stats`` atomically (a crash never leaves a half-written file behind)."""
    from prdit.evaluation.frechet import gaussian_fit

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    mean, cov = gaussian_fit(stats.features)
    header = {"format": STATS_FORMAT, "network": stats.network, "input_size": stats.input_size,
              "real": stats.real, "features_version": stats.features_version}
    partial = path.with_name(f".{path.name}.partial.npz")
    np.savez(partial, features=stats.features.astype(np.float32), mean=mean, covariance=cov,
             header=np.array(json.dumps(header)))
    os.replace(partial, path)
    return path


def load_reference_stats(path: str | Path, network_identity: dict, features_version: int, real_units: str,
                         normalization: Normalization) -> ReferenceStats:
    """Read a stats file made with the same feature network (``network_identity``: name and weights digest)
    from real volumes in ``real_units`` (``"auto"``: any) mapped to the model range by ``normalization``."""
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive["header"]))
            features = archive["features"].astype(np.float64)
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise DataError(f"{path}: not a readable reference-statistics file ({err})") from err
    if header.get("format") != STATS_FORMAT:
        raise DataError(f"{path}: not a prdit reference-statistics file")
    stored = {k: header["network"].get(k) for k in network_identity}
    if stored != network_identity:
        raise DataError(f"{path}: made with feature network {stored}, not {network_identity}; compute the "
                        "statistics again with this network (a new --real-stats path and --real)")
    if header.get("features_version") != features_version:
        raise DataError(f"{path}: made by feature version {header.get('features_version')}, this prdit computes "
                        f"version {features_version}; compute the statistics again")
    _check_real_mapping(path, header["real"], real_units, normalization)
    return ReferenceStats(features=features, network=header["network"], input_size=header["input_size"],
                          real=header["real"], features_version=header["features_version"])


def _check_real_mapping(path: Path, real: dict, units: str, normalization: Normalization) -> None:
    """Refuse statistics of real volumes in other units, or in HU normalised another way."""
    again = "or compute the statistics again (a new --real-stats path and --real)"
    stored_units = real.get("units")
    if units != "auto" and stored_units != units:
        raise DataError(f"{path}: made from real volumes in '{stored_units}' units, this evaluation reads them as "
                        f"'{units}'; give --real-units {stored_units}, {again}")
    if stored_units != "hu":
        return
    if real.get("normalization") is None:
        raise DataError(f"{path}: does not record how its real HU volumes were normalised (made by an earlier "
                        f"prdit); compute the statistics again (a new --real-stats path and --real)")
    if real["normalization"] != normalization.to_dict():
        raise DataError(f"{path}: made from real HU volumes normalised with {real['normalization']}, this "
                        f"evaluation normalises with {normalization.to_dict()}; give the --model (or "
                        f"--normalization/--hu-min/--hu-max/--quantile) the statistics were made with, {again}")
