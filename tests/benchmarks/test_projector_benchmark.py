"""The projector benchmark runs end to end with its tiny ``--smoke`` configuration and writes its JSON."""

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The script sets torch's thread count (``--threads 1``); put it back afterwards."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_projector_benchmark_runs_with_the_smoke_configuration(tmp_path, capsys):
    script = importlib.import_module("benchmarks.projector")
    out = tmp_path / "projector.json"
    script.main(["--smoke", "--device", "cpu", "--warmup", "1", "--repeats", "1", "--threads", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["benchmark"] == "projector" and "CPU:" in capsys.readouterr().out
    siddon, marching = result["results"]
    assert siddon["method"] == "Siddon" and marching["method"].startswith("ray marching")
    for entry in (siddon, marching):
        assert entry["forward"]["median_s"] > 0 and entry["backward"]["median_s"] > 0
    assert siddon["cube_max_error_mm"] < 1e-3  # exact for a voxel-aligned cube, up to float32 rounding
