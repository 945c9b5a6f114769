"""The memorisation check: copies of training phantoms (exact, noisy and shifted) are flagged, fresh
phantoms are not; the streamed correlation equals a brute-force one; the pairs page shows the pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prdit.data.io import Volume, write_volume
from prdit.data.normalization import Normalization
from prdit.data.phantoms import generate_phantom
from prdit.errors import DataError
from prdit.evaluation.config import EvaluationConfig, MemorisationConfig
from prdit.evaluation.memorisation import familywise_threshold, nearest_by_correlation, translations
from prdit.evaluation.report import evaluate, report_table
from prdit.evaluation.volumes import VolumeSet
from prdit.viewer.page import decode_volume, read_page_data

SIZE = 24


def phantoms_hu(seeds) -> list[np.ndarray]:
    return [generate_phantom(SIZE, seed=int(s)).array for s in seeds]


def copies_of(train: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Ten exact copies and ten with 20 HU of noise, moved by one voxel along a random axis."""
    exact = [train[i].copy() for i in range(10)]
    perturbed = [np.roll(train[i] + rng.normal(0.0, 20.0, train[i].shape).astype(np.float32),
                         int(rng.choice([-1, 1])), axis=int(rng.integers(3))) for i in range(10, 20)]
    return exact + perturbed


def write_set(folder, volumes) -> None:
    for i, volume in enumerate(volumes):
        write_volume(folder / f"volume_{i:03d}.nii.gz", Volume(volume, spacing=(2.0, 2.0, 2.0)))


