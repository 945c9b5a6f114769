"""The learning-rate schedule: its values, what a run logs and does with it, resuming on it, and older runs
saved before it existed."""

import math

import pytest
import torch
import yaml

from prdit.errors import ConfigError
from prdit.training.checkpoint import load_checkpoint
from prdit.training.metrics import read_metrics
from prdit.training.schedule import learning_rate
from prdit.training.trainer import train


def test_the_schedules_rise_over_the_warmup_and_reach_the_final_rate_at_the_last_step():
    assert [learning_rate(k, 10, 1e-3) for k in (0, 5, 9)] == [1e-3] * 3  # constant: the paper's
    assert [learning_rate(k, 10, 1e-3, "constant", warmup_steps=4) for k in range(5)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    cosine = [learning_rate(k, 104, 1e-3, "cosine", warmup_steps=4, final_lr=1e-5) for k in range(4, 105)]
    assert cosine[0] == pytest.approx(1e-3) and cosine[50] == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine[100] == pytest.approx(1e-5) and all(a > b for a, b in zip(cosine[:100], cosine[1:]))
    assert learning_rate(105, 104, 1e-3, "cosine", final_lr=1e-5) == pytest.approx(1e-5)  # past the end: stays
    assert learning_rate(25, 100, 1e-3, "linear") == pytest.approx(7.5e-4)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        learning_rate(0, 10, 1e-3, "step")


@pytest.mark.parametrize("override, message", [("optim.schedule=exponential", "optim.schedule must be one of"),
                                               ("optim.final_lr=1", "optim.final_lr in"),
                                               ("optim.warmup_steps=-1", "optim.warmup_steps must be")])
def test_a_wrong_schedule_is_refused_before_a_run_starts(tiny_config, override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config("refused", "PRDiT-T/6/0", 16, override)


def test_a_run_steps_with_the_scheduled_rate_and_resumes_on_the_same_curve(tiny_config):
    schedule = ("optim.schedule=cosine", "optim.warmup_steps=2", "optim.final_lr=1e-4", "log.every=1")
    whole = train(tiny_config("whole", "PRDiT-T/6/0", 16, *schedule), progress=False)
    logged = [r["lr"] for r in read_metrics(whole.run_dir) if r["split"] == "train"]
    assert logged == pytest.approx([learning_rate(k, 6, 1e-3, "cosine", 2, 1e-4) for k in range(6)])
    assert logged[1] == pytest.approx(1e-3) and logged[1:] == sorted(logged[1:], reverse=True) and logged[-1] > 1e-4

    train(tiny_config("split", "PRDiT-T/6/0", 16, *schedule), progress=False, stop_after=4)
    split = train(tiny_config("split", "PRDiT-T/6/0", 16, *schedule), progress=False)
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(split.checkpoint)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name

    constant = train(tiny_config("constant", "PRDiT-T/6/0", 16, "log.every=1"), progress=False)
    assert {r["lr"] for r in read_metrics(constant.run_dir) if r["split"] == "train"} == {1e-3}
    other = load_checkpoint(constant.checkpoint)["model"]
    assert any(not torch.equal(value, a["model"][name]) for name, value in other.items())


def test_a_run_saved_before_the_schedule_existed_resumes(tiny_config):
    state = train(tiny_config("older", "PRDiT-T/6/0", 16, "train.steps=3"), progress=False)
    saved = state.run_dir / "config.yaml"
    values = yaml.safe_load(saved.read_text())
    for key in ("schedule", "warmup_steps", "final_lr"):
        del values["optim"][key]  # as an earlier release wrote it
    saved.write_text(yaml.safe_dump(values, sort_keys=False))
    assert train(tiny_config("older", "PRDiT-T/6/0", 16, "train.steps=4"), progress=False).step == 4
    assert not math.isnan(state.last_loss)
