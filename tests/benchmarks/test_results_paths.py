"""Benchmark results name paths relative to the repository and a model outside it by its weights' digest, never
by an absolute path of the machine that measured them."""

import argparse
import json
import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# A path from the file system's root: "/" at the start of a word ("../x" and "PRDiT-T/6/2" are not).
ABSOLUTE = re.compile(r"(?<![\w.~])/[\w.-]+")




def test_results_record_no_absolute_path(tmp_path, json_strings):
    from benchmarks.common import smoke_model_folder, write_results
    from prdit.data.io import file_sha256

    outside = smoke_model_folder(tmp_path / "student" / "prdit")
    digest = f"sha256:{file_sha256(outside / 'model.safetensors')}"
    inside = REPO / "benchmarks" / "reference_model" / "prdit"
    cache = tmp_path / "cache"
    args = argparse.Namespace(teacher=inside, student=outside, models=[inside, outside], cache=cache,
                              json=tmp_path / "result.json", num=4)
    notes = [f"teacher {inside} (PRDiT-T/6/2), student {outside.resolve()}", f"cache {cache}"]
    rows = [[f"{outside} pc@4", "1.0"]]
    results = [{"model": str(inside), "student": str(outside), "data": str(REPO / "benchmarks" / "x.txt")}]
    path = write_results("paths", torch.device("cpu"), args, "paths", notes, ["row", "s"], rows, results)

    record = json.loads(path.read_text())
    found = [(s, m) for s in json_strings(record) for m in ABSOLUTE.findall(s)]
    assert not found, found
    assert record["arguments"]["teacher"] == "benchmarks/reference_model/prdit"
    assert record["arguments"]["student"] == digest
    assert record["arguments"]["models"] == ["benchmarks/reference_model/prdit", digest]
    assert record["notes"][0] == f"teacher benchmarks/reference_model/prdit (PRDiT-T/6/2), student {digest}"
    assert record["table"]["rows"][0][0] == f"{digest} pc@4"
    assert record["results"][0] == {"model": "benchmarks/reference_model/prdit", "student": digest,
                                    "data": "benchmarks/x.txt"}


def test_stored_results_and_shipped_models_record_no_absolute_path(json_strings):
    files = [*(REPO / "benchmarks" / "results").rglob("*.json"),
             *(REPO / "benchmarks" / "reference_model").rglob("config.json"),
             *(REPO / "benchmarks" / "reference_model").rglob("training.json")]
    found = [(path.relative_to(REPO).as_posix(), s) for path in files
             for s in json_strings(json.loads(path.read_text(encoding="utf-8"))) if ABSOLUTE.search(s)]
    assert not found, found[:5]


def test_a_folder_whose_name_starts_with_two_dots_lies_inside(tmp_path):
    from prdit.files import is_inside

    assert is_inside(tmp_path / "..cache" / "model", tmp_path) and is_inside(tmp_path, tmp_path)
    assert not is_inside(tmp_path.parent / "other", tmp_path) and not is_inside(tmp_path / "..", tmp_path)
