"""`prdit evaluate` under torchrun: two gloo processes share feature extraction (real, generated, training, and
the --real-stats file) and MS-SSIM pairs; rank 0 reports numbers equal to one process's."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from prdit.data.phantoms import write_phantoms

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.torchrun_scaling import numbers  # noqa: E402 (every number of a report entry, by its path)

pytest.importorskip("torch.distributed.run")

# Features of a volume come from batches of other volumes when the work is shared: equal up to float
# rounding of the convolutions, so the numbers agree to this relative tolerance (seen: at most 3e-6, on a
# KID near zero).
RTOL = 1e-5
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    return {name: write_phantoms(count, 24, root / name, seed=seed)[0].parent
            for name, count, seed in (("real", 9, 1), ("fake", 11, 2), ("train", 7, 3))}


def arguments(sets, out, stats) -> list[str]:
    return ["evaluate", "--fake", str(sets["fake"]), "--real", str(sets["real"]), "--train", str(sets["train"]),
            "--features", "random-init", "--seed", "0", "--metrics", "fid,mmd,kid,prdc,msssim,hu_wasserstein",
            "--bootstrap", "20", "--batch-size", "4", "--memorisation-shift", "1", "--out", str(out / "report.json"),
            "--real-stats", str(stats), "--no-cache", "--quiet"]


def test_two_processes_report_the_numbers_of_one(sets, tmp_path, jobs):
    one, two = tmp_path / "one", tmp_path / "two"
    single = jobs.run([sys.executable, "-m", "prdit", *arguments(sets, one, one / "stats.npz")], ENV)
    assert single.returncode == 0, single.stderr[-3000:]
    job = jobs.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29551",
                    "-m", "prdit", *arguments(sets, two, two / "stats.npz")], ENV)
    assert job.returncode == 0, job.stderr[-3000:]
    assert job.stdout.count("PRDiT evaluation") == 1  # rank 0 reports for the job

    reports = [json.loads((folder / "report.json").read_text()) for folder in (one, two)]
    checked = 0
    for metric in ("fid", "mmd", "kid", "prdc", "msssim", "hu_wasserstein", "memorisation"):
        ours, theirs = dict(numbers(reports[1][metric])), dict(numbers(reports[0][metric]))
        assert ours.keys() == theirs.keys(), metric
        for path, value in theirs.items():
            # a number ×10³ (KID, FID) is held to the absolute tolerance of the number it copies, ×10³
            abs_tol = 1e-6 if "_x1e3" in path else 1e-9
            assert math.isclose(ours[path], value, rel_tol=RTOL, abs_tol=abs_tol), (metric, path, ours[path], value)
            checked += 1
    assert checked > 50
    pairs = [[(p["generated"], p["training"]) for p in r["memorisation"]["top_pairs"]] for r in reports]
    assert pairs[0] == pairs[1]
    with np.load(one / "stats.npz") as a, np.load(two / "stats.npz") as b:
        assert a["features"].shape == b["features"].shape == (9, 2048)
        np.testing.assert_allclose(b["features"], a["features"], rtol=RTOL, atol=1e-7)


# Each rank reads its feature cache folder (and its --real-stats path) from the environment: on one machine, the
# node-local home folders of a job spread over several nodes.
PER_RANK_JOB = """
import os, sys
rank = os.environ["RANK"]
sys.argv = ["prdit", *sys.argv[1:], "--cache-dir", os.environ[f"CACHE_RANK{rank}"],
            "--real-stats", os.environ[f"STATS_RANK{rank}"]]
from prdit.cli import main
main()
"""


def cache_arguments(sets, out) -> list[str]:
    return ["evaluate", "--fake", str(sets["fake"]), "--real", str(sets["real"]), "--features", "random-init",
            "--seed", "0", "--metrics", "fid,mmd", "--bootstrap", "0", "--batch-size", "2",
            "--out", str(out / "report.json"), "--quiet"]


@pytest.fixture(scope="module")
def cached(sets, tmp_path_factory):
    """A feature cache and a stats file written by one process, and the report of one process without either."""
    from typer.testing import CliRunner

    from prdit.cli import app

    root = tmp_path_factory.mktemp("cached")
    reference = CliRunner().invoke(app, [*cache_arguments(sets, root / "reference"), "--no-cache"])
    assert reference.exit_code == 0, (reference.output, reference.exception)
    primed = CliRunner().invoke(app, [*cache_arguments(sets, root / "primed"), "--cache-dir", str(root / "cache"),
                                      "--real-stats", str(root / "stats.npz")])
    assert primed.exit_code == 0, (primed.output, primed.exception)
    assert len(list((root / "cache").glob("*.npz"))) == 2
    return {"cache": root / "cache", "stats": root / "stats.npz",
            "report": json.loads((root / "reference" / "report.json").read_text())}


@pytest.mark.parametrize("having", ["rank 0", "rank 1"])
@pytest.mark.parametrize("what", ["cache", "stats"])
def test_ranks_that_see_different_caches_take_rank_0s_path(sets, cached, having, what, tmp_path, jobs):
    """One rank sees cached features (or a --real-stats file) the other does not: every rank takes rank 0's
    path, and the job ends (no rank left waiting in a gather the others skipped) with the numbers of one
    process that had no cache."""
    job = tmp_path / "job.py"
    job.write_text(PER_RANK_JOB)
    seen, unseen = cached[what], tmp_path / ("cache" if what == "cache" else "stats.npz")
    env = {**ENV, **{f"CACHE_RANK{rank}": str(tmp_path / f"cache{rank}") for rank in (0, 1)},
           **{f"STATS_RANK{rank}": str(tmp_path / f"stats{rank}.npz") for rank in (0, 1)}}
    env[f"{what.upper()}_RANK{having[-1]}"], env[f"{what.upper()}_RANK{1 - int(having[-1])}"] = str(seen), str(unseen)
    port = {"cache": 29552, "stats": 29554}[what] + int(having[-1])
    result = jobs.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                       str(job), *cache_arguments(sets, tmp_path)], env, 120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    for metric in ("fid", "mmd"):
        ours, theirs = dict(numbers(report[metric])), dict(numbers(cached["report"][metric]))
        assert ours.keys() == theirs.keys(), metric
        for path, value in theirs.items():
            abs_tol = 1e-6 if "_x1e3" in path else 1e-9
            assert math.isclose(ours[path], value, rel_tol=RTOL, abs_tol=abs_tol), (metric, path, ours[path], value)
    assert report["reference_stats"]["reused"] == (what == "stats" and having == "rank 0")

