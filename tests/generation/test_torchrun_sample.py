"""`prdit sample` under torchrun: two gloo processes on the CPU share the volumes and write the files one
process writes; a killed job resumes under one process; a rank's error stops the job and names the rank."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.io import read_volume

pytest.importorskip("torch.distributed.run")

STEPS = "4"
TIMEOUT = 240  # seconds a job may take before the test calls it hung


def torchrun(port: int, *args, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
            "-m", "prdit", *map(str, args)]


ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def one_process(*args):
    result = CliRunner().invoke(app, ["sample", *map(str, args), "--quiet"])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def volumes(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_volume(p).array for p in sorted(folder.glob("sample_*.nii.gz"))}


def manifest_volumes(folder: Path) -> list[dict]:
    return json.loads((folder / "manifest.json").read_text())["volumes"]


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory):
    """Volumes 0..5 of seed 4 sampled by one process."""
    out = tmp_path_factory.mktemp("one-process")
    one_process(model_dir, "--out", out, "--num-volumes", 6, "--batch", 2, "--seed", 4, "--steps", STEPS)
    return out


def assert_same_run(folder: Path, reference: Path) -> None:
    ours, theirs = volumes(folder), volumes(reference)
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert np.array_equal(ours[name], theirs[name]), name  # bit for bit (--exact is the default)
    assert manifest_volumes(folder) == manifest_volumes(reference)
    assert all((folder / "previews" / f"{Path(name).name.split('.')[0]}.png").is_file() for name in theirs)
    assert not (folder / ".partial").exists()


def test_two_processes_write_the_files_of_one(model_dir, reference, tmp_path, jobs):
    out = tmp_path / "two"
    result = jobs.run(torchrun(29541, "sample", model_dir, "--out", out, "--num-volumes", 6, "--batch", 2,
                               "--seed", 4, "--steps", STEPS, "--quiet"), ENV, TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(out, reference)
    assert (out / "grid.png").is_file() and (out / "view.html").is_file()
    # rank 0 speaks for the job: one summary line, saying how many processes shared the work
    assert result.stdout.count("generated 6, skipped 0") == 1
    assert "(2 processes)" in result.stdout


def test_a_job_killed_mid_run_resumes_under_one_process(model_dir, tmp_path, jobs):
    """kill -9 of rank 1 once the first volume is on disk: torchrun stops rank 0, and one process completes the
    set (any mix of finished volumes) with the files of an uninterrupted run."""
    run = ["--num-volumes", 8, "--batch", 1, "--seed", 4, "--steps", 1000]  # about a second a volume
    out = tmp_path / "killed"
    job = jobs.start(torchrun(29542, "sample", model_dir, "--out", out, *run, "--quiet"), ENV)
    deadline = time.monotonic() + TIMEOUT
    while not list(out.glob("sample_*.nii.gz")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    rank1 = _worker_of_rank(job.pid, 1)
    assert rank1 is not None, "rank 1 had finished before its first volume was on disk"
    os.kill(rank1, signal.SIGKILL)
    result = jobs.finish(job, TIMEOUT)
    assert result.returncode != 0
    assert 1 <= len(list(out.glob("sample_*.nii.gz"))) < 8
    reference = tmp_path / "uninterrupted"
    one_process(model_dir, "--out", reference, *run)
    one_process(model_dir, "--out", out, *run)
    assert_same_run(out, reference)


def test_an_error_on_one_rank_stops_the_job_and_names_the_rank(model_dir, reference, tmp_path, jobs):
    out = tmp_path / "failing"
    one_process(model_dir, "--out", out, "--index", 0, "--batch", 2, "--seed", 4, "--steps", STEPS)
    # Volumes 1..5 are dealt 1, 3, 5 to rank 0 and 2, 4 to rank 1; rank 1 cannot write volume 2.
    (out / "sample_00002.nii.gz").mkdir()
    result = jobs.run(torchrun(29543, "sample", model_dir, "--out", out, "--num-volumes", 6, "--batch", 2,
                               "--seed", 4, "--steps", STEPS, "--quiet"), ENV, TIMEOUT)
    assert result.returncode != 0
    assert "sample_00002.nii.gz" in result.stderr and "rank: 1" in result.stderr.replace("rank : 1", "rank: 1")
    (out / "sample_00002.nii.gz").rmdir()
    one_process(model_dir, "--out", out, "--num-volumes", 6, "--batch", 2, "--seed", 4, "--steps", STEPS)
    assert_same_run(out, reference)


def test_an_error_every_rank_meets_is_printed_once(model_dir, reference, tmp_path, jobs):
    """A folder of another run: rank 0 finds it, every rank stops, and the message appears once."""
    out = tmp_path / "other-run"
    one_process(model_dir, "--out", out, "--index", 0, "--seed", 5, "--steps", STEPS)
    result = jobs.run(torchrun(29544, "sample", model_dir, "--out", out, "--num-volumes", 6, "--seed", 4,
                                   "--steps", STEPS, "--quiet"), ENV, TIMEOUT)
    assert result.returncode != 0
    assert result.stderr.count("holds volumes of another run") == 1, result.stderr[-3000:]
    assert "rank 0 of 2" in result.stderr


def _worker_of_rank(launcher: int, rank: int) -> int | None:
    """The pid of the torchrun worker with ``RANK=rank`` among the launcher's children (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None
