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


@pytest.fixture(scope="session")
def jobs():
    """``jobs.start(command, env)``, ``jobs.finish(process, timeout)`` and ``jobs.run(command, env, timeout)``:
    subprocesses (torchrun jobs) that a hang cannot leave behind."""
    return SimpleNamespace(start=start_job, finish=finish_job,
                           run=lambda command, env=None, timeout=300: finish_job(start_job(command, env), timeout))
