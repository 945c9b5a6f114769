"""The ODE error of ``benchmarks/sampler_quality.py`` compares solved states, not the last x̂₀."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prdit.diffusion import SampleResult  # noqa: E402

script = importlib.import_module("benchmarks.sampler_quality")


def test_ode_error_compares_the_final_states_not_the_last_x0():
    shape = (2, 1, 4, 4, 4)
    reference = SampleResult(x0=torch.zeros(shape), state=torch.ones(shape))
    row = SampleResult(x0=torch.zeros(shape), state=torch.full(shape, 1.5))
    assert script.ode_error(row, reference) == pytest.approx(0.5)


def test_rows_are_the_pipeline_volumes_with_the_final_state(tmp_path):
    from prdit.generation.pipeline import PRDiTPipeline

    model_dir, _ = script.smoke_inputs(tmp_path)
    pipe = PRDiTPipeline.from_pretrained(model_dir, device="cpu")
    settings = pipe.settings(sampler="heun", steps=3, seed=0, batch_size=2, exact=False)
    result = script.sample_row(pipe, settings, 3)
    assert torch.equal(result.x0, pipe(num_volumes=3, settings=settings, output_type="model").volumes)
    # Heun's last step is an Euler step to t = 0 from the x̂₀ and ε̂ at T/3: its state is not that x̂₀.
    assert result.state.shape == result.x0.shape and (result.state - result.x0).abs().mean() > 1e-3
