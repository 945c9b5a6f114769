"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import signal
import subprocess
from types import SimpleNamespace

import pytest


def start_job(command: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start ``command`` as the leader of a new process group (the group a terminal's Ctrl-C reaches), with
    ``env`` added to the environment."""
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish_job(process: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for a job of :func:`start_job`; past ``timeout`` its whole group is killed and the test fails."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the job did not stop within {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tensors in tests are small, so one thread is as fast, and immune to an
    oversubscribed CPU. Folders use it for every test (``pytestmark`` or an autouse fixture in their conftest)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def jobs():
    """``jobs.start(command, env)``, ``jobs.finish(process, timeout)`` and ``jobs.run(command, env, timeout)``:
    subprocesses (torchrun jobs) that a hang cannot leave behind."""
    return SimpleNamespace(start=start_job, finish=finish_job,
                           run=lambda command, env=None, timeout=300: finish_job(start_job(command, env), timeout))


def conditional_model_folder(folder, size: int, spacing, seed: int):
    """Save a tiny conditional PRDiT-T/6/1 (both stages see the label map, phantom labels) with every weight moved
    off its initialisation (so the map changes the output), as a model folder in ``folder``."""
    import torch

    from prdit.data.labels import PHANTOM_LABELS
    from prdit.data.normalization import Normalization
    from prdit.diffusion import IaNDiffusion
    from prdit.model_folder import save_model_folder
    from prdit.models import create_model
    from prdit.models.conditioning import Conditioning

    torch.manual_seed(seed)
    model = create_model("PRDiT-T/6/1", size, conditioning=Conditioning(PHANTOM_LABELS, "both"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return save_model_folder(folder, model, IaNDiffusion(), Normalization(), spacing=spacing)


@pytest.fixture(scope="session")
def make_conditional_model():
    """:func:`conditional_model_folder`, for module fixtures that build the model they test."""
    return conditional_model_folder
