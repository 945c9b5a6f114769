"""A run killed with SIGKILL resumes exactly, and torchrun with two CPU processes (gloo) trains
in step, skipping a non-finite step together."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from prdit.training.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def overrides(config) -> list[str]:
    flat = []
    for section, values in config.to_dict().items():
        for key, value in values.items():
            flat.append(f"{section}.{key}={json.dumps(value)}")
    return flat


def run_script(body: str, tmp_path, args: list[str], launcher: list[str] | None = None):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(body))
    command = (launcher or [sys.executable]) + [str(script), *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


TRAIN_JOB = """
    import os, signal, sys
    import torch
    from prdit.training import checkpoint
    from prdit.training.config import load_config
    from prdit.training.trainer import train

    kill_at = int(os.environ.get("KILL_AT_STEP", "0"))
    original = torch.save

    def save_then_die(obj, handle, *args, **kwargs):
        # Die half-way through writing the checkpoint of `kill_at`: the file is left partial.
        if isinstance(obj, dict) and obj.get("step") == kill_at:
            handle.write(b"partial checkpoint bytes")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(obj, handle, *args, **kwargs)

    torch.save = save_then_die
    train(load_config(None, sys.argv[1:]), progress=False)
"""


def test_sigkill_during_a_checkpoint_write_then_resume_gives_the_uninterrupted_weights(tiny_config, tmp_path):
    base = tiny_config("x", "PRDiT-T/6/2", 16, "train.steps=9", "log.checkpoint_every=3", "log.val_every=0")
    stage1 = tiny_config("s1", "PRDiT-T/6/0", 16)
    from prdit.training.trainer import train

    stage1_run = train(stage1, progress=False).run_dir
    args = overrides(base) + [f"train.init_from={stage1_run}"]

    straight = run_script(TRAIN_JOB, tmp_path, args + ["run.name=straight"])
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed = subprocess.run([sys.executable, str(tmp_path / "job.py"), *args, "run.name=killed"],
                            env={**ENV, "KILL_AT_STEP": "6"}, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9
    ckpt_dir = tmp_path / "runs" / "killed" / "checkpoints"
    assert [s for s, _ in list_checkpoints(ckpt_dir)] == [3]  # the step-6 write never replaced anything
    load_checkpoint(ckpt_dir / "step_00000003.pt")  # and the previous checkpoint is intact

    resumed = run_script(TRAIN_JOB, tmp_path, args + ["run.name=killed"])  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = load_checkpoint(tmp_path / "runs" / "straight" / "checkpoints" / "step_00000009.pt")
    b = load_checkpoint(ckpt_dir / "step_00000009.pt")
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    assert b["data_position"] == a["data_position"]


DDP_JOB = """
    import os, sys
    import torch
    from prdit.diffusion import IaNDiffusion
    from prdit.training.config import load_config
    from prdit.training.trainer import train

    rank = int(os.environ["RANK"])
    original = IaNDiffusion.training_losses
    calls = {"n": 0}

    def nan_on_rank1_step3(self, *args, **kwargs):
        calls["n"] += 1
        losses = original(self, *args, **kwargs)
        if rank == 1 and calls["n"] == 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    IaNDiffusion.training_losses = nan_on_rank1_step3
    from prdit.training import trainer
    captured = {}
    original_ema = trainer.EMA
    class KeepEMA(original_ema):
        def __init__(self, model, decay):
            super().__init__(model, decay)
            captured["model"] = model
    trainer.EMA = KeepEMA
    train(load_config(None, sys.argv[1:]), progress=False)
    torch.save(captured["model"].state_dict(), os.path.join(os.environ["OUT"], f"rank{rank}.pt"))
