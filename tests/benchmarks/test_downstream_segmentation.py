"""benchmarks/downstream_segmentation.py: segmenters on real, real + synthetic and synthetic pairs, tested on real
phantoms, with paired intervals on the comparisons a user reads, and a work folder a rerun resumes from."""

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

script = importlib.import_module("benchmarks.downstream_segmentation")

from prdit.data.labels import PHANTOM_LABELS  # noqa: E402
from prdit.data.phantoms import write_phantoms  # noqa: E402
from prdit.evaluation.config import BootstrapConfig  # noqa: E402
from prdit.evaluation.segmenter import load_segmenter  # noqa: E402

ABSOLUTE = re.compile(r"(?<![\w.~])/[\w.-]+")  # as tests/benchmarks/test_results_paths.py
TINY = ["--smoke", "--n", "2", "--steps", "2", "--eval-every", "1", "--val-phantoms", "2", "--test-phantoms", "3",
        "--resamples", "50", "--device", "cpu", "--threads", "1"]


def phantoms_as_pairs(maps: Path, out: Path) -> Path:
    """The phantoms of ``maps`` (with their labels/) renamed as a sample folder: sample_*.nii.gz + labels/."""
    (out / "labels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(maps / "labels" / "labels.json", out / "labels" / "labels.json")
    for i, path in enumerate(sorted(maps.glob("phantom_*.nii.gz"))):
        shutil.copyfile(path, out / f"sample_{i:05d}.nii.gz")
        shutil.copyfile(maps / "labels" / path.name, out / "labels" / f"sample_{i:05d}.nii.gz")
    return out


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """8 synthetic pairs at 16³ (phantoms of a set no arm trains or tests on, standing in for samples)."""
    root = tmp_path_factory.mktemp("pairs")
    write_phantoms(8, 16, root / "phantoms", seed=7, labels=True)
    return phantoms_as_pairs(root / "phantoms", root / "pairs")




def test_runs_end_to_end_records_every_arm_and_a_rerun_skips_finished_arms(tmp_path, pairs, monkeypatch, capsys,
                                                                           json_strings):
    monkeypatch.setattr(script, "NOT_WORSE_AT", 2)  # the not-worse target is read at n = 8; here n = 2
    work, out = tmp_path / "work", tmp_path / "out.json"
    args = [*TINY, "--synthetic", str(pairs), "--work", str(work), "--json", str(out)]
    script.main(args)
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    results = record["results"]
    assert record["benchmark"] == "downstream_segmentation"
    assert not [(s, m) for s in json_strings(record) for m in ABSOLUTE.findall(s)]

    arms = {entry["arm"]: entry for entry in results["arms"]}
    assert [(arms[a]["real_pairs"], arms[a]["synthetic_pairs"]) for a in "abc"] == [(2, 0), (2, 8), (0, 8)]
    for entry in arms.values():
        assert entry["n"] == 2 and entry["trained_now"] and entry["seconds"]["training"] >= 0
        mean = entry["mean_dice"]
        assert mean["volumes"] == 3 and mean["low"] <= mean["value"] <= mean["high"]
        assert set(entry["dice"]) == set(PHANTOM_LABELS[1:])
        assert not entry["dice"]["lung_nodules"]["in_mean"] and entry["dice"]["liver"]["in_mean"]
        assert len(entry["curve"]) == 2
        segmenter = load_segmenter(work / "arms" / f"{entry['arm']}-n2" / "segmenter")
        assert segmenter.input_size == (16, 16, 16)
    assert results["mean_labels"] == list(load_segmenter().mean_labels)
    assert "lung_nodules" in results["left_out_of_mean"] and "lung_nodules" not in results["mean_labels"]
    assert results["seeds"]["test"] == 1 and results["seeds"]["real_pairs"] == 0
    assert results["test_set"]["phantoms"] == 3
    assert results["command"].startswith("python benchmarks/downstream_segmentation.py --smoke")
    assert results["synthetic"]["pairs"] == 8 and results["commands"] == []  # given pairs: nothing sampled

    (comparison,) = results["comparisons"]
    ratio, difference = comparison["synthetic_over_real"], comparison["mixed_minus_real"]
    a, b, c = (arms[x]["mean_dice"]["value"] for x in "abc")
    assert ratio["value"] == pytest.approx(c / a, abs=2e-3) and ratio["low"] <= ratio["value"] <= ratio["high"]
    assert ratio["holds"] == (ratio["value"] >= 0.9) and ratio["target"] == "(c) >= 0.9 x (a)"
    assert difference["value"] == pytest.approx(b - a, abs=2e-4)
    assert difference["holds"] == (difference["high"] >= 0)
    assert "(c) / (a)" in printed and "lung_nodules (not in mean)" in printed

    def no_training(*_, **__):
        raise AssertionError("a finished arm was trained again")

    monkeypatch.setattr(script, "train_segmenter", no_training)
    script.main([*args[:-1], str(tmp_path / "again.json")])
    again = json.loads((tmp_path / "again.json").read_text())["results"]
    assert not any(entry["trained_now"] for entry in again["arms"])
    for first, second in zip(results["arms"], again["arms"]):
        assert (first["mean_dice"], first["dice"], first["seconds"]) == (second["mean_dice"], second["dice"],
                                                                         second["seconds"])
    assert again["comparisons"] == results["comparisons"]

    with pytest.raises(SystemExit, match=r"a-n2.*other settings \(recipe\)"):
        script.main([*args, "--steps", "3"])  # a stored arm of another recipe is not passed off as this one


def test_too_few_synthetic_pairs_is_an_error_naming_the_folder_and_counts(tmp_path, pairs):
    short = tmp_path / "short"
    shutil.copytree(pairs, short)
    (short / "labels" / "sample_00007.nii.gz").unlink()
    with pytest.raises(SystemExit) as error:
        script.main([*TINY, "--n", "2", "--synthetic", str(short), "--work", str(tmp_path / "w"),
                     "--json", str(tmp_path / "o.json")])
    message = str(error.value)
    assert str(short) in message and "7 synthetic pairs" in message and "need 4 x 2 = 8" in message
    assert "1 sample_*.nii.gz without a map" in message
    assert not (tmp_path / "w" / "arms").exists()  # refused before any training


def test_synthetic_pairs_are_sampled_from_fresh_maps_with_the_cli(tmp_path, monkeypatch):
    """Without --synthetic: the maps come from `prdit phantoms --labels` at a seed of their own, the volumes from
    `prdit sample MODEL --labels MAPS` with --sampler/--steps passed through; a rerun runs neither again."""
    commands = []

    def fake_prdit(command, threads):  # stands in for the CLI: writes what it would write
        commands.append(command)
        out = Path(command[command.index("--out") + 1])
        if command[0] == "phantoms":
            write_phantoms(int(command[command.index("--num") + 1]), int(command[command.index("--size") + 1]), out,
                           seed=int(command[command.index("--seed") + 1]), labels=True)
        else:
            phantoms_as_pairs(Path(command[command.index("--labels") + 1]).parent, out)

    monkeypatch.setattr(script, "run", fake_prdit)
    args = [*TINY, "--arms", "c", "--sampler", "euler", "--sampler-steps", "5", "--work", str(tmp_path / "work"),
            "--json", str(tmp_path / "o.json")]
    script.main(args)
    (phantoms, sample) = commands
    assert phantoms[:2] == ["phantoms", "--num"] and phantoms[2] == "8" and "--labels" in phantoms
    maps_seed = int(phantoms[phantoms.index("--seed") + 1])
    assert maps_seed == script.MAPS_SEED and maps_seed not in (0, 1, 2, 3)  # real, test, validation, adherence maps
    assert sample[:2] == ["sample", str(script.DEFAULT_MODEL)]
    assert sample[sample.index("--labels") + 1] == str(Path(phantoms[phantoms.index("--out") + 1]) / "labels")
    assert sample[sample.index("--sampler") + 1] == "euler" and sample[sample.index("--steps") + 1] == "5"
    results = json.loads((tmp_path / "o.json").read_text())["results"]
    assert [c["command"].split()[:2] for c in results["commands"]] == [["prdit", "phantoms"], ["prdit", "sample"]]
    assert all(c["ran_now"] for c in results["commands"]) and results["seeds"]["maps"] == script.MAPS_SEED

    commands.clear()
    script.main(args)
    assert commands == []
    assert not any(c["ran_now"] for c in json.loads((tmp_path / "o.json").read_text())["results"]["commands"])


def test_paired_comparisons_on_known_answers():
    config = BootstrapConfig(resamples=200, seed=0)
    real = np.array([0.6, 0.7, 0.8, 0.9, np.nan])
    ratio = script.paired_ratio(0.9 * real, real, config)  # every volume at 0.9 x: no spread to resample
    assert ratio["value"] == pytest.approx(0.9) and ratio["low"] == pytest.approx(0.9)
    assert ratio["high"] == pytest.approx(0.9) and ratio["volumes"] == 4  # the volume without a value is left out
    difference = script.paired_difference(real + 0.05, real, config)
    assert difference["value"] == pytest.approx(0.05) and difference["low"] == pytest.approx(0.05)
    assert difference["high"] == pytest.approx(0.05)

    values, baseline = np.array([0.2, 0.4, 0.6, 0.8]), np.array([0.5, 0.5, 0.5, 0.5])
    ratio = script.paired_ratio(values, baseline, config)
    assert ratio["value"] == pytest.approx(1.0) and 0.4 <= ratio["low"] < 1.0 < ratio["high"] <= 1.6
    difference = script.paired_difference(values, baseline, config)
    assert difference["value"] == pytest.approx(0.0) and -0.3 <= difference["low"] < 0 < difference["high"] <= 0.3

    assert script.ratio_verdict({"value": 0.95, "low": 0.91, "high": 0.99}) == {
        "target": "(c) >= 0.9 x (a)", "holds": True, "interval": "interval above the target"}
    assert script.ratio_verdict({"value": 0.92, "low": 0.85, "high": 0.97})["interval"].endswith("not settled")
    assert not script.ratio_verdict({"value": 0.8, "low": 0.75, "high": 0.85})["holds"]
    assert not script.difference_verdict({"value": -0.03, "low": -0.05, "high": -0.01})["holds"]
    assert script.difference_verdict({"value": -0.03, "low": -0.06, "high": 0.01})["holds"]


@pytest.mark.parametrize("volumes", [64, 256])
def test_paired_intervals_cover_the_population_value(volumes):
    """A 95 % interval must hold the population value in >= 90 % of simulated test sets (docs/method.md §17): per
    volume Dice of two arms correlated through the volume, population ratio 0.9 and difference -0.08."""
    rng = np.random.default_rng(volumes)
    trials, ratio_hits, difference_hits, widths = 200, 0, 0, []
    for trial in range(trials):
        shared, own = rng.standard_normal(volumes), rng.standard_normal(volumes)
        real = 0.8 + 0.06 * shared
        synthetic = 0.72 + 0.05 * (0.8 * shared + 0.6 * own)
        ratio = script.paired_ratio(synthetic, real, BootstrapConfig(resamples=200, seed=trial))
        difference = script.paired_difference(synthetic, real, BootstrapConfig(resamples=200, seed=trial))
        ratio_hits += ratio["low"] <= 0.9 <= ratio["high"]
        difference_hits += difference["low"] <= -0.08 <= difference["high"]
        widths.append(difference["high"] - difference["low"])
    assert ratio_hits >= 0.9 * trials and difference_hits >= 0.9 * trials
    # paired, the interval has the spread of the per-volume difference (sd 0.036 here), not that of two independent
    # arms (sd 0.078): an interval that resampled the arms apart would be about twice as wide
    assert np.mean(widths) < 0.8 * 2 * 1.96 * np.sqrt((0.06**2 + 0.05**2) / volumes)
