"""Training-free inverse problems (docs/method.md §15): measurements, guidance and reconstruction.

One file per concept: ``operators`` (the operator interface, trilinear downsampling, masks and
their makers, Gaussian blur, simulated measurements), ``projector`` (the cone-beam X-ray
projector and its geometry), ``metrics`` (PSNR, the reference's three-axis SSIM, and each task's
classical baseline), ``guidance`` (the guided predictor–corrector hook and the per-task
settings), ``tasks`` (each task's operator and measurement files), ``run`` and ``cli``
(``prdit reconstruct``). Names are imported on first use, so a command line can register its
commands without importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Operator": "prdit.inverse.operators", "Downsample": "prdit.inverse.operators",
    "Mask": "prdit.inverse.operators", "make_mask": "prdit.inverse.operators",
    "centre_cube_mask": "prdit.inverse.operators", "random_voxel_mask": "prdit.inverse.operators",
    "axial_slab_mask": "prdit.inverse.operators", "GaussianBlur": "prdit.inverse.operators",
    "simulate_measurement": "prdit.inverse.operators",
    "ConeBeamGeometry": "prdit.inverse.projector", "ConeBeamProjector": "prdit.inverse.projector",
    "view_angles": "prdit.inverse.projector", "model_to_density": "prdit.inverse.projector",
    "density_to_model": "prdit.inverse.projector",
    "psnr": "prdit.inverse.metrics", "ssim": "prdit.inverse.metrics",
    "classical_baseline": "prdit.inverse.metrics",
    "GuidanceSettings": "prdit.inverse.guidance", "TASK_DEFAULTS": "prdit.inverse.guidance",
    "MeasurementGuidance": "prdit.inverse.guidance", "task_settings": "prdit.inverse.guidance",
    "task_operator": "prdit.inverse.tasks",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'prdit.inverse' has no attribute {name!r}")
