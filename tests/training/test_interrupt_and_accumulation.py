"""Ctrl-C in any phase of a step stops at the end of that step and resumes bitwise; micro-batches
accumulate to one big batch."""

from __future__ import annotations

import os
import signal

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


def _signal_on_call(monkeypatch, owner, name: str, call: int, after: bool = False,
                    signum: int = signal.SIGINT) -> None:
    """Send this process ``signum`` (as Ctrl-C does) at the ``call``-th call of ``owner.name``,
    before it runs or right after it returned."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def signalling(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call and not after:
            os.kill(os.getpid(), signum)
        out = original(*args, **kwargs)
        if calls["n"] == call and after:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(owner, name, signalling)


# (what is patched, which call is interrupted, the step saved): the 5th forward is step 5 itself;
# validation, the preview and the logging of step 4 come after step 4's update; the checkpoint
# write of step 3. The run stops when the step in progress has finished all of it.
PHASES = {
    "forward": (IaNDiffusion, "training_losses", 5, 5),
    "validation": (trainer, "validate", 1, 4),
    "preview": (previews, "save_training_preview", 1, 4),
    "logging": (MetricsLogger, "log", 2, 4),
    "checkpoint": (trainer, "save_atomic", 1, 3),
}


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(PHASES))
def test_interrupt_in_any_phase_then_resume_equals_the_uninterrupted_run(tiny_config, stage1, monkeypatch, phase):
    reference = _stage2(tiny_config, "reference", stage1)
    train(reference, progress=False)
    interrupted = _stage2(tiny_config, "interrupted", stage1)
    owner, name, call, saved = PHASES[phase]
    with monkeypatch.context() as patch:
        _signal_on_call(patch, owner, name, call)
        with pytest.raises(PRDiTError, match=f"interrupted; checkpoint saved at step {saved} in "):
            train(interrupted, progress=False)
    assert _final_state(interrupted)["step"] == saved
    train(interrupted, progress=False)
    _assert_states_equal(_final_state(reference), _final_state(interrupted))


def _stage1_config(root, name: str, phantom_lists):
    from prdit.training.config import load_config

    train_list, val_list = phantom_lists
    return load_config(None, [
        f"run.name={name}", f"run.root={root}", "model.name=PRDiT-T/6/0", "model.input_size=16",
        f"data.train={train_list}", "data.num_workers=0", "data.cache=true", "data.flip=true",
        "train.global_batch=4", f"train.steps={STEPS}", "optim.lr=1e-3", "optim.ema_decay=0.9",
        "log.every=2", "log.checkpoint_every=3", "log.val_every=0", "log.tensorboard=false"])


@pytest.fixture(scope="module")
def stage1_reference(phantom_lists, tmp_path_factory) -> dict:
    config = _stage1_config(tmp_path_factory.mktemp("reference"), "reference", phantom_lists)
    train(config, progress=False)
    return _final_state(config)


# Step 5's update has happened but the step is not counted yet: right after optimizer.step(),
# and in the recording of the RNG state at its end (call 1 is the start of the run).
UPDATE_PHASES = {
    "after optimizer.step": (torch.optim.AdamW, "step", 5, True),
    "before the step count": (trainer, "capture_rng_state", 6, False),
}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(UPDATE_PHASES))
def test_an_interrupt_after_the_update_saves_that_step_with_its_weights(phantom_lists, stage1_reference, tmp_path,
                                                                       monkeypatch, phase, signum):
    config = _stage1_config(tmp_path, "interrupted", phantom_lists)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the tests run as a background job
    with monkeypatch.context() as patch:
        _signal_on_call(patch, *UPDATE_PHASES[phase], signum=signum)
        with pytest.raises(PRDiTError, match="interrupted; checkpoint saved at step 5 in "):
            train(config, progress=False)
    assert _final_state(config)["step"] == 5
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are given back
    train(config, progress=False)
    _assert_states_equal(stage1_reference, _final_state(config))


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


def test_a_second_ctrl_c_stops_at_once_without_saving_the_step(phantom_lists, tmp_path, monkeypatch):
    config = _stage1_config(tmp_path, "twice", phantom_lists)
    original, calls = IaNDiffusion.training_losses, {"n": 0}

    def interrupted_twice(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(IaNDiffusion, "training_losses", interrupted_twice)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(PRDiTError, match="interrupted again: stopped at once during step 5, without saving it"):
        train(config, progress=False)
    assert _final_state(config)["step"] == 3  # the last checkpoint written before
    assert signal.getsignal(signal.SIGINT) is before
