"""A model folder's config.json records where it came from without the training machine's folders."""

import json

from prdit.data.io import file_sha256
from prdit.training.export import export_run
from prdit.training.trainer import train


def strings(value):
    """Every string in a parsed JSON value."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_exported_config_records_paths_relative_and_an_outside_model_by_its_digest(tiny_config, tmp_path,
                                                                                    monkeypatch):
    """The runs, the phantom lists and the stage-1 model are given as absolute paths (as the benchmarks give
    them); inside the working directory they are recorded relative to it, outside it relative with ``..``, and a
    model folder outside it by the SHA-256 of its weights."""
    short = ("train.steps=2", "log.val_every=0")
    stage1 = train(tiny_config("s1", "PRDiT-T/6/0", 16, *short), progress=False)
    source = export_run(stage1.run_dir, tmp_path / "stage1-model")
    stage2 = train(tiny_config("s2", "PRDiT-T/6/2", 16, *short, f"train.init_from={source}"), progress=False)

    monkeypatch.chdir(tmp_path)
    inside = json.loads((export_run(stage2.run_dir, tmp_path / "inside") / "config.json").read_text())["training"]
    assert inside["run"] == "runs/s2" and inside["config"]["run"]["root"] == "runs"
    assert inside["config"]["train"]["init_from"] == "stage1-model"

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    outside = json.loads((export_run(stage2.run_dir, "model") / "config.json").read_text())["training"]
    assert outside["run"] == "../runs/s2" and outside["config"]["run"]["root"] == "../runs"
    assert outside["config"]["train"]["init_from"] == f"sha256:{file_sha256(source / 'model.safetensors')}"
    assert outside["config"]["data"]["train"].startswith("../") and outside["config"]["data"]["train"].endswith(
        "/train.txt")
    for record in (inside, outside):
        absolute = [s for s in strings(record) if s.startswith("/")]
        assert not absolute, absolute
