"""Ctrl-C in any phase of a step resumes bitwise; micro-batches accumulate to one big batch."""

from __future__ import annotations

import pytest
import torch

import prdit.training.previews as previews
import prdit.training.trainer as trainer
from prdit.diffusion import IaNDiffusion
from prdit.errors import PRDiTError
from prdit.model_folder import CHECKPOINT_DIR
from prdit.training.checkpoint import latest_checkpoint, load_checkpoint
from prdit.training.metrics import MetricsLogger, read_metrics
from prdit.training.run_dir import run_directory
from prdit.training.trainer import train

STEPS = 6


def _final_state(config) -> dict:
    return load_checkpoint(latest_checkpoint(run_directory(config) / CHECKPOINT_DIR))


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == STEPS
    for key in ("model", "ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs"
    for index, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), f"optimizer {index}.{name} differs"
    assert torch.equal(a["generators"][0], b["generators"][0])


@pytest.fixture(scope="module")
def stage1(phantom_lists, tmp_path_factory):
    from prdit.training.config import load_config

    train_list, val_list = phantom_lists
    root = tmp_path_factory.mktemp("stage1")
    config = load_config(None, [
        "run.name=s1", f"run.root={root}", "model.name=PRDiT-T/6/0", "model.input_size=16",
        f"data.train={train_list}", f"data.val={val_list}", "data.num_workers=0", "data.cache=true",
        "train.global_batch=4", "train.steps=2", "log.val_every=0", "log.tensorboard=false"])
    train(config, progress=False)
    return run_directory(config)


def _stage2(tiny_config, name: str, stage1, *overrides: str):
    return tiny_config(name, "PRDiT-T/6/2", 16, f"train.steps={STEPS}", f"train.init_from={stage1}",
                       "log.every=2", "log.val_every=4", "log.checkpoint_every=3", "log.preview_every=4",
                       "log.preview_steps=2", "log.preview_num=1", *overrides)


def _interrupt_on_call(monkeypatch, owner, name: str, call: int) -> None:
    original = getattr(owner, name)
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupting)


# (what is patched, which call is interrupted): the 5th forward is step 5 itself; validation,
# the preview and the logging of step 4 come after step 4 finished; the checkpoint of step 3.
PHASES = {
    "forward": (IaNDiffusion, "training_losses", 5),
    "validation": (trainer, "validate", 1),
    "preview": (previews, "save_training_preview", 1),
    "logging": (MetricsLogger, "log", 2),
    "checkpoint": (trainer, "save_atomic", 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(PHASES))
def test_interrupt_in_any_phase_then_resume_equals_the_uninterrupted_run(tiny_config, stage1, monkeypatch, phase):
    reference = _stage2(tiny_config, "reference", stage1)
    train(reference, progress=False)
    interrupted = _stage2(tiny_config, "interrupted", stage1)
    with monkeypatch.context() as patch:
        _interrupt_on_call(patch, *PHASES[phase])
        with pytest.raises(PRDiTError, match="interrupted; checkpoint saved at step"):
            train(interrupted, progress=False)
    saved = _final_state(interrupted)["step"]
    assert saved == {"forward": 4, "validation": 4, "preview": 4, "logging": 4, "checkpoint": 3}[phase]
    train(interrupted, progress=False)
    _assert_states_equal(_final_state(reference), _final_state(interrupted))


def test_micro_batches_accumulate_to_one_big_batch(tiny_config):
    """Per-process batch 4 as 4 x 1 and as 3 + 1 volumes: the same losses and, after three AdamW
    steps, the same weights up to float round-off (AdamW amplifies it where gradients are ~0)."""
    runs = {name: tiny_config(name, "PRDiT-T/6/0", 16, "train.steps=3", "log.every=1", "log.val_every=0",
                              *([f"train.micro_batch={micro}"] if micro else []))
            for name, micro in (("whole", 0), ("ones", 1), ("uneven", 3))}
    states, losses = {}, {}
    for name, config in runs.items():
        train(config, progress=False)
        states[name] = _final_state(config)["model"]
        losses[name] = [row["loss"] for row in read_metrics(run_directory(config)) if row["split"] == "train"]
    for name in ("ones", "uneven"):
        assert losses[name] == pytest.approx(losses["whole"], rel=1e-6, abs=0)
        for key, value in states["whole"].items():
            torch.testing.assert_close(states[name][key], value, rtol=1e-3, atol=1e-5)
