import numpy as np
import pytest
import torch

from prdit import PRDiTPipeline
from prdit.diffusion import IaNDiffusion
from prdit.errors import ConfigError
from prdit.generation.pipeline import PRDiTPipelineOutput
from prdit.generation.sampling import numerics, resolve_precision, volume_generators, volume_seed

STEPS = 4  # the first two are predictor–corrector steps (they draw re-noising), the last two Euler


@pytest.fixture(scope="module")
def pipe(model_dir):
    return PRDiTPipeline.from_pretrained(model_dir, device="cpu")


def test_volume_seeds_are_deterministic_distinct_and_checked():
    seeds = [volume_seed(0, i) for i in range(100)]
    assert seeds == [volume_seed(0, i) for i in range(100)]
    assert len(set(seeds)) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert volume_seed(1, 0) not in seeds
    with pytest.raises(ConfigError, match=">= 0"):
        volume_seed(-1, 0)


def test_per_volume_noise_draws_each_row_from_its_own_generator():
    diffusion = IaNDiffusion(noise_std=0.5)
    noise = diffusion.sample_noise((2, 1, 4, 4, 4), generator=volume_generators([11, 22]))
    for row, seed in enumerate([11, 22]):
        expected = torch.randn((1, 1, 4, 4, 4), generator=torch.Generator().manual_seed(seed)) * 0.5
        assert torch.equal(noise[row:row + 1], expected)
    with pytest.raises(ConfigError, match="3 volumes requested with 2 generators"):
        diffusion.sample_noise((3, 1, 4, 4, 4), generator=volume_generators([11, 22]))


def test_returns_numpy_hu_or_model_range_tensor(pipe):
    hu = pipe(num_volumes=2, steps=STEPS, seed=3)
    assert isinstance(hu, PRDiTPipelineOutput)
    assert isinstance(hu.volumes, np.ndarray) and hu.volumes.dtype == np.float32
    assert hu.volumes.shape == (2, 16, 16, 16)
    assert hu.seeds == [volume_seed(3, 0), volume_seed(3, 1)]
    # the perturbed model overshoots [-1, 1]: HU are clipped to the window, both ends reached
    assert hu.volumes.min() == -1000.0 and hu.volumes.max() == 1000.0
    model = pipe(num_volumes=2, steps=STEPS, seed=3, output_type="model", batch_size=2)
    assert isinstance(model.volumes, torch.Tensor) and model.volumes.shape == (2, 1, 16, 16, 16)
    assert model.volumes.abs().max() > 1.0 and model.volumes.std() > 0.1
    np.testing.assert_array_equal(hu.volumes, pipe.to_hu(model.volumes))
    np.testing.assert_allclose(hu.volumes, np.clip(model.volumes[:, 0].numpy(), -1, 1) * 1000.0, atol=1e-3)
    volumes, seeds = pipe(num_volumes=1, steps=2, seed=3, return_dict=False)
    assert volumes.shape == (1, 16, 16, 16) and seeds == [volume_seed(3, 0)]


@pytest.mark.parametrize("sampler", ["pc", "euler"])
def test_a_volume_is_bit_identical_in_any_batch(pipe, sampler):
    full = pipe(num_volumes=3, steps=STEPS, sampler=sampler, seed=7, batch_size=3, output_type="model").volumes
    alone = pipe(steps=STEPS, sampler=sampler, seed=7, indices=[1], output_type="model").volumes
    pairs = pipe(num_volumes=3, steps=STEPS, sampler=sampler, seed=7, batch_size=2, output_type="model").volumes
    assert torch.equal(alone[0], full[1])
    assert torch.equal(pairs, full)
    assert not torch.equal(full[0], full[1])
    # one network call per batch instead: the same volumes up to float rounding
    batched = pipe(num_volumes=3, steps=STEPS, sampler=sampler, seed=7, batch_size=3, output_type="model",
                   exact=False).volumes
    torch.testing.assert_close(batched, full, atol=1e-3, rtol=0)


def test_generators_seed_and_global_rng(pipe):
    def run(**kwargs):
        return pipe(num_volumes=2, steps=2, output_type="model", **kwargs)

    a = run(generator=torch.Generator().manual_seed(5))
    b = run(generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.volumes, b.volumes) and a.seeds == b.seeds
    # one generator per volume, used as given
    listed = run(generator=volume_generators(a.seeds))
    assert torch.equal(listed.volumes, a.volumes) and listed.seeds == [None, None]
    torch.manual_seed(9)
    c = run()
    torch.manual_seed(9)
    assert torch.equal(run().volumes, c.volumes)


