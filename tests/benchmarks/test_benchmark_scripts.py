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
           "inverse_problems", "feature_separation", "evaluation_speed", "torchrun_scaling", "distillation",
           "conditioning_cost"]
# Extra arguments: the separation smoke run leaves out the pretrained weights (a test of their own loads them).
EXTRA = {"feature_separation": ["--networks", "ct-resnet152-random,medicalnet-random"]}


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_runs_with_the_smoke_configuration(name, tmp_path, capsys):
    script = importlib.import_module(f"benchmarks.{name}")
    out = tmp_path / f"{name}.json"
    # forward_memory measures in a fresh process as by default; the others stay in this one to keep the test short
    script.main(SMOKE + ["--json", str(out)] + ([] if name == "forward_memory" else ["--same-process"])
                + EXTRA.get(name, []))
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


def test_reference_model_trains_both_stages_exports_and_does_not_train_again(tmp_path):
    script = importlib.import_module("benchmarks.reference_model")
    args = ["--out", str(tmp_path), "--phantoms", "8", "--stage1-steps", "2", "--stage2-steps", "2"]
    script.main(args)
    record = json.loads((tmp_path / "training.json").read_text())
    stages = record["stages"]
    assert [stages[name]["steps"] for name in script.STAGES] == [2, 2]
    assert all(stages[name]["final_loss"] > 0 for name in script.STAGES)
    from prdit.data.dataset import list_volumes

    assert (tmp_path / "prdit" / "model.safetensors").is_file() and len(list_volumes(tmp_path / "data" / "val.txt")) == 2
    weights = (tmp_path / "prdit" / "model.safetensors").read_bytes()
    script.main(args)  # finished: nothing is trained again, the export is the same
    assert json.loads((tmp_path / "training.json").read_text())["stages"][script.STAGES[1]]["steps"] == 2
    assert (tmp_path / "prdit" / "model.safetensors").read_bytes() == weights


def test_reference_model_config_overrides_reach_their_stages_and_the_record(tmp_path):
    script = importlib.import_module("benchmarks.reference_model")
    script.main(["--out", str(tmp_path), "--phantoms", "6", "--val-count", "1", "--stage1-steps", "1",
                 "--stage2-steps", "1", "--set", "data.flip=false", "--stage2-set", "optim.ema_decay=0.999"])
    stages = json.loads((tmp_path / "training.json").read_text())["stages"]
    assert stages[script.STAGES[0]]["overrides"] == ["data.flip=false"]
    assert stages[script.STAGES[1]]["overrides"] == ["data.flip=false", "optim.ema_decay=0.999"]
    trained = json.loads((tmp_path / "prdit" / "config.json").read_text())["training"]["config"]
    assert trained["data"]["flip"] is False and trained["optim"]["ema_decay"] == 0.999
    from prdit.data.dataset import list_volumes

    assert len(list_volumes(tmp_path / "data" / "val.txt")) == 1
    assert len(list_volumes(tmp_path / "data" / "train.txt")) == 5


def test_reference_model_data_only_writes_phantoms_and_split(tmp_path):
    script = importlib.import_module("benchmarks.reference_model")
    script.main(["--out", str(tmp_path), "--phantoms", "8", "--data-only"])
    assert len(list((tmp_path / "data").glob("phantom_*.nii.gz"))) == 8 and (tmp_path / "data" / "val.txt").is_file()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "prdit").exists()


def test_reference_model_data_only_adds_label_maps_to_the_same_phantoms(tmp_path):
    from prdit.data.phantoms import write_phantoms

    write_phantoms(4, 16, tmp_path / "data", seed=0)  # a folder written before the maps were
    volumes = {p.name: p.read_bytes() for p in (tmp_path / "data").glob("phantom_*.nii.gz")}
    script = importlib.import_module("benchmarks.reference_model")
    script.main(["--out", str(tmp_path), "--phantoms", "4", "--size", "16", "--data-only"])
    labels = tmp_path / "data" / "labels"
    assert sorted(p.name for p in labels.glob("phantom_*.nii.gz")) == sorted(volumes)
    assert (labels / "labels.json").is_file()
    assert {p.name: p.read_bytes() for p in (tmp_path / "data").glob("phantom_*.nii.gz")} == volumes


def test_conditional_reference_pairs_each_unconditional_sample_with_the_map_of_its_index(tmp_path):
    script = importlib.import_module("benchmarks.conditional_reference")
    samples, maps = tmp_path / "samples", tmp_path / "maps"
    samples.mkdir(), maps.mkdir()
    for i in (0, 1, 2):
        (samples / f"sample_{i:05d}.nii.gz").write_bytes(b"volume")
        (maps / f"phantom_{i:05d}.nii.gz").write_bytes(f"map {i}".encode())
    (maps / "labels.json").write_text("{}")
    paired = script.paired_maps(samples, maps, tmp_path / "paired")
    assert [(paired / f"sample_{i:05d}.nii.gz").read_bytes() for i in (0, 1, 2)] == [b"map 0", b"map 1", b"map 2"]
    assert (paired / "labels.json").read_text() == "{}"
    (maps / "phantom_00003.nii.gz").write_bytes(b"map 3")
    with pytest.raises(ValueError):  # a map without its sample: the two sets were not drawn together
        script.paired_maps(samples, maps, tmp_path / "unpaired")
