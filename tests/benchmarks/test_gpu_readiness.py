"""``benchmarks/gpu_readiness.py`` runs in parts, stops at its time budget and writes what it measured
after every measurement."""

import importlib
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

script = importlib.import_module("benchmarks.gpu_readiness")

SMOKE = ["--smoke", "--device", "cpu", "--warmup", "1", "--repeats", "1", "--threads", "1", "--same-process"]
TIMING = {"peak_bytes": 1, "memory_method": "test", "step_times_s": [0.01], "median_step_s": 0.01}


def fake_measurements(monkeypatch, calls: list[str], slow_s: float = 0.0) -> None:
    """Replace the three measurements by quick stand-ins that record their calls (the first lasts ``slow_s``)."""
    def numerics(*args):
        calls.append("numerics")
        time.sleep(slow_s)
        return {"fp32": {"losses": [1.0], "max_relative_loss_difference": 0.0, "relative_rms_sample_difference": 0.0}}

    def training(model, size, micro, checkpointing, compiled, *rest):
        calls.append("compile" if compiled else "train")
        return dict(TIMING)

    def sampling(*args):
        calls.append("sample")
        return dict(TIMING)

    monkeypatch.setattr(script, "measure_numerics", numerics)
    monkeypatch.setattr(script, "measure_training", training)
    monkeypatch.setattr(script, "measure_sampling", sampling)


@pytest.mark.parametrize("part", ["numerics", "train", "sample"])
def test_each_part_runs_only_its_measurements(part, monkeypatch, tmp_path):
    calls: list[str] = []
    fake_measurements(monkeypatch, calls)
    monkeypatch.setattr(script, "RESULTS_DIR", tmp_path)
    script.main(SMOKE + ["--part", part])
    assert calls and set(calls) == {part}
    results = json.loads((tmp_path / f"gpu_readiness-{part}-cpu.json").read_text())["results"]
    assert results["part"] == part and results["status"] == "complete"
    assert bool(results["numerics"]) == (part == "numerics")
    assert bool(results["training"]) == (part == "train") and bool(results["sampling"]) == (part == "sample")


def test_the_compile_part_on_cpu_is_listed_as_skipped(monkeypatch, tmp_path):
    calls: list[str] = []
    fake_measurements(monkeypatch, calls)
    out = tmp_path / "compile.json"
    script.main(SMOKE + ["--part", "compile", "--json", str(out)])
    results = json.loads(out.read_text())["results"]
    assert calls == [] and results["training"] == [] and any("compile" in line for line in results["skipped"])


def test_a_spent_time_budget_stops_the_run_and_keeps_what_was_measured(monkeypatch, tmp_path):
    calls: list[str] = []
    fake_measurements(monkeypatch, calls, slow_s=1.2)
    out = tmp_path / "partial.json"
    script.main(SMOKE + ["--time-budget", "1", "--json", str(out)])
    written = json.loads(out.read_text())
    results = written["results"]
    assert calls == ["numerics"]
    assert results["status"] == "partial" and results["numerics"]["fp32"]["losses"] == [1.0]
    assert results["training"] == [] and results["sampling"] == []
    skipped = results["skipped_for_time"]
    assert any(label.startswith("train") for label in skipped) and any(label.startswith("sample") for label in skipped)
    assert any(row[-1] == "skipped (time budget)" for row in written["table"]["rows"])


def test_the_file_holds_the_finished_measurements_while_the_next_one_runs(monkeypatch, tmp_path):
    out = tmp_path / "running.json"
    seen: list[dict] = []
    fake_measurements(monkeypatch, [])

    def sampling(*args):
        seen.append(json.loads(out.read_text())["results"])
        return dict(TIMING)

    monkeypatch.setattr(script, "measure_sampling", sampling)
    script.main(SMOKE + ["--json", str(out)])
    during = seen[0]
    assert during["status"] == "running" and during["running"].startswith("sample")
    # smoke training: micro-batches 2 and 4, without and with checkpointing
    assert during["numerics"] and len(during["training"]) == 4 and during["sampling"] == []
    assert json.loads(out.read_text())["results"]["status"] == "complete"
