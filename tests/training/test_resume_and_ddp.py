"""A run killed with SIGKILL resumes exactly, and torchrun with two CPU processes (gloo) trains
in step, skipping a non-finite step together."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from prdit.training.checkpoint import list_checkpoints, load_checkpoint

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
