"""Evaluation of generated volumes: 3D FID, MMD, KID and precision/recall/density/coverage on
MedicalNet features, MS-SSIM diversity, the HU-histogram Wasserstein distance W(HU), a WGAN-GP
estimate of the Wasserstein distance, and bootstrap intervals of the set-level metrics.

One file per concept: ``medicalnet`` (the feature network and its strict loader), ``volumes``
(the sets being compared), ``features`` (batched, cached extraction), ``frechet``, ``mmd``,
``kid``, ``prdc``, ``msssim``, ``hu_wasserstein``, ``wasserstein``, ``statistics`` (the
bootstrap), ``report`` (``evaluate()``, the table and the JSON), ``config`` (every default),
``cli`` (``prdit evaluate``). Names are imported on first use, so the
command line can register its command without importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate": "prdit.evaluation.report", "write_report": "prdit.evaluation.report",
    "report_table": "prdit.evaluation.report",
    "EvaluationConfig": "prdit.evaluation.config", "CriticConfig": "prdit.evaluation.config",
    "MSSSIMConfig": "prdit.evaluation.config",
    "VolumeSet": "prdit.evaluation.volumes",
    "MedicalNetResNet50": "prdit.evaluation.medicalnet", "load_medicalnet": "prdit.evaluation.medicalnet",
    "feature_network": "prdit.evaluation.features", "extract_features": "prdit.evaluation.features",
    "fid_from_features": "prdit.evaluation.frechet", "frechet_distance": "prdit.evaluation.frechet",
    "mmd": "prdit.evaluation.mmd", "msssim_diversity": "prdit.evaluation.msssim",
    "wasserstein_estimate": "prdit.evaluation.wasserstein",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'prdit.evaluation' has no attribute {name!r}")
