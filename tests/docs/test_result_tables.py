"""The documentation's result tables are the JSON in benchmarks/results/, rendered: the committed tables equal a
fresh rendering, a changed result makes its tables stale, and every table names the file and the command it
comes from."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tools import render_tables
from tools.render_tables import RenderError, render_all, stale, with_interval, write

REPO = render_tables.REPO


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """A copy of benchmarks/results/ the tables are rendered from."""
    folder = tmp_path / "results"
    shutil.copytree(REPO / "benchmarks" / "results", folder)
    monkeypatch.setattr(render_tables, "RESULTS", folder)
    return folder


def test_the_committed_tables_are_those_of_the_results():
    problems = stale()
    assert not problems, "run `python tools/render_tables.py`:\n" + "\n".join(problems)


def test_a_changed_result_makes_exactly_its_tables_stale(results, tmp_path):
    root = tmp_path / "site"
    write(root)
    assert stale(root) == []
    record = json.loads((results / "sampler_quality-xs4-cpu.json").read_text())
    pc100 = next(row for row in record["results"] if row["label"] == "pc@100")
    pc100["metrics"]["kid_x1e3"]["value"] = 123.456
    (results / "sampler_quality-xs4-cpu.json").write_text(json.dumps(record))

    assert stale(root) == ["docs/tables/headline.md: out of date", "docs/tables/sampler-quality.md: out of date"]
    write(root)
    assert "123.5 [95.9, 126.3]" in (root / "docs" / "tables" / "headline.md").read_text()
    assert stale(root) == []


def test_marked_regions_are_rewritten_and_checked(tmp_path):
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    readme = "# prdit\n\nBefore.\n\n<!-- table: headline -->\nan old table\n<!-- /table -->\n\nAfter.\n"
    (root / "README.md").write_text(readme)
    (root / "docs" / "cost.md").write_text("Cost:\n\n<!-- table: efficiency -->\n<!-- /table -->\n")

    assert stale(root)[-2:] == ["README.md: marked table(s) out of date: headline",
                                "docs/cost.md: marked table(s) out of date: efficiency"]
    write(root)
    assert stale(root) == []
    text = (root / "README.md").read_text()
    headline = (root / "docs" / "tables" / "headline.md").read_text()
    assert text == f"# prdit\n\nBefore.\n\n<!-- table: headline -->\n\n{headline}\n<!-- /table -->\n\nAfter.\n"
    assert "an old table" not in text and "| PRDiT-XS/6/4 | PC, 100 steps (default) |" in text


def test_a_marker_naming_no_table_is_an_error(tmp_path):
    (tmp_path / "README.md").write_text("<!-- table: headlines -->\n<!-- /table -->\n")
    with pytest.raises(RenderError, match="headlines --> names no table"):
        stale(tmp_path)


def test_a_file_no_table_writes_is_reported(tmp_path):
    write(tmp_path)
    (tmp_path / "docs" / "tables" / "speed.md").write_text("| old |\n")
    assert stale(tmp_path) == ["docs/tables/speed.md: no table of this name (known: "
                               f"{', '.join(render_tables.TABLES)})"]


def test_numbers_are_written_the_documented_way():
    assert with_interval({"value": 111.0222, "interval": [95.8749, 126.276]}, 1) == "111.0 [95.9, 126.3]"
    assert with_interval({"value": -0.0018, "interval": [-0.0334, 0.02]}, 3) == "\u22120.002 [\u22120.033, 0.020]"
    assert with_interval({"value": 0.5518, "low": 0.5283, "high": 0.5697}, 3) == "0.552 [0.528, 0.570]"
    assert with_interval({"value": 0.113, "interval": None}, 2) == "0.11"
    tables = render_all()
    # FID in its own units with one decimal (the record keeps FID x 10^3: 43,343.8 for PC@100)
    assert "| `pc@100` (100) | 8.24 | 111.0 [95.9, 126.3] | 43.3 | 0.297 [0.281, 0.313] | 0.21 [0.11, 0.32] |" \
        in tables["sampler-quality"]
    for name, text in tables.items():
        cells = "\n".join(line for line in text.splitlines() if line.startswith("|"))
        assert not re.search(r"\d{3},\d{3}", cells), f"{name}: a six-digit number with a thousands separator"


def test_every_table_names_its_files_and_how_to_make_them():
    for name, text in render_all().items():
        sources = re.findall(r"^Source: `([^`]+)`(?: \([^)]*\))?; reproduce: (.+)$", text, re.M)
        assert sources, name
        for file, command in sources:
            assert (REPO / file).is_file(), (name, file)
            assert command.startswith("`python benchmarks/") or "commands" in command, (name, command)
        tables = len(re.findall(r"^\|---", text, re.M))
        assert len(re.findall(r"^\|---.*\n(?:\|.*\n)+\nSource: ", text, re.M)) == tables, name


def test_the_reproduce_command_gives_the_recorded_arguments():
    """The command is built from the record's arguments and parsed back by the script's own parser."""
    record = render_tables.load("sampler_quality-xs4-cpu.json")
    assert render_tables.script_command(record, "sampler_quality") == (
        "python benchmarks/sampler_quality.py --models benchmarks/reference_model/xs4/prdit --reference-steps 0 "
        "--rows pc@50,pc@100,heun@25,heun@25:x0,dpm++2m@25,dpm++2m@25:x0,euler@25,euler@25:x0 "
        "--json benchmarks/results/sampler_quality-xs4-cpu.json --threads 2")


def test_an_argument_no_command_line_can_give_is_an_error(monkeypatch):
    monkeypatch.setattr(render_tables, "FORMATTERS", {})  # --rows then reads 'pc:uniform:50:None,...'
    with pytest.raises(RenderError, match=r"sampler_quality-xs4-cpu.json: no command line of benchmarks/"
                                          r"sampler_quality.py .* --rows pc:uniform:50:None,.* does not parse"):
        render_tables.script_command(render_tables.load("sampler_quality-xs4-cpu.json"), "sampler_quality")


def test_downstream_segmentation_waits_for_its_results(results, tmp_path):
    (results / "downstream_segmentation-cpu.json").unlink(missing_ok=True)  # before it is measured
    assert "downstream-segmentation" not in render_all()
    write(tmp_path)
    assert not (tmp_path / "docs" / "tables" / "downstream-segmentation.md").exists()

    def dice(value, low, high):
        return {"value": value, "low": low, "high": high, "volumes": 64}

    arms = [{"arm": arm, "n": 8, "training": training, "real_pairs": real, "synthetic_pairs": synthetic,
             "seconds": {"training": 100.0}, "mean_dice": dice(*mean),
             "dice": {"lung_right": {**dice(lung, lung - 0.01, lung + 0.01), "in_mean": True}}}
            for arm, training, real, synthetic, mean, lung in [
                ("a", "real", 8, 0, (0.8121, 0.7902, 0.8301), 0.95),
                ("c", "synthetic", 0, 32, (0.7003, 0.6801, 0.7199), 0.9)]]
    record = {"benchmark": "downstream_segmentation", "machine": {"device": "cpu"}, "arguments": {}, "notes": [],
              "results": {"command": "python benchmarks/downstream_segmentation.py --n 8 --arms a,c",
                          "arms": arms, "comparisons": [{"n": 8, "synthetic_over_real": {
                              "value": 0.8623, "low": 0.84, "high": 0.88, "holds": False}}],
                          "reference_segmenter": None}}
    (results / "downstream_segmentation-cpu.json").write_text(json.dumps(record))

    text = render_all()["downstream-segmentation"]
    assert "| 8 | a: real | 8 real | 0.812 [0.790, 0.830] | 100 |" in text
    assert "| 8 | c: synthetic | 32 synthetic | 0.700 [0.680, 0.720] | 100 |" in text
    assert "| 8 | 0.862 [0.840, 0.880] (does not hold) | - |" in text
    assert "| `lung_right` | 0.950 | 0.900 |" in text
    assert ("Source: `benchmarks/results/downstream_segmentation-cpu.json`; reproduce: "
            "`python benchmarks/downstream_segmentation.py --n 8 --arms a,c`") in text


def test_adherence_rows_with_quality_show_kid_and_precision_recall_and_the_acceptance_run_its_own_table(results):
    record = json.loads((results / "adherence-xs4-cond-cpu.json").read_text())
    record["results"][0]["quality"] = {"kid_x1e3": {"value": 73.11, "interval": [49.5, 106.7]},
                                       "precision": {"value": 0.8125, "interval": [0.63, 0.99]},
                                       "recall": {"value": 0.5, "interval": [0.28, 0.72]}}
    (results / "adherence-xs4-cond-cpu.json").write_text(json.dumps(record))
    tables = render_all()
    assert "KID ×10³" in tables["adherence"] and "73.1 [49.5, 106.7]" in tables["adherence"]
    assert "0.81 [0.63, 0.99]" in tables["adherence"]
    assert "adherence-256" not in tables or "adherence-xs4-cond-256" in tables["adherence-256"]
    (results / render_tables.ADHERENCE_256).write_text(json.dumps(record))
    tables = render_all()
    assert "adherence-xs4-cond-256-cpu.json" in tables["adherence-256"]
    assert "adherence-xs4-cond-256-cpu.json" not in tables["adherence"]
