"""``benchmarks/solver_order.py`` measures how each solver converges to the ODE's solution at t = 0."""

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

script = importlib.import_module("benchmarks.solver_order")


@pytest.fixture(scope="module")
def ian():
    return script.two_gaussians("ian", volumes=64, reference_steps=1000)


def test_euler_measures_first_order_and_heun_second(ian):
    # The error is that of the final state, the ODE's solution at t = 0: Euler is a first-order solver. The last
    # x̂₀ (the network's prediction one step before t = 0) would add where that prediction was taken (order 1.31).
    euler = script.measure(*ian, "euler", "uniform", script.STEPS)
    heun = script.measure(*ian, "heun", "uniform", script.STEPS)
    assert 0.8 < euler["order"] < 1.1
    assert 1.8 < heun["order"] < 2.2
    assert euler["network_calls"] == script.STEPS and heun["network_calls"] == [2 * n - 1 for n in script.STEPS]
