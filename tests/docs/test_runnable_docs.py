"""The shell blocks the documentation marks ``<!-- runnable -->`` run, in order, in a fresh copy of the
repository, with the ``prdit`` of this environment. And what parsing cannot see, running does: three commands
once documented parse but fail when run, which a runnable block catches (shown on a tiny model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.doc_commands import blocks, check_commands, copy_repository, documented_files, run_blocks

pytestmark = pytest.mark.slow

RUNNABLE_FILES = [path for path in documented_files()
                  if any(block.runnable for block in blocks(path.read_text(encoding="utf-8"), path))]


@pytest.mark.parametrize("path", RUNNABLE_FILES, ids=[path.name for path in RUNNABLE_FILES])
def test_the_runnable_blocks_of_the_docs_run(path, tmp_path):
    runnable = [block for block in blocks(path.read_text(encoding="utf-8"), path) if block.runnable]
    failed = [run for run in run_blocks(runnable, copy_repository(tmp_path / "repo")) if run.returncode != 0]
    assert not failed, "\n\n".join(f"{run.where}: exit status {run.returncode}\n{run.output[-3000:]}"
                                   for run in failed)


def test_a_block_fails_at_its_first_failing_command(tmp_path):
    markdown = "<!-- runnable -->\n```bash\necho made > made.txt\nfalse\necho never > never.txt\n```\n"
    (run,) = run_blocks(blocks(markdown, Path("page.md")), tmp_path)
    assert run.returncode == 1 and (tmp_path / "made.txt").exists() and not (tmp_path / "never.txt").exists()


# A tiny trained model (2 training steps at 16³): a run folder, its exported model folder, a copy of the run
# folder under the name a broken example gave it, and scans of another size than the model's in data/lidc.
SETUP = """
prdit phantoms --num 4 --size 16 --out data/phantoms-16
prdit split --data data/phantoms-16 --val-fraction 0.5 --out data/phantoms-16
prdit train phantoms-tiny-stage1 model.input_size=16 data.train=data/phantoms-16/train.txt \\
    data.val=data/phantoms-16/val.txt train.steps=2 train.global_batch=2 run.name=lidc-4l --quiet
prdit export runs/lidc-4l --out models/lidc-4l
cp -r runs/lidc-4l runs/lidc-4l-model
prdit phantoms --num 2 --size 24 --out data/lidc
prdit split --data data/lidc --val-fraction 0.5 --out data/lidc
"""
WORKING = {  # what the broken examples meant, on the model folder and scans of its size
    "sample": "prdit sample models/lidc-4l --num 1 --steps 2 --out samples --no-previews --quiet",
    "reconstruct": "prdit reconstruct models/lidc-4l --task sr --simulate-from data/phantoms-16/val.txt --steps 2 "
                   "--out recon/ok --no-previews --quiet",
}
BROKEN = {  # once documented; each parses, each fails when run
    "sample": ("prdit sample runs/lidc-4l --num 4 --out samples", "runs/lidc-4l: missing config.json"),
    "distill": ("prdit distill runs/lidc-4l-model", "runs/lidc-4l-model: missing config.json"),
    "reconstruct": ("prdit reconstruct models/lidc-4l --task sr --simulate-from data/lidc/val.txt --steps 2 "
                    "--out recon/sr", "the model reconstructs volumes of shape (16, 16, 16), the file holds "
                                      "(24, 24, 24)"),
}


def runnable(script: str) -> str:
    return f"<!-- runnable -->\n\n```bash\n{script.strip()}\n```\n\n"


def test_once_documented_commands_that_parse_fail_when_run(tmp_path):
    markdown = runnable(SETUP) + "".join(runnable(line) for line in WORKING.values()) + "".join(
        runnable(line) for line, _ in BROKEN.values())
    page = blocks(markdown, Path("page.md"))
    assert check_commands(c for block in page for c in block.commands()) == []  # parsing cannot tell

    setup, *rest = run_blocks(page, tmp_path)
    assert setup.returncode == 0, setup.output[-3000:]
    working, broken = rest[:len(WORKING)], rest[len(WORKING):]
    for run in working:
        assert run.returncode == 0, (run.block.text, run.output[-3000:])
    for run, (line, error) in zip(broken, BROKEN.values()):
        assert run.returncode == 2, (line, run.output[-3000:])
        assert error in run.output, (line, run.output[-3000:])
