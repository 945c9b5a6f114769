"""torch.compile falls back to eager, with one warning, whichever call it fails on."""

import warnings

import pytest
import torch

from prdit.device import compiled


class FailsOnNewShape:
    """A stand-in for a compiled module: runs the module for the first input shape it sees and
    raises on any other, as a recompile for a new shape can."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.shape, self.calls = module, None, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.shape is None:
            self.shape = x.shape
        if x.shape != self.shape:
            raise RuntimeError("inductor failed to recompile for a new shape")
        return self.module(x) + 1.0  # marks the results of the compiled path


@pytest.fixture
def layer() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def test_a_recompile_failure_on_a_later_call_falls_back_to_eager_with_one_warning(layer, monkeypatch):
    fakes = []
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: fakes.append(FailsOnNewShape(module)) or fakes[-1])
    call = compiled(layer, "sampling")
    a, b = torch.randn(2, 4), torch.randn(5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(call(a), layer(a) + 1.0)  # compiled, no warning
        assert torch.equal(call(a), layer(a) + 1.0)
    expected = "torch.compile .*recompile for a new shape.*sampling runs without it"
    with pytest.warns(RuntimeWarning, match=expected) as seen:
        assert torch.equal(call(b), layer(b))  # eager result for the call that failed
        assert torch.equal(call(a), layer(a))  # and eager from then on, for every shape
        assert torch.equal(call(b), layer(b))
    assert len([w for w in seen if issubclass(w.category, RuntimeWarning)]) == 1
    assert fakes[0].calls == 3  # the compiled path is not tried again after it failed


def test_an_error_of_the_inputs_is_raised_and_keeps_the_compiled_path(layer, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: lambda x: module(x) + 1.0)
    call = compiled(layer, "sampling")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
            call(torch.randn(2, 7))  # eager raises the same: the inputs are wrong, not the compiler
        assert torch.equal(call(torch.ones(1, 4)), layer(torch.ones(1, 4)) + 1.0)


def test_a_failing_torch_compile_call_itself_falls_back(layer, monkeypatch):
    def refuse(module, **kwargs):
        raise RuntimeError("no C++ compiler for the inductor backend")

    monkeypatch.setattr(torch, "compile", refuse)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler.*training runs without it"):
        call = compiled(layer, "training")
    x = torch.randn(2, 4)
    assert torch.equal(call(x), layer(x))
