"""The process group a torchrun job joins follows the device of the work: gloo for CPU work (on a CUDA machine
too, where more processes than GPUs may run), NCCL with the rank's own GPU for CUDA work. Observed on a CPU
machine by making CUDA look present and recording what joining the group would do."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from typer.testing import CliRunner

from prdit.cli import app
from prdit.distributed import setup_distributed


class Joined(Exception):
    """Stands in for joining the group: the command stops there."""


@pytest.fixture
def cuda_machine(monkeypatch):
    """Rank 3 of a 4-process job on a machine that reports CUDA; returns what joining the group did."""
    joined: dict = {"set_device": []}

    def init_process_group(backend: str, **kwargs) -> None:
        joined["backend"] = backend
        raise Joined

    for name, value in (("RANK", "3"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "3")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", joined["set_device"].append)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    return joined


@pytest.mark.parametrize("command", [
    ["evaluate", "--fake", "{tmp}/fake", "--real", "{tmp}/real"],
    ["sample", "{tmp}/model", "--out", "{tmp}/out"],
    ["reconstruct", "{tmp}/model", "--task", "sr", "--simulate-from", "{tmp}/cases", "--out", "{tmp}/out"],
])
def test_cpu_work_on_a_cuda_machine_joins_with_gloo_and_claims_no_gpu(cuda_machine, command, tmp_path):
    result = CliRunner().invoke(app, [*(part.format(tmp=tmp_path) for part in command), "--device", "cpu"])
    assert isinstance(result.exception, Joined), (result.output, result.exception)
    assert cuda_machine["backend"] == "gloo"
    assert cuda_machine["set_device"] == []  # rank 3 of a one-GPU machine has no cuda:3


@pytest.mark.parametrize("device", ["auto", "cuda", None])
def test_cuda_work_joins_with_nccl_on_the_ranks_own_gpu(cuda_machine, device):
    with pytest.raises(Joined):
        setup_distributed(device=device)
    assert cuda_machine["backend"] == "nccl"
    assert cuda_machine["set_device"] == [torch.device("cuda:3")]