def test_copies_of_training_phantoms_are_flagged_and_fresh_ones_are_not(tmp_path, evaluate_cli):
    rng = np.random.default_rng(0)
    train = phantoms_hu(range(40))
    generated = copies_of(train, rng) + phantoms_hu(range(1000, 1020))  # 20 copies, then 20 fresh phantoms
    write_set(tmp_path / "train", train)
    write_set(tmp_path / "fake", generated)
    write_set(tmp_path / "real", phantoms_hu(range(2000, 2060)))  # held out: the reference
    out = tmp_path / "report.json"
    result = evaluate_cli(["--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--train",
                      str(tmp_path / "train"), "--metrics", "memorisation", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "memorisation" in result.output and "flagged" in result.output
    entry = json.loads(out.read_text())["memorisation"]
    flagged = np.array(entry["nearest"]["generated"]["correlation"]) > entry["correlation"]["threshold"]
    assert flagged[:20].mean() >= 0.95 and flagged[20:].mean() <= 0.05
    assert entry["correlation"]["threshold"] == max(entry["nearest"]["held_out"]["correlation"])
    assert entry["expected_false_flag_rate"] == pytest.approx(1 / 61)
    assert entry["any_false_flag_probability"] == pytest.approx(40 / 100)  # M / (M + n): 40 generated, 60 held out
    # the family-wise threshold is stricter than the largest held-out correlation (here, with held-out correlations
    # spread over 0.93-0.98, above what any copy reaches: a 5 % family-wise rate cannot be had at this spread)
    familywise = entry["correlation"]["familywise"]
    held = np.array(entry["nearest"]["held_out"]["correlation"])
    assert familywise["threshold"] == pytest.approx(familywise_threshold(held, 40, 0.05))
    assert familywise["rate"] == 0.05 and familywise["threshold"] > entry["correlation"]["threshold"]
    assert "40%" in result.output and "at most 5%" in result.output
    assert entry["features"] == {"skipped": entry["features"]["skipped"]}  # no feature network given
    # the most similar pairs: a copy and its original, side by side in the viewer page beside the report
    top = entry["top_pairs"]
    assert len(top) == 5 and all(p["flagged"] for p in top) and top[0]["correlation"] > 0.9999
    assert all(p["generated_index"] < 20 and p["training_index"] == p["generated_index"] for p in top)
    page = tmp_path / "report.memorisation.html"
    assert entry["page"] == str(page)
    data = read_page_data(page.read_text())
    assert len(data["volumes"]) == 10 and data["shown"] == [0, 1]
    assert data["volumes"][0]["name"].startswith("#1 generated") and data["volumes"][1]["name"].startswith("#1 training")
    assert data["volumes"][0]["spacing"] == [2.0, 2.0, 2.0]
    first, second = decode_volume(data["volumes"][0]), decode_volume(data["volumes"][1])
    assert np.abs(first.astype(int) - second).max() <= 1  # an exact copy, to HU rounding


def test_without_the_shift_search_shifted_copies_pass():
    norm = Normalization()
    train = phantoms_hu(range(12))
    shifted = [np.roll(v, 1, axis=a) for v, a in zip(train[:6], (0, 1, 2, 0, 1, 2))]
    sets = [VolumeSet(np.stack([norm.to_model(v) for v in s])) for s in (shifted, phantoms_hu(range(500, 512)), train)]
    plain = nearest_by_correlation(sets[:2], sets[2], MemorisationConfig(shift=0), progress=False)
    searched = nearest_by_correlation(sets[:2], sets[2], MemorisationConfig(shift=1), progress=False)
    assert (plain[0].similarity < plain[1].similarity.max()).mean() > 0.5  # most shifted copies look fresh
    assert (searched[0].similarity > searched[1].similarity.max()).all()
    assert (searched[0].index == np.arange(6)).all()
    # the recorded translation moves the copy back onto its original
    for shift, axis in zip(searched[0].shift, (0, 1, 2, 0, 1, 2)):
        assert list(shift) == [1 if a == axis else 0 for a in range(3)]


def test_streamed_correlation_equals_a_brute_force_search_in_any_chunking():
    rng = np.random.default_rng(2)
    queries, train = rng.uniform(-1, 1, (7, 8, 9, 10)), rng.uniform(-1, 1, (5, 8, 9, 10))
    train[3] = 0.9 * np.roll(queries[4], (1, -1, 0), axis=(0, 1, 2)) + 0.05 * rng.uniform(-1, 1, (8, 9, 10))
    s = 1

    def brute(q: np.ndarray) -> tuple[float, int]:
        best = (-2.0, -1)
        for j, t in enumerate(train):
            centre = t[s:-s, s:-s, s:-s].ravel()
            for dz, dy, dx in translations(s):
                moved = q[s + dz:8 - s + dz, s + dy:9 - s + dy, s + dx:10 - s + dx].ravel()
                best = max(best, (float(np.corrcoef(moved, centre)[0, 1]), j))
        return best

    expected = [brute(q) for q in queries]
    for query_chunk, train_chunk in ((100, 100), (3, 2), (1, 1)):
        config = MemorisationConfig(shift=s, query_chunk=query_chunk, train_chunk=train_chunk)
        (nearest,) = nearest_by_correlation([VolumeSet(queries.astype(np.float32))],
                                            VolumeSet(train.astype(np.float32)), config, progress=False)
        assert nearest.similarity == pytest.approx([e[0] for e in expected], abs=1e-5)
        assert list(nearest.index) == [e[1] for e in expected]
    assert nearest.index[4] == 3 and nearest.similarity[4] > 0.99


def test_feature_distances_flag_exact_copies_and_a_shared_volume_is_reported(phantoms16):
    train, real = phantoms16[:6], np.concatenate([phantoms16[2:3], phantoms16[10:14]])  # real[0] is a training volume
    fake = np.concatenate([phantoms16[:2], phantoms16[20:23]])  # two exact copies, three fresh
    config = EvaluationConfig(metrics=("memorisation",), features="random-init", seed=0, cache_dir=None,
                              progress=False, memorisation=MemorisationConfig(top_pairs=2))
    report = evaluate(real, fake, config, train=train)
    entry = report["memorisation"]
    assert entry["features"]["threshold"] == pytest.approx(0.0, abs=1e-3)  # the shared volume is at distance 0
    assert any("overlaps the training set" in w for w in report["warnings"])
    assert report["samples"]["training"] == 6 and entry["top_pairs"][0]["feature_distance"] == pytest.approx(0, abs=1e-3)
    assert entry["top_pairs"][0]["nearest_by_features"] == entry["top_pairs"][0]["training"]
    assert "page" not in entry and report["protocol"]["memorisation"]["published"] is False


def test_the_check_needs_training_and_held_out_volumes(phantoms16):
    config = EvaluationConfig(metrics=("memorisation",), progress=False)
    with pytest.raises(DataError, match="--train"):
        evaluate(phantoms16[:4], phantoms16[4:8], config)
    with pytest.raises(DataError, match="too small"):
        nearest_by_correlation([VolumeSet(phantoms16[:2, :2])], VolumeSet(phantoms16[2:4, :2]), progress=False)


def nearest_similarities(count: int, train: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each of ``count`` fresh random volumes' largest correlation with the training volumes ``[T, V]`` (unit rows)."""
    queries = rng.standard_normal((count, train.shape[1]))
    queries -= queries.mean(1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return (queries @ train.T).max(axis=1)


@pytest.mark.parametrize("held_out, generated", [(64, 64), (20, 100)])
def test_false_flag_rates_are_what_the_report_states_on_exchangeable_volumes(held_out, generated):
    # No generated volume copies anything: held-out and generated similarities are exchangeable. "Above every
    # held-out volume" flags at least one with probability M / (M + n); the family-wise threshold at most 5 %.
    rng = np.random.default_rng(held_out)
    runs, above_all, above_familywise = 1000, 0, 0
    for _ in range(runs):
        train = rng.standard_normal((64, 200))
        train -= train.mean(1, keepdims=True)
        train /= np.linalg.norm(train, axis=1, keepdims=True)
        reference, fresh = nearest_similarities(held_out, train, rng), nearest_similarities(generated, train, rng)
        above_all += (fresh > reference.max()).any()
        above_familywise += (fresh > familywise_threshold(reference, generated, 0.05)).any()
    assert above_all / runs == pytest.approx(generated / (generated + held_out), abs=0.05)
    assert above_familywise / runs <= 0.05 + 0.02  # 0.02: three standard errors of 1,000 runs at 5 %


def test_one_held_out_volume_still_checks_and_skips_only_the_familywise_threshold(phantoms16):
    # a family-wise threshold fits the held-out spread, which one volume lacks; the rest of the check stands
    config = EvaluationConfig(metrics=("memorisation",), features="random-init", seed=0, cache_dir=None,
                              progress=False)
    report = evaluate(phantoms16[10:11], np.concatenate([phantoms16[:1], phantoms16[20:22]]), config,
                      train=phantoms16[:6])
    entry = report["memorisation"]
    assert entry["held_out_volumes"] == 1 and entry["correlation"]["flagged"] >= 1  # the exact copy
    for check in (entry["correlation"], entry["features"]):
        assert "2 held-out volumes" in check["familywise"]["skipped"] and "threshold" not in check["familywise"]
    report_table(report)
