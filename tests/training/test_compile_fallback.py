"""train.compile=true where the compiled backward fails: one warning, and the run trains eagerly
to the weights of train.compile=false."""

import pytest
import torch

from prdit.training.checkpoint import load_checkpoint
from prdit.training.trainer import train


class _FailingBackward(torch.autograd.Function):
    """Identity forward whose backward raises, as a lazily compiled backward graph can."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("inductor could not compile the backward graph")


def _compiles_without_a_backward(module, **kwargs):
    return lambda *args, **kw: _FailingBackward.apply(module(*args, **kw))


def test_a_failing_compiled_backward_falls_back_to_eager_with_one_warning(tiny_config, monkeypatch):
    eager = train(tiny_config("eager", "PRDiT-T/6/0", 16, "train.steps=3", "log.val_every=0"), progress=False)
    monkeypatch.setattr(torch, "compile", _compiles_without_a_backward)
    with pytest.warns(RuntimeWarning, match="torch.compile .*backward graph.*training runs without it") as seen:
        fallen = train(tiny_config("fallen", "PRDiT-T/6/0", 16, "train.steps=3", "log.val_every=0",
                                   "train.compile=true"), progress=False)
    assert len([w for w in seen if issubclass(w.category, RuntimeWarning)]) == 1
    a, b = load_checkpoint(eager.checkpoint), load_checkpoint(fallen.checkpoint)
    assert a["step"] == b["step"] == 3
    for key in ("model", "ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name}"
