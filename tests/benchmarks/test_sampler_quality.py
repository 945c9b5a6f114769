"""``benchmarks/sampler_quality.py``: the ODE error compares a row's volumes with the solved states, rows are
cached per batch and output and resume, the fresh real phantoms are not training phantoms, and ``separated``
compares intervals."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prdit.errors import ConfigError  # noqa: E402

script = importlib.import_module("benchmarks.sampler_quality")


def test_ode_error_compares_the_row_volumes_with_the_reference_final_states():
    shape = (2, 1, 4, 4, 4)
    reference = script.Row(volumes=torch.zeros(shape), state=torch.ones(shape))
    row = script.Row(volumes=torch.full(shape, 1.5), state=torch.zeros(shape))
    assert script.ode_error(row, reference) == pytest.approx(0.5)


def test_ode_error_takes_the_volumes_of_the_reference_only():
    reference = script.Row(volumes=torch.zeros(2, 1, 4, 4, 4), state=torch.ones(2, 1, 4, 4, 4))
    volumes = torch.cat([torch.full((2, 1, 4, 4, 4), 1.25), torch.full((6, 1, 4, 4, 4), 9.0)])
    row = script.Row(volumes=volumes, state=torch.zeros(2, 1, 4, 4, 4))
    assert script.ode_error(row, reference) == pytest.approx(0.25)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from benchmarks.common import smoke_model_folder
    from prdit.generation.pipeline import PRDiTPipeline

    return PRDiTPipeline.from_pretrained(smoke_model_folder(tmp_path_factory.mktemp("model") / "model"), device="cpu")


@pytest.mark.parametrize("output", ["state", "x0"])
def test_rows_are_the_pipeline_volumes_with_the_final_state(pipe, output):
    settings = pipe.settings(sampler="heun", steps=3, seed=0, batch_size=2, exact=False, output=output)
    result = script.sample_row(pipe, settings, 3)
    assert torch.equal(result.volumes, pipe(num_volumes=3, settings=settings, output_type="model").volumes)
    assert torch.equal(result.volumes, result.state if output == "state" else result.x0)
    # Heun's last step is an Euler step to t = 0 from the x̂₀ and ε̂ at T/3: its state is not that x̂₀.
    assert result.state.shape == result.x0.shape and (result.state - result.x0).abs().mean() > 1e-3
    later = script.sample_row(pipe, settings, 2, first=1)
    assert torch.equal(later.volumes, result.volumes[1:])


def test_a_cached_row_resumes_where_it_stopped_and_is_not_sampled_again(pipe, tmp_path, monkeypatch):
    settings = pipe.settings(sampler="euler", steps=2, seed=0, batch_size=2, exact=False)
    first, seconds = script.cached_row(pipe, settings, 5, 2, tmp_path)
    assert first.volumes.shape[0] == 5 and first.state.shape[0] == 2 and seconds > 0
    assert torch.equal(first.volumes, script.sample_row(pipe, settings, 5).volumes)
    batches = sorted(script.row_folder(tmp_path, settings).glob("volumes-*.pt"))
    assert len(batches) == 3  # [0, 2), [2, 4), [4, 5)
    batches[1].unlink()  # a run stopped before its second batch was written

    sampled = []
    real_sample_row = script.sample_row
    monkeypatch.setattr(script, "sample_row", lambda p, s, n, first=0: sampled.append((first, n))
                        or real_sample_row(p, s, n, first))
    again, _ = script.cached_row(pipe, settings, 5, 2, tmp_path)
    assert sampled == [(2, 2)]
    assert torch.equal(again.volumes, first.volumes) and torch.equal(again.state, first.state)
    script.cached_row(pipe, settings, 5, 2, tmp_path)
    assert sampled == [(2, 2)]  # everything cached: a re-score samples nothing
    # Other settings are another row.
    script.cached_row(pipe, pipe.settings(sampler="euler", steps=3, seed=0, batch_size=2, exact=False), 2, 0, tmp_path)
    assert sampled == [(2, 2), (0, 2)]


def test_the_output_is_part_of_a_row_and_one_sampling_fills_the_rows_of_every_output(pipe, tmp_path, monkeypatch):
    state, x0 = (pipe.settings(sampler="heun", steps=2, seed=0, batch_size=2, exact=False, output=output)
                 for output in ("state", "x0"))
    assert script.row_folder(tmp_path, state) != script.row_folder(tmp_path, x0)
    first, _ = script.cached_row(pipe, state, 3, 0, tmp_path)
    sampled = []
    real_sample_row = script.sample_row
    monkeypatch.setattr(script, "sample_row", lambda p, s, n, first=0: sampled.append((first, n))
                        or real_sample_row(p, s, n, first))
    other, _ = script.cached_row(pipe, x0, 3, 0, tmp_path)
    assert sampled == []  # the state row's sampling saved the x0 row's volumes too
    assert torch.equal(other.volumes, real_sample_row(pipe, x0, 3).x0)
    assert torch.equal(first.volumes, real_sample_row(pipe, state, 3).state)
    assert not torch.equal(first.volumes, other.volumes)


def test_fresh_phantoms_are_not_the_training_phantoms(tmp_path):
    training = {"seed": 0, "phantoms": 256}
    with pytest.raises(ConfigError, match="training phantom"):
        script.check_not_training_phantoms(0, 300, training)
    script.check_not_training_phantoms(script.PHANTOM_SEED, 512, training)

    real, floor = script.fresh_real_sets(tmp_path, real_count=3, floor_count=2, size=16, seed=script.PHANTOM_SEED)
    assert len(real) == 3 and len(floor) == 2 and not set(real) & set(floor)
    assert all(path.is_file() for path in real + floor)


def test_separated_says_which_intervals_are_disjoint():
    def row(kid, kid_std, kid_interval, fid_interval):
        return {"kid_x1e3": {"value": kid, "std": kid_std, "interval": kid_interval},
                "fid_infinity_x1e3": {"value": 0.0, "interval": fid_interval}}

    a = row(10.0, 1.0, [9.0, 11.0], [100.0, 200.0])
    b = row(15.0, 1.0, [11.5, 18.0], [150.0, 300.0])
    verdict = script.separated(a, b)
    assert verdict["KID ± 2 std"] is True and verdict["KID"] is True and verdict["FID-inf"] is False
    assert verdict["MMD"] is None  # not measured in one of the rows
    assert script.separated(b, a) == verdict
    # 10 ± 2 and 13 ± 2 overlap
    assert script.separated(row(10.0, 1.0, None, None), row(13.0, 1.0, None, None))["KID ± 2 std"] is False
    # With every subset the whole set KID has no spread: no verdict rather than two points that always differ.
    assert script.separated(row(10.0, 0.0, None, None), row(13.0, 0.0, None, None))["KID ± 2 std"] is None
    rounding = {"kid_x1e3": {"value": 10.0, "std": 4e-14, "whole_sets": True, "interval": None}}
    assert script.separated(rounding, {"kid_x1e3": {**rounding["kid_x1e3"], "value": 13.0}})["KID ± 2 std"] is None
    assert script.separated(row(1.0, 1.0, [0.0, 2.0], None), row(1.0, 1.0, [2.0, 3.0], None))["KID"] is False


def test_rows_named_as_the_table_names_them_are_read_back():
    import argparse

    rows = script.parse_rows("pc@100, dpm++2m:lambda@25:x0,heun@25:state")
    assert rows == [("pc", "uniform", 100, None), ("dpm++2m", "lambda", 25, "x0"), ("heun", "uniform", 25, "state")]
    assert [script.row_label(s, sch, n, output=o) for s, sch, n, o in rows[:2]] == \
        ["pc@100", "dpm++2m:lambda@25:x0"]
    for bad in ("pc", "pc@", "@25", "pc@many"):
        with pytest.raises(argparse.ArgumentTypeError, match="sampler"):
            script.parse_rows(bad)
