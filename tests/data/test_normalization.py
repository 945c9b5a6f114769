"""Quantile normalisation as the reference computes it for each data set."""

import numpy as np
import pytest

from prdit.data.normalization import Normalization
from prdit.errors import ConfigError


def _scan() -> np.ndarray:
    """Soft tissue at 0 HU, 10 % bone at 2000 HU, some air."""
    hu = np.zeros((10, 10, 10), np.float32)
    hu[:1] = 2000.0
    hu[-1] = -1000.0
    return hu


def test_rad_chestct_clips_to_1000_before_the_quantile():
    rad = Normalization(kind="quantile", quantile=0.995, quantile_clip_hu=1000.0)
    x = rad.to_model(_scan())
    # Clipped first, the 0.995 quantile is 1000 HU: [-1000, 1000] -> [-1, 1], so 0 HU -> 0.
    assert x[5, 5, 5] == pytest.approx(0.0)
    assert x.max() == pytest.approx(1.0) and x.min() == pytest.approx(-1.0)


def test_lidc_takes_the_quantile_of_the_unclipped_scan():
    lidc = Normalization(kind="quantile", quantile=0.999)
    x = lidc.to_model(_scan())
    # The 0.999 quantile is 2000 HU: [-1000, 2000] -> [-1, 1], so 0 HU -> -1/3.
    assert x[5, 5, 5] == pytest.approx(-1.0 / 3.0)


def test_the_clip_must_lie_above_the_lower_end():
    with pytest.raises(ConfigError, match="quantile_clip_hu"):
        Normalization(kind="quantile", quantile_clip_hu=-1000.0)
    assert Normalization.from_dict(Normalization().to_dict()) == Normalization()
