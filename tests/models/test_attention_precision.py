"""Which operations of the attention run in bf16: the kernel alone, as the reference's autocast does."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from prdit.models.global_refiner import Attention


class RecordDtypes(TorchDispatchMode):
    """Records (operator name, dtypes of its tensor arguments) of every dispatched op."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[torch.dtype, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtypes = tuple(a.dtype for a in args if isinstance(a, torch.Tensor))
        self.calls.append((func.overloadpacket.__name__, dtypes))
        return func(*args, **(kwargs or {}))


def _run(attention: Attention, x: torch.Tensor, autocast: bool = False):
    with RecordDtypes() as record, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = attention(x)
    return out, record.calls


def _kinds(calls, names):
    return [dtypes for name, dtypes in calls if any(n in name for n in names)]


def test_only_the_attention_kernel_runs_in_bf16_on_a_bf16_device():
    torch.manual_seed(0)
    attention = Attention(48, 4, bf16_devices=("cpu",))  # CPU stands in for CUDA here
    x = torch.randn(2, 10, 48)
    out, calls = _run(attention, x)
    linears = _kinds(calls, ("addmm", "mm", "linear"))
    kernels = _kinds(calls, ("scaled_dot_product", "flash_attention", "_efficient_attention"))
    assert len(linears) >= 2 and all(d == torch.float32 for dtypes in linears for d in dtypes)  # qkv and proj
    assert kernels and all(torch.bfloat16 in dtypes and torch.float32 not in dtypes for dtypes in kernels)
    assert out.dtype == torch.float32
    # Close to the full-precision result: only the kernel lost precision.
    reference = Attention(48, 4, bf16_devices=())
    reference.load_state_dict(attention.state_dict())
    torch.testing.assert_close(out, reference(x), atol=3e-2, rtol=3e-2)


def test_fp32_devices_run_everything_in_fp32_and_bf16_autocast_covers_the_projections():
    torch.manual_seed(0)
    x = torch.randn(2, 10, 48)
    _, calls = _run(Attention(48, 4, bf16_devices=()), x)
    assert all(d == torch.float32 for _, dtypes in calls for d in dtypes)
    # train.precision=bf16 autocasts the whole network, the projections included.
    _, calls = _run(Attention(48, 4, bf16_devices=("cpu",)), x, autocast=True)
    linears = _kinds(calls, ("addmm", "mm", "linear"))
    assert linears and all(torch.bfloat16 in dtypes for dtypes in linears)
