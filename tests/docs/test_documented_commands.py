"""Every `prdit` command in the shell blocks of README.md and docs/ is one the command line accepts: parsed by
prdit's own Click command with nothing run. The checker itself is tested on synthetic markdown: each kind of
broken command fails, working ones pass, and what it reads of a shell block is what a shell would run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools.doc_commands import Block, blocks, check_commands, documented_files, parse_error, prdit_argvs

DOCUMENTED = [command for path in documented_files() for block in blocks(path.read_text(encoding="utf-8"), path)
              for command in block.commands()]


def test_the_documentation_has_commands_to_check():
    assert len(DOCUMENTED) > 20 and {command.argv[0] for command in DOCUMENTED} >= {"train", "sample", "export"}


@pytest.mark.parametrize("command", DOCUMENTED, ids=[command.where for command in DOCUMENTED])
def test_every_documented_command_parses(command):
    error = parse_error(command.argv)
    assert error is None, f"{command.where}: {command.text.strip()}\n{error}"


def problems(markdown: str) -> list[str]:
    """The errors the checker reports on ``markdown``."""
    return [problem.error for problem in check_commands(c for b in blocks(markdown) for c in b.commands())]


def fenced(*lines: str, language: str = "bash") -> str:
    return "\n".join([f"```{language}", *lines, "```"]) + "\n"


@pytest.mark.parametrize("line, error", [
    ("prdit sample models/m --out samples --frobnicate 3", "No such option: --frobnicate"),
    ("prdit sample models/m --num 4", "Missing option '--out'"),
    ("prdit sample --out samples", "Missing argument 'model_dir'"),
    ("prdit generate models/m --out samples", "No such command 'generate'"),
    ("prdit sample models/m --out samples --steps many", "Invalid value for '--steps'"),
    ("prdit export runs/a runs/b --out models/a", "unexpected extra argument"),
    ("prdit preprocess dicom --src a --out b", "No such command 'dicom'"),
    ("prdit phantoms --out p --size 4", "Invalid value for '--size'"),
    # prdit distill writes a training run (runs/<its config's run name>): it has no --out to give
    ("prdit distill runs/lidc-4l-model --out models/student", "No such option: --out"),
])
def test_a_broken_command_fails_with_the_command_lines_reason(line, error):
    found = problems(fenced(line))
    assert len(found) == 1 and error.lower() in found[0].lower(), found


@pytest.mark.parametrize("line", [
    "prdit sample models/m --out samples --num 4 --sampler heun --steps 25",
    "prdit train phantoms-tiny-stage1 train.steps=10 optim.lr=1e-4",
    "prdit preprocess lidc --src /data/LIDC-IDRI --out data/lidc --size 256",
    "prdit distill runs/lidc-4l-model",  # no --out is required: parses (running it is another matter)
    "prdit sample runs/lidc-4l --num 4 --out samples",  # a run folder for a model folder: only running tells
    "prdit sample --help",
    "prdit --version",
    "prdit",
])
def test_a_command_the_cli_accepts_passes(line):
    assert problems(fenced(line)) == []


def test_parsing_reads_no_file_runs_nothing_and_leaves_the_cli_its_checks(tmp_path, monkeypatch, capsys):
    from prdit.cli import main

    (tmp_path / "notes.txt").write_text("kept\n")
    monkeypatch.chdir(tmp_path)
    # a path check (prdit.files) would refuse this --out, and the command would write phantoms: neither happens
    assert parse_error(["phantoms", "--out", "notes.txt"]) is None
    assert parse_error(["phantoms", "--out", "new", "--num", "1", "--size", "8"]) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    monkeypatch.setattr(sys, "argv", ["prdit", "phantoms", "--out", "notes.txt"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2 and "a file, not a folder" in capsys.readouterr().err


def test_what_is_read_of_a_shell_line():
    assert prdit_argvs("OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=0 prdit sample m --out s  # --bogus") == [
        ("sample", "m", "--out", "s")]
    assert prdit_argvs("torchrun --nproc_per_node=8 -m prdit sample m --num-volumes 8 --out s") == [
        ("sample", "m", "--num-volumes", "8", "--out", "s")]
    assert prdit_argvs("python -m prdit models && .venv/bin/prdit view a.nii.gz --out v.html | tee log") == [
        ("models",), ("view", "a.nii.gz", "--out", "v.html")]
    assert prdit_argvs("prdit sample m --out 's p' --num 2 2>&1 > log.txt") == [
        ("sample", "m", "--out", "s p", "--num", "2")]
    assert prdit_argvs("make demo") == [] and prdit_argvs("python benchmarks/sampling.py --sizes 64") == []


def test_blocks_commands_and_their_lines():
    markdown = "\n".join([
        "# Title",                                                  # 1
        "",
        "```bash",                                                  # 3
        "# a comment",
        "prdit sample models/m \\",                                 # 5
        "    --out samples \\",
        "    --frobnicate",
        "echo prdit sample not-a-command",
        "```",
        "",
        "```console",                                               # 11
        "$ prdit models",                                           # 12
        "prdit sample output --lines are not commands",
        "```",
        "",
        "```python",
        "prdit = 'not shell'",
        "```",
        "",
        "1. In a list:",
        "",
        "   ```sh",                                                  # 22
        "   prdit export runs/a",                                    # 23
        "   ```",
    ]) + "\n"
    found = [(c.line, c.argv) for b in blocks(markdown, Path("page.md")) for c in b.commands()]
    assert found == [(5, ("sample", "models/m", "--out", "samples", "--frobnicate")), (12, ("models",)),
                     (23, ("export", "runs/a"))]
    reported = check_commands(c for b in blocks(markdown, Path("page.md")) for c in b.commands())
    assert [p.where for p in reported] == ["page.md:5", "page.md:23"]
    assert "--frobnicate" in reported[0].error and "Missing option '--out'" in reported[1].error


def test_a_block_is_runnable_when_marked_just_before_it():
    markdown = "\n".join(["<!-- runnable -->", "", "```bash", "prdit models", "```", "",
                          "<!-- runnable -->", "Some text.", "", "```bash", "prdit models", "```",
                          "```console", "$ prdit models", "```"]) + "\n"
    assert [b.runnable for b in blocks(markdown)] == [True, False, False]
    console = Block(Path("x.md"), 1, "console", "$ prdit models \\\n  --params\nPRDiT-T/6/0\n$ echo done\n", True)
    assert console.script() == "prdit models   --params\necho done\n"
