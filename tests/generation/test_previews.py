import numpy as np
import pytest
from PIL import Image

from prdit.errors import ConfigError
from prdit.generation.previews import save_grid, save_preview
from prdit.visualization import window_range


def test_windows():
    assert window_range("lung", (-1000, 1000)) == (-1350.0, 150.0)
    assert window_range("mediastinal", (-1000, 1000)) == (-160.0, 240.0)
    assert window_range("full", (-1024, 3071)) == (-1024.0, 3071.0)
    with pytest.raises(ConfigError, match="unknown CT window 'brain'"):
        window_range("brain", (-1000, 1000))


def test_previews_of_non_cubic_volumes_tile_into_a_grid(tmp_path):
    hu = np.linspace(-1000, 1000, 8 * 12 * 16, dtype=np.float32).reshape(8, 12, 16)
    paths = [save_preview(tmp_path / f"p{i}.png", hu + i, (1.0, 1.0, 2.0), (-1350, 150), f"volume {i}")
             for i in range(5)]
    with Image.open(paths[0]) as first:
        width, height = first.size
    grid = save_grid(tmp_path / "grid.png", paths)
    with Image.open(grid) as image:
        cols = round(np.sqrt(5 * height / width))
        assert image.size == (cols * width, -(-5 // cols) * height)
    with pytest.raises(ConfigError, match="no previews"):
        save_grid(tmp_path / "empty.png", [])
