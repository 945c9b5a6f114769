"""benchmarks/distillation.py: the step cost is timed for the objective the student was distilled with."""

import json
from pathlib import Path

from benchmarks.distillation import recorded_overrides

REPO = Path(__file__).resolve().parents[2]


def test_the_step_cost_follows_the_recorded_objective_not_the_default():
    """An sCD run recorded while sCD was the default lists no objective among its overrides; timing its step
    with today's default (progressive distillation) misreported it."""
    record = json.loads((REPO / "benchmarks/reference_model/distilled/training.json").read_text())
    assert recorded_overrides(record)[0] == "distill.objective=scd"
    assert recorded_overrides({"objective": "pd", "overrides": ["optim.lr=5e-5"]}) == [
        "distill.objective=pd", "optim.lr=5e-5"]
    assert recorded_overrides(None) == []
