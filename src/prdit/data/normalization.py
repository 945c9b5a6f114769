"""Intensity normalisation between Hounsfield units and the model range [-1, 1].

``window`` (default) is a fixed HU window, exactly invertible, so generated volumes map back
to HU. ``quantile`` is the paper's per-volume normalisation (clip below at ``hu_min``, above at
the volume's ``quantile``, min-max, 2x-1); its inverse uses the nominal window
``[hu_min, hu_max]`` since the per-volume upper clip is not known for a generated volume.
``quantile_clip_hu`` clips HU from above *before* the quantile is taken: the reference's
RAD-ChestCT preprocessing clips to [-1000, 1000] and then takes the 0.995 quantile, while its
LIDC preprocessing takes the 0.999 quantile of the unclipped scan (``None``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from prdit.errors import ConfigError

KINDS = ("window", "quantile")


@dataclass(frozen=True)
class Normalization:
    """How HU map to the model range; stored in configs and model folders."""

    kind: str = "window"
    hu_min: float = -1000.0
    hu_max: float = 1000.0
    quantile: float = 0.999
    quantile_clip_hu: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown normalisation '{self.kind}'; choose one of {', '.join(KINDS)}")
        if not self.hu_max > self.hu_min:
            raise ConfigError(f"normalisation window needs hu_max > hu_min, got [{self.hu_min}, {self.hu_max}]")
        if not 0.0 < self.quantile <= 1.0:
            raise ConfigError(f"normalisation quantile must be in (0, 1], got {self.quantile}")
        if self.quantile_clip_hu is not None and not self.quantile_clip_hu > self.hu_min:
            raise ConfigError(f"quantile_clip_hu must exceed hu_min ({self.hu_min}), got {self.quantile_clip_hu}")

    def to_model(self, hu: np.ndarray) -> np.ndarray:
        """HU array -> float32 array in [-1, 1]."""
        hu = np.asarray(hu, dtype=np.float32)
        lo = self.hu_min
        hi = self.hu_max
        if self.kind == "quantile":
            clipped = np.clip(hu, lo, self.quantile_clip_hu) if self.quantile_clip_hu is not None else np.maximum(hu, lo)
            hi = float(np.quantile(clipped, self.quantile))
            hi = max(hi, lo + 1.0)
        unit = (np.clip(hu, lo, hi) - lo) / (hi - lo)
        return (2.0 * unit - 1.0).astype(np.float32)

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Model-range array -> HU (clipped to the window), float32."""
        unit = (np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0) + 1.0) / 2.0
        return (unit * (self.hu_max - self.hu_min) + self.hu_min).astype(np.float32)

    def to_dict(self) -> dict:
        """Plain dict for JSON/YAML."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Normalization":
        """Inverse of :meth:`to_dict`."""
        return cls(**values)
