"""Each benchmark script runs end to end with its tiny ``--smoke`` configuration on CPU and writes
its JSON; one is also started the way a user starts it (``python benchmarks/<name>.py``)."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# One thread keeps the tiny workloads fast on a busy machine.
SMOKE = ["--smoke", "--device", "cpu", "--warmup", "1", "--repeats", "1", "--threads", "1"]
SCRIPTS = ["forward_memory", "train_step", "sampling", "attention_scaling", "efficiency", "sampler_quality",
           "gpu_readiness", "batched_sampling", "solver_order",
           "inverse_problems"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_runs_with_the_smoke_configuration(name, tmp_path, capsys):
    script = importlib.import_module(f"benchmarks.{name}")
    out = tmp_path / f"{name}.json"
    # forward_memory measures in a fresh process as by default; the others stay in this one to keep the test short
    script.main(SMOKE + ["--json", str(out)] + ([] if name == "forward_memory" else ["--same-process"]))
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["benchmark"] == name
    assert result["machine"]["device"] == "cpu" and result["machine"]["torch"]
    rows = result["table"]["rows"]
    assert rows and all(len(row) == len(result["table"]["columns"]) for row in rows)
    assert "CPU:" in printed and result["table"]["columns"][0] in printed
    assert not any("failed" in cell for row in rows for cell in row)
    if name == "forward_memory":
        for r in result["results"]:
            assert r["median_s"] > 0 and r["runs"] == 1 and r["peak_bytes"] >= 0 and r["weights_bytes"] > 0


def test_attention_scaling_skips_what_would_not_fit(monkeypatch, tmp_path):
    script = importlib.import_module("benchmarks.attention_scaling")
    monkeypatch.setattr(script, "available_memory", lambda device: 1)
    out = tmp_path / "att.json"
    script.main(SMOKE + ["--json", str(out), "--same-process"])
    results = json.loads(out.read_text())["results"]
    assert results and all(r["status"] == "skipped" for r in results)
    assert "skipped (would not fit" in json.loads(out.read_text())["table"]["rows"][0][-1]


def test_attention_estimate_matches_the_n_squared_matrix():
    script = importlib.import_module("benchmarks.attention_scaling")
    sdpa = script.estimate_bytes(32768, 768, 12, 1, "sdpa", backward=False)
    explicit = script.estimate_bytes(32768, 768, 12, 1, "explicit", backward=False)
    assert explicit - sdpa == 2 * 12 * 32768**2 * 4  # two fp32 N×N copies, ~48 GiB each


def test_script_starts_from_the_command_line(tmp_path):
    out = tmp_path / "cli.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "efficiency.py"), *SMOKE, "--json", str(out)],
                   check=True, cwd=tmp_path, capture_output=True, timeout=120)
    assert json.loads(out.read_text())["benchmark"] == "efficiency"