"""


def test_torchrun_two_cpu_processes_train_in_step_and_skip_together(tiny_config, tmp_path):
    config = tiny_config("ddp", "PRDiT-T/6/0", 16, "train.steps=6", "log.every=6")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    ENV["OUT"] = str(tmp_path)
    result = run_script(DDP_JOB, tmp_path, overrides(config), launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    rows = [json.loads(line) for line in (tmp_path / "runs" / "ddp" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows[-1]["skipped"] == 1
    ckpt = load_checkpoint(tmp_path / "runs" / "ddp" / "checkpoints" / "step_00000006.pt")
    assert ckpt["meta"]["world_size"] == 2 and len(ckpt["generators"]) == 2


DDP_INTERRUPT_JOB = """
    import os, signal, sys, time
    import torch
    from prdit.data.dataset import VolumeDataset
    from prdit.diffusion import IaNDiffusion
    from prdit.errors import PRDiTError
    from prdit.training.config import load_config
    from prdit.training.trainer import train

    rank = int(os.environ["RANK"])
    GROUP_SIGNALS = {"terminal": signal.SIGINT, "scheduler": signal.SIGTERM}  # Ctrl-C; a job's end
    who, at = os.environ.get("SIGNAL_FROM", ""), int(os.environ.get("SIGNAL_AT_STEP", "0"))
    original = IaNDiffusion.training_losses
    calls = {"n": 0}

    def signalling(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at and who == f"rank{rank}":
            os.kill(os.getpid(), signal.SIGINT)  # this rank alone, in the forward of step `at`
        return original(self, *args, **kwargs)

    original_item = VolumeDataset.__getitem__
    items = {"n": 0}

    def loading(self, index):
        items["n"] += 1
        in_worker = torch.utils.data.get_worker_info() is not None
        if in_worker and rank == 0 and who in GROUP_SIGNALS and items["n"] == 2 * at - 1:
            # torchrun and every process of the job, while rank 0 waits for its worker to load the
            # volumes of step `at` (the step before has had time to end)
            time.sleep(2.0)
            os.killpg(os.getpgid(0), GROUP_SIGNALS[who])
        return original_item(self, index)

    IaNDiffusion.training_losses = signalling
    VolumeDataset.__getitem__ = loading
    try:
        train(load_config(None, sys.argv[1:]), progress=False)
        outcome = "finished"
    except PRDiTError as err:
        outcome = str(err)
    with open(os.path.join(os.environ["OUT"], f"rank{rank}.txt"), "w") as handle:
        handle.write(outcome)
"""


@pytest.fixture(scope="module")
def ddp_interrupt_reference(phantom_lists, tmp_path_factory):
    """An uninterrupted 2-process run with a checkpoint after every step: {step: checkpoint}."""
    root = tmp_path_factory.mktemp("ddp_reference")
    job = root / "job.py"
    job.write_text(textwrap.dedent(DDP_INTERRUPT_JOB))
    args = _ddp_interrupt_args(phantom_lists, root)
    result = subprocess.run(_torchrun(29534) + [str(job), *args], env={**ENV, "OUT": str(root)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {step: load_checkpoint(path) for step, path in list_checkpoints(root / "runs" / "ddp" / "checkpoints")}


def _torchrun(port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]


def _ddp_interrupt_args(phantom_lists, root) -> list[str]:
    train_list, _ = phantom_lists
    return ["run.name=ddp", f"run.root={root / 'runs'}", "model.name=PRDiT-T/6/0", "model.input_size=16",
            f"data.train={train_list}", "data.num_workers=1", "data.cache=true", "data.flip=true",
            "train.global_batch=4", "train.steps=5", "optim.lr=1e-3", "log.every=1", "log.checkpoint_every=1",
            "log.keep_last=10", "log.val_every=0", "log.tensorboard=false"]


@pytest.mark.parametrize("who", ["rank1", "terminal", "scheduler"])
def test_a_signal_under_torchrun_saves_the_step_in_progress_on_every_rank_and_exits(
        phantom_lists, ddp_interrupt_reference, tmp_path, who, jobs):
    """Ctrl-C to one rank, or Ctrl-C or SIGTERM to the whole job (torchrun forwards it to the
    workers a second time, and the DataLoader workers receive it too): both ranks finish the step
    in progress (step 3), save it and stop."""
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(DDP_INTERRUPT_JOB))
    args = _ddp_interrupt_args(phantom_lists, tmp_path) + ["log.checkpoint_every=5"]
    env = {**ENV, "OUT": str(tmp_path), "SIGNAL_FROM": who, "SIGNAL_AT_STEP": "3"}
    result = jobs.run(_torchrun(29535) + [str(job), *args], env, timeout=120)
    outcomes = [(tmp_path / f"rank{rank}.txt").read_text() if (tmp_path / f"rank{rank}.txt").exists() else
                result.stderr[-3000:] for rank in (0, 1)]
    match = re.match(r"interrupted; checkpoint saved at step (\d) in ", outcomes[0])
    assert match, outcomes
    assert outcomes[1].startswith(f"interrupted; checkpoint saved at step {match.group(1)} by rank 0"), outcomes
    step = int(match.group(1))
    assert step == 3
    if who == "rank1":
        assert result.returncode == 0, result.stderr[-3000:]
    ckpt_dir = tmp_path / "runs" / "ddp" / "checkpoints"
    assert [s for s, _ in list_checkpoints(ckpt_dir)] == [step]
    saved, expected = load_checkpoint(checkpoint_path(ckpt_dir, step)), ddp_interrupt_reference[step]
    for key in ("model", "ema"):
        for name, value in expected[key].items():
            assert torch.equal(saved[key][name], value), f"{key}.{name}"
    for index, state in expected["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(saved["optimizer"]["state"][index][name], value), f"optimizer {index}.{name}"
    assert all(torch.equal(a, b) for a, b in zip(saved["generators"], expected["generators"]))
    assert saved["data_position"] == expected["data_position"]


# Each rank trains under its own run.root, read from the environment: on one machine, the node-local folders of a
# job spread over several nodes, where only rank 0's holds the checkpoints it wrote.
PER_RANK_ROOT_JOB = """
    import os, sys
    from prdit.training.config import load_config
    from prdit.training.trainer import train

    root = os.environ[f"ROOT_RANK{os.environ['RANK']}"]
    train(load_config(None, [*sys.argv[1:], f"run.root={root}"]), progress=False)
"""


@pytest.mark.parametrize("having", [0, 1])
def test_ranks_that_see_different_checkpoints_resume_from_rank_0s(tiny_config, tmp_path, having, jobs):
    """One rank sees a checkpoint of the run, the other does not: every rank takes rank 0's decision (resume, or
    start afresh), so the ranks run the same steps and the job ends instead of leaving one rank waiting."""
    from prdit.training.trainer import train

    config = tiny_config("ddp", "PRDiT-T/6/0", 16, "train.steps=2", "log.every=2", "log.checkpoint_every=2",
                         "log.val_every=0")
    train(config, progress=False)
    seen, unseen = tmp_path / "runs", tmp_path / "elsewhere"
    roots = {having: seen, 1 - having: unseen}
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(PER_RANK_ROOT_JOB))
    args = [a for a in overrides(config) if not a.startswith("run.root=")] + ["train.steps=4"]
    result = jobs.run(_torchrun(29536 + having) + [str(job), *args],
                      {**ENV, **{f"ROOT_RANK{rank}": str(root) for rank, root in roots.items()}}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = roots[0] / "ddp" / "checkpoints"
    assert load_checkpoint(checkpoints / "step_00000004.pt")["meta"]["world_size"] == 2
    # resumed from the one-process checkpoint of step 2 where rank 0 saw it, else trained afresh by the job
    assert load_checkpoint(checkpoints / "step_00000002.pt")["meta"]["world_size"] == (1 if having == 0 else 2)
    # rank 0 alone writes the run: rank 1's folder holds what it held before
    assert [step for step, _ in list_checkpoints(roots[1] / "ddp" / "checkpoints")] == ([] if having == 0 else [2])