def test_pipeline_argument_errors(pipe):
    with pytest.raises(ConfigError, match="sampler 'ddpm' does not apply to the ian process"):
        pipe(steps=2, sampler="ddpm")
    with pytest.raises(ConfigError, match="unknown output_type"):
        pipe(steps=2, output_type="pil")
    with pytest.raises(ConfigError, match="indices must be >= 0"):
        pipe(steps=2, seed=0, indices=[-1])
    with pytest.raises(ConfigError, match="pass seed= as well"):
        pipe(steps=2, indices=[1])
    with pytest.raises(ConfigError, match="3 generators given for 2 volumes"):
        pipe(num_volumes=2, steps=2, generator=volume_generators([1, 2, 3]))
    with pytest.raises(ConfigError, match="precision 'bf16' needs a CUDA device"):
        PRDiTPipeline.from_pretrained(pipe.source, device="cpu", precision="bf16")
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        PRDiTPipeline.from_pretrained(pipe.source, device="cpu", precision="fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(model_dir):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        PRDiTPipeline.from_pretrained(model_dir, device="cuda")


def test_geometry_centres_the_volume_with_the_training_spacing(pipe, spacing):
    volume = pipe.to_volume(np.zeros((16, 12, 8), np.float32))  # (z, y, x)
    assert volume.spacing == spacing
    np.testing.assert_allclose(volume.origin, [-3.5 * 2.0, -5.5 * 1.5, -7.5 * 2.5])
    np.testing.assert_array_equal(volume.direction, np.eye(3))


def test_numerics_restores_the_attention_setting(pipe):
    attention = [m for m in pipe.model.modules() if hasattr(m, "bf16_devices")]
    assert attention and all(m.bf16_devices == ("cuda",) for m in attention)
    with numerics(pipe.model, "fp32"):
        assert not any(m.bf16_devices for m in attention)
        assert not torch.backends.cuda.matmul.allow_tf32
    assert all(m.bf16_devices == ("cuda",) for m in attention)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "tf32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sampling_in_each_precision(model_dir):
    pipes = {p: PRDiTPipeline.from_pretrained(model_dir, device="cuda", precision=p) for p in ("auto", "fp32", "bf16")}
    out = {p: pipe(num_volumes=2, steps=STEPS, seed=1, batch_size=2, output_type="model").volumes
           for p, pipe in pipes.items()}
    for volumes in out.values():
        assert volumes.device.type == "cpu" and volumes.dtype == torch.float32 and torch.isfinite(volumes).all()
    alone = pipes["auto"](steps=STEPS, seed=1, indices=[1], output_type="model").volumes
    assert torch.equal(alone[0], out["auto"][1])
    # same CUDA noise: TF32 and bf16 stay close to strict fp32
    assert (out["auto"] - out["fp32"]).abs().mean() < 0.02 * out["fp32"].abs().mean()
    assert (out["bf16"] - out["fp32"]).abs().mean() < 0.1 * out["fp32"].abs().mean()


def test_compile_falls_back_to_eager_with_a_warning(model_dir, monkeypatch):
    eager = PRDiTPipeline.from_pretrained(model_dir, device="cpu")
    expected = eager(num_volumes=2, steps=STEPS, seed=5, output_type="model").volumes

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler for the inductor backend")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: broken)
    pipe = PRDiTPipeline.from_pretrained(model_dir, device="cpu")
    with pytest.warns(RuntimeWarning, match="torch.compile is not available here .*no C\\+\\+ compiler.*sampling runs"):
        out = pipe(num_volumes=2, steps=STEPS, seed=5, output_type="model", compile=True).volumes
    assert torch.equal(out, expected)
    assert "_prdit_compiled" not in pipe.model.state_dict() and list(pipe.model.state_dict()) == list(
        eager.model.state_dict())


def test_sampling_defaults_to_the_measured_steps_and_reconstruction_to_the_reference(pipe, monkeypatch):
    from prdit.generation import pipeline as module

    assert (pipe.settings().sampler, pipe.settings().steps) == ("pc", IaNDiffusion.sample_steps) == ("pc", 100)
    assert pipe.settings(sampler="euler").steps == 100 and pipe.settings(steps=1000).steps == 1000
    seen = []

    def record(model, process, generators, settings, device, hooks=(), labels=None):
        seen.append(settings)
        raise RuntimeError("recorded")

    monkeypatch.setattr(module, "sample_volumes", record)
    measurement = torch.zeros(1, 1, 4, 4, 4)
    with pytest.raises(RuntimeError, match="recorded"):
        pipe.reconstruct("sr", measurement)
    with pytest.raises(RuntimeError, match="recorded"):
        pipe.reconstruct("sr", measurement, steps=30)
    assert [s.steps for s in seen] == [IaNDiffusion.guided_steps, 30] == [1000, 30]
    from prdit.inverse.guidance import task_settings

    assert pipe.guided_settings(task_settings("sr")).steps == 1000


def test_a_folder_of_the_current_format_must_name_its_process(model_dir, tmp_path):
    import json
    import shutil

    from prdit.errors import CheckpointError

    folder = shutil.copytree(model_dir, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] >= 2
    del config["process"]["kind"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"{folder}.*do not name the process"):
        PRDiTPipeline.from_pretrained(folder, device="cpu")


def test_guided_reconstruction_asks_the_process_whether_it_applies(model_dir, monkeypatch):
    pipe = PRDiTPipeline.from_pretrained(model_dir, device="cpu")
    assert pipe.process.supports_guidance
    monkeypatch.setattr(IaNDiffusion, "guided_steps", None)  # a process without guided sampling
    with pytest.raises(ConfigError, match="guided reconstruction needs a process with guided sampling"):
        pipe.reconstruct("sr", torch.zeros(1, 1, 4, 4, 4))


@pytest.mark.parametrize("sampler", ["pc", "euler", "heun", "dpm++2m"])
def test_the_pipeline_returns_the_sampler_output(pipe, sampler):
    """What a user gets is the volume the sampler's output names: by default its ``DEFAULT_OUTPUT`` (for the ODE
    samplers the final state, their solution; not the last x̂₀ taken one step before), else the one asked for."""
    from prdit.diffusion.samplers import DEFAULT_OUTPUT
    from prdit.generation.sampling import sample_volumes

    settings = pipe.settings(sampler=sampler, steps=STEPS, seed=3)
    result = sample_volumes(pipe.model, pipe.process, volume_generators([volume_seed(3, 0)]), settings, pipe.device)
    by_output = {"state": result.state, "x0": result.x0}
    assert settings.output == DEFAULT_OUTPUT[sampler]
    assert torch.equal(pipe(settings=settings, output_type="model").volumes, by_output[settings.output])
    for output, expected in by_output.items():
        volumes = pipe(sampler=sampler, steps=STEPS, seed=3, output=output, output_type="model").volumes
        assert torch.equal(volumes, expected), output
    assert not torch.equal(result.state, result.x0)
