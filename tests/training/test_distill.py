"""Consistency distillation (docs/method.md §18): the tangent, the objective, a run of `prdit distill`, its
resume, and sampling the student in one to four steps."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.dataset import split_volumes
from prdit.data.io import read_volume
from prdit.data.normalization import Normalization
from prdit.data.phantoms import write_phantoms
from prdit.diffusion import ConsistencyModel, FlowMatching, IaNDiffusion, SamplerSettings, sample
from prdit.diffusion.oracles import TwoGaussians
from prdit.errors import CheckpointError, ConfigError
from prdit.model_folder import save_model_folder
from prdit.models import create_model
from prdit.training.config import load_config
from prdit.training.distill import DiscreteCDObjective, ProgressiveObjective, SCDObjective, time_tangent
from prdit.training.trainer import train


def perturbed(name: str = "PRDiT-T/6/2", size: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, input_size=size)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_jvp_equals_a_float64_finite_difference_on_a_tiny_prdit():
    model, process = perturbed(), IaNDiffusion()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 16, 16, 16, generator=gen) * 0.5
    angle, dangle = torch.tensor([0.3, 1.2]), torch.tensor([0.2, 0.4])
    dx = torch.randn(x.shape, generator=gen) * 0.1
    value, tangent = time_tangent(model, x, angle, dx, dangle, process, "jvp")
    value64, tangent64 = time_tangent(model, x, angle, dx, dangle, process, "finite-difference")
    # The JVP runs in float32 with the fused attention kernel swapped for the math one.
    assert (value - value64).abs().max() < 1e-4 * value64.abs().max()
    assert (tangent - tangent64).abs().max() < 1e-3 * tangent64.abs().max()
    assert tangent64.abs().max() > 1.0  # the check is not of a vanishing derivative
    with pytest.raises(ConfigError, match="tangent"):
        time_tangent(model, x, angle, dx, dangle, process, "backward")


def test_the_tangent_runs_in_strict_float32_where_the_attention_would_cast_to_bf16():
    """On CUDA the network's attention casts q, k, v to bf16 and matmuls take TF32; the tangent (JVP or finite
    difference) turns both off. The stand-in here: attention set to cast on the CPU, as it does on CUDA."""
    model, process = perturbed(), IaNDiffusion()
    casting = perturbed()
    attention = [m for m in casting.modules() if hasattr(m, "bf16_devices")]
    assert attention
    for m in attention:
        m.bf16_devices = ("cpu",)
    seen_tf32 = []
    casting.register_forward_hook(lambda *_: seen_tf32.append(torch.backends.cuda.matmul.allow_tf32))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 16, 16, 16, generator=gen) * 0.5
    angle, dangle = torch.tensor([0.3, 1.2]), torch.tensor([0.2, 0.4])
    dx = torch.randn(x.shape, generator=gen) * 0.1
    with torch.no_grad():
        assert not torch.equal(casting(x, angle * 500), model(x, angle * 500))  # the stand-in does cast
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        for method in ("jvp", "finite-difference"):
            strict = time_tangent(model, x, angle, dx, dangle, process, method)
            for mine, exact in zip(time_tangent(casting, x, angle, dx, dangle, process, method), strict):
                assert torch.equal(mine, exact), method
        assert seen_tf32 and not any(seen_tf32)
        assert torch.backends.cuda.matmul.allow_tf32  # restored
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert all(m.bf16_devices == ("cpu",) for m in attention)  # restored


class Pointwise(nn.Module):
    """A network that sees each voxel alone (an MLP on its value and time features), so it is the same function
    at every volume size; IaN's two heads."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(1 + 16, 64), nn.SiLU(), nn.Linear(64, 2))

    def forward(self, x: torch.Tensor, model_time: torch.Tensor) -> torch.Tensor:
        k = torch.arange(1, 9, dtype=torch.float32)
        phase = model_time.float()[:, None] / 1000.0 * k[None] * math.pi / 2
        features = torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)[:, None, None, None, :]
        voxels = torch.cat([x.permute(0, 2, 3, 4, 1), features.expand(*x.shape[:1], *x.shape[2:], 16)], dim=-1)
        return self.net(voxels).permute(0, 4, 1, 2, 3)


def test_the_scd_loss_term_is_of_order_one_and_its_gradient_independent_of_the_volume_size():
    """With the tangent g normalised by its L2 norm over all D voxels the loss term was about 1/D, the weighting's
    optimum log(1/D) and the gradient shrank with the volume; g normalised by its root mean square makes the
    term O(1) at the start (w's optimum near its initial 0) and the gradient the same at 4³ and 16³ voxels."""
    process = IaNDiffusion()
    teacher = Pointwise(seed=0)
    terms, gradients = {}, {}
    for size in (4, 16):
        student = Pointwise(seed=1)
        objective = SCDObjective(teacher, student, process, warmup_steps=10)
        objective.step = 10  # the full tangent
        gen = torch.Generator().manual_seed(2)
        x0 = torch.randn(8, 1, size, size, size, generator=gen) * 0.3
        t = objective.sample_time(8, generator=gen)
        losses = objective.training_losses(student, x0, t, objective.sample_noise(x0.shape, generator=gen))
        losses["loss"].backward()
        terms[size] = losses["loss_consistency"].item()
        gradients[size] = torch.cat([p.grad.flatten() for p in student.parameters()]).norm().item()
    for size, term in terms.items():
        assert 0.1 < term < 1.0, (size, term)  # ‖g/(rms + c)‖²/D < 1
        assert abs(math.log(term)) < 3  # the optimum of w, log of the term, lies near w's start, 0
    assert 0.5 < gradients[16] / gradients[4] < 2, gradients


def test_under_bf16_autocast_f_minus_is_the_value_of_the_students_own_pass():
    """The trainer's bf16 autocast makes the student's forward bf16; F⁻ from another pass (the JVP's float32)
    would leave that rounding in F_θ − F⁻, which must be zero in value. With an enormous c in g/(rms + c), g
    vanishes and the loss term is ‖F_θ − F⁻‖² alone."""
    teacher, student, process = perturbed(seed=0), perturbed(seed=1), IaNDiffusion()
    objective = SCDObjective(teacher, student, process, warmup_steps=10, tangent_norm=1e30)
    objective.step = 10
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(2, 1, 16, 16, 16, generator=gen) * 0.3
    t = objective.sample_time(2, generator=gen)
    noise = objective.sample_noise(x0.shape, generator=gen)
    with torch.no_grad():
        exact = student(x0, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not torch.equal(student(x0, t).float(), exact)  # autocast does round here
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = objective.training_losses(student, x0, t, noise)
    assert losses["loss_consistency"].item() < 1e-20


def test_a_student_equal_to_its_teacher_starts_as_one_ddim_step_with_zero_loss():
    teacher, process = perturbed(), IaNDiffusion()
    # One consistency step from pure noise is the teacher's x̂₀ head there (D = x̂₀ at β = π/2).
    noise = process.start((2, 1, 16, 16, 16), generator=torch.Generator().manual_seed(3))
    ian = sample(teacher, process, noise.shape, SamplerSettings().resolved(process), noise=noise)
    student = ConsistencyModel()
    one = sample(teacher, student, noise.shape, SamplerSettings(steps=1).resolved(student), noise=noise)
    with torch.no_grad():
        x0_head = process.predict(teacher(noise, torch.full((2,), 1000.0)), noise, torch.full((2,), 1000.0)).x0
    assert torch.allclose(one.x0, x0_head, atol=1e-6) and torch.equal(one.x0, one.state)
    assert not torch.allclose(one.x0, ian.x0, atol=1e-3)  # a real sampler differs: the check is not vacuous
    # With r = 0 the target g is −cos²t·(v⁻ − v_teacher) = 0 when student = teacher.
    objective = SCDObjective(teacher, teacher, process, warmup_steps=10)
    x0 = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(4)) * 0.3
    t = objective.sample_time(2, generator=torch.Generator().manual_seed(5))
    losses = objective.training_losses(teacher, x0, t, objective.sample_noise(x0.shape))
    assert losses["loss_consistency"].item() < 1e-10


def test_the_lambda_schedule_is_refused_for_a_consistency_model():
    """The lambda schedule respaces a grid's inner points in λ; at 3+ steps it replaced the consistency model's
    re-noising angles (sCM's 1.1, then evenly spaced) without a word. It is an error; IaN keeps it."""
    student = ConsistencyModel()
    for steps in (1, 2, 4):
        with pytest.raises(ConfigError, match="schedule uniform"):
            SamplerSettings(steps=steps, schedule="lambda").resolved(student)
    assert SamplerSettings(steps=4).resolved(student).schedule == "uniform"
    assert SamplerSettings(steps=4, schedule="lambda").resolved(IaNDiffusion()).schedule == "lambda"


def test_the_discrete_target_follows_the_teachers_ode_and_is_zero_for_a_consistent_student():
    """CD's teacher step carries a point of the one-volume path to the earlier angle on the same path (Heun:
    second order, so four steps over the interval are 16 times closer than one); a student that is the exact
    consistency function of that data (the oracle) then has a loss of the size of that error only, at every
    angle, including one whose interval reaches 0 (where the oracle's noise head divides by zero)."""
    from prdit.diffusion.oracles import OneVolume

    process = IaNDiffusion()
    volume = torch.randn(1, 1, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.4
    oracle = OneVolume(process, volume)
    noise = process.sample_noise((3, 1, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1000.0, 400.0, 20.0])  # the last is within one interval of 0
    errors, losses = {}, {}
    for steps in (1, 4):
        objective = DiscreteCDObjective(oracle, oracle, process, intervals=16, teacher_steps=steps)
        angle64, _, cos, sin, x_t = objective._on_path(volume.expand(3, -1, -1, -1, -1), t, noise)
        earlier = (angle64 - objective.interval).clamp_min(0.0)
        moved = objective.teacher_ode(x_t, angle64, earlier)
        c, s = (torch.cos(earlier).float().reshape(-1, 1, 1, 1, 1), torch.sin(earlier).float().reshape(-1, 1, 1, 1, 1))
        on_path = c * volume + s * noise  # the noise of a one-volume path stays fixed along its ODE
        errors[steps] = (moved - on_path).abs().max().item()
        losses[steps] = objective.training_losses(oracle, volume.expand(3, -1, -1, -1, -1), t, noise)
    assert errors[1] < 2e-3 and errors[4] < errors[1] / 10
    assert losses[1]["loss_consistency"] < 1e-3 and losses[4]["loss_consistency"] < 1e-5
    # A student that is not consistent (the oracle's heads scaled) has a loss.
    class Scaled(nn.Module):
        def forward(self, x, model_time):
            return oracle(x, model_time) * 1.1

    wrong = DiscreteCDObjective(oracle, Scaled(), process, intervals=16)
    assert wrong.training_losses(Scaled(), volume.expand(3, -1, -1, -1, -1), t, noise)["loss_consistency"] > 1e-3


def test_the_progressive_target_makes_one_ddim_step_land_where_two_teacher_steps_do():
    """On the two-Gaussian oracle (whose D is not the path's x₀, so DDIM is not exact): one DDIM step of the
    target D* from t lands on the teacher's two steps; on the one-volume oracle (DDIM exact) D* is the volume
    and the oracle as its own student has zero loss."""
    from prdit.diffusion.oracles import OneVolume

    process = IaNDiffusion()
    means = torch.stack([torch.full((1, 2, 2, 2), 0.6), torch.full((1, 2, 2, 2), -0.6)])
    teacher = TwoGaussians(process, means, 0.05**2)
    objective = ProgressiveObjective(teacher, teacher, process, start_steps=16, final_steps=4)
    assert (objective.rounds, objective.student_steps) == (2, 8)
    gen = torch.Generator().manual_seed(2)
    t = objective.sample_time(64, generator=gen)
    assert set(t.tolist()) <= {1000 * (1 - i / 8) for i in range(8)}
    x0 = means[torch.randint(0, 2, (64,), generator=gen)] + 0.05 * torch.randn((64, 1, 2, 2, 2), generator=gen)
    noise = process.sample_noise(x0.shape, generator=gen)
    angle, _, cos, sin, x_t = objective._on_path(x0, t, noise)
    interval = (math.pi / 2) / 8
    x_end = objective._ddim(objective._ddim(x_t, angle, t, angle - interval / 2), angle - interval / 2,
                            ((angle - interval / 2) * objective.to_timestep).float(), angle - interval)
    losses = objective.training_losses(teacher, x0, t, noise)
    assert losses["loss_consistency"] > 1e-6  # the teacher's one step is not its two steps
    end = (angle - interval).clamp_min(0.0)
    target = (torch.sin(angle).reshape(-1, 1, 1, 1, 1) * x_end - torch.sin(end).reshape(-1, 1, 1, 1, 1) * x_t) \
        / torch.sin(angle - end).reshape(-1, 1, 1, 1, 1)
    one_step = torch.cos(end).reshape(-1, 1, 1, 1, 1) * target \
        + torch.sin(end).reshape(-1, 1, 1, 1, 1) * (x_t - cos * target) / sin
    assert (one_step.float() - x_end).abs().max() < 1e-5
    volume = torch.randn(1, 1, 4, 4, 4, generator=gen) * 0.4
    oracle = OneVolume(process, volume)
    exact = ProgressiveObjective(oracle, oracle, process, start_steps=8, final_steps=2)
    times = torch.tensor([1000.0, 500.0, 250.0])
    assert exact.training_losses(oracle, volume.expand(3, -1, -1, -1, -1), times,
                                 process.sample_noise((3, 1, 4, 4, 4), generator=gen))["loss_consistency"] < 1e-8


def test_progressive_rounds_hand_the_student_to_the_teacher_and_survive_a_state_dict():
    teacher, student = perturbed(seed=1), perturbed(seed=2)
    objective = ProgressiveObjective(teacher, student, IaNDiffusion(), start_steps=16, final_steps=2, round_steps=5)
    steps = []
    for step in range(20):
        objective.step = step
        objective.sample_time(1)
        steps.append(objective.student_steps)
    assert steps == [8] * 5 + [4] * 5 + [2] * 10  # three rounds, the last runs on
    assert all(torch.equal(a, b) for a, b in zip(objective.teacher[0].state_dict().values(),
                                                 student.state_dict().values()))
    fresh = ProgressiveObjective(teacher, perturbed(seed=3), IaNDiffusion(), start_steps=16, final_steps=2)
    fresh.load_state_dict(objective.state_dict())
    assert fresh.round == 2 and all(torch.equal(a, b) for a, b in zip(fresh.teacher[0].state_dict().values(),
                                                                      student.state_dict().values()))
    with pytest.raises(ConfigError, match="power of 2"):
        ProgressiveObjective(teacher, student, IaNDiffusion(), start_steps=12, final_steps=4)


class TinyStudent(nn.Module):
    """An MLP on a flattened 2³ volume and time features, with IaN's two heads."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8 + 16, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 16))

    def forward(self, x: torch.Tensor, model_time: torch.Tensor) -> torch.Tensor:
        k = torch.arange(1, 9, dtype=torch.float32)
        phase = model_time.float()[:, None] / 1000.0 * k[None] * math.pi / 2
        features = torch.cat([x.flatten(1), torch.sin(phase), torch.cos(phase)], dim=1)
        return self.net(features).reshape(x.shape[0], 2, *x.shape[2:])


@pytest.mark.parametrize("objective", ["scd", "cd"])
def test_a_distilled_student_maps_noise_to_the_two_modes_in_one_step(objective):
    """Teacher: the exact denoiser of two Gaussians (means ±0.6, std 0.05 per voxel). A student regressed onto
    the teacher (as a distillation starts from the teacher's weights) sends pure noise to the mixture's mean, 0,
    in one call; distilled (and averaged, as the trainer's EMA does) by either objective, it sends it to a mode,
    half the mass to each."""
    import copy

    process, consistency = IaNDiffusion(), ConsistencyModel()
    means = torch.stack([torch.full((1, 2, 2, 2), 0.6), torch.full((1, 2, 2, 2), -0.6)])
    teacher = TwoGaussians(process, means, 0.05**2)
    torch.manual_seed(0)
    student = TinyStudent()
    gen = torch.Generator().manual_seed(0)
    noise = consistency.start((2000, 1, 2, 2, 2), generator=torch.Generator().manual_seed(9))

    def data(n: int) -> torch.Tensor:
        modes = torch.randint(0, 2, (n,), generator=gen)
        return means[modes] + 0.05 * torch.randn((n, 1, 2, 2, 2), generator=gen)

    def one_step(model: nn.Module) -> torch.Tensor:
        result = sample(model, consistency, noise.shape, SamplerSettings(steps=1).resolved(consistency), noise=noise)
        return result.x0.flatten(1).mean(dim=1)

    def near_a_mode(centre: torch.Tensor) -> float:
        return float(((centre - 0.6).abs().lt(0.15) | (centre + 0.6).abs().lt(0.15)).float().mean())

    optimizer = torch.optim.Adam(student.parameters(), lr=2e-3)
    for _ in range(400):
        x0 = data(256)
        t = torch.rand(256, generator=gen) * 1000
        x_t = process.q_sample(x0, t, process.sample_noise(x0.shape, generator=gen))
        loss = ((student(x_t, t) - teacher(x_t, t).float()) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    before = one_step(student)
    assert near_a_mode(before) == 0.0 and before.abs().median() < 0.1

    ema = copy.deepcopy(student)
    if objective == "scd":
        objective = SCDObjective(teacher, student, process, warmup_steps=100)
    else:
        objective = DiscreteCDObjective(teacher, student, process, intervals=32, teacher_steps=2)
    optimizer = torch.optim.Adam([*student.parameters(), *objective.parameters()], lr=5e-4, betas=(0.9, 0.99))
    for step in range(2000):
        objective.step = step
        x0 = data(256)
        t = objective.sample_time(256, generator=gen)
        losses = objective.training_losses(student, x0, t, objective.sample_noise(x0.shape, generator=gen))
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        with torch.no_grad():
            for averaged, live in zip(ema.parameters(), student.parameters()):
                averaged.lerp_(live, 0.01)
    after = one_step(ema)
    assert near_a_mode(after) > 0.5 and after.abs().median() > 0.5
    assert 0.4 < after.gt(0).float().mean() < 0.6


def test_the_distillation_ema_warms_up_and_forgets_its_start():
    """The EMA of a distillation starts at the teacher's weights; with the warm-up its decay rises as
    (1 + step)/(10 + step) up to optim.ema_decay, so after 100 steps the start's share is 9!·100!/109! ≈ 2·10⁻¹³
    (with a constant 0.9999 it would be 99 %, and 13 % after 20,000 steps)."""
    from prdit.training.config import DistillConfig
    from prdit.training.ema import EMA, warmed_up_decay

    assert DistillConfig().ema_warmup
    shares = {}
    for warm in (True, False):
        start = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(start.weight)
        ema = EMA(start, 0.9999)
        with torch.no_grad():
            start.weight.fill_(1.0)  # the student has moved away from the start, and stays there
        for step in range(100):
            ema.update(warmed_up_decay(0.9999, step) if warm else None)
        shares[warm] = 1.0 - ema.model.weight.item()
    assert shares[True] < 1e-6 and shares[False] > 0.98  # float32 resolves 6·10⁻⁸ below 1
    assert warmed_up_decay(0.9999, 10**6) == 0.9999 and warmed_up_decay(0.99, 0) == 0.1


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """Six 16³ phantoms with a split, and a tiny IaN teacher folder."""
    root = tmp_path_factory.mktemp("distill")
    write_phantoms(6, 16, root / "data", seed=0)
    split_volumes(root / "data", val_fraction=0.34, seed=42, out_dir=root / "data")
    save_model_folder(root / "teacher", perturbed("PRDiT-T/6/1"), IaNDiffusion(), Normalization(),
                      spacing=(2.0, 2.0, 2.0))
    return root


def distill_args(root, name: str, steps: int) -> list[str]:
    return [str(root / "teacher"), f"data.train={root / 'data/train.txt'}", f"data.val={root / 'data/val.txt'}",
            f"run.root={root / 'runs'}", f"run.name={name}", f"train.steps={steps}", "train.global_batch=2",
            "log.every=1", "log.checkpoint_every=2", "log.val_every=2", "log.preview_every=0",
            "log.tensorboard=false", "distill.objective=scd", "distill.warmup_steps=2", "--quiet"]


def test_prdit_distill_runs_resumes_bitwise_and_its_export_samples_in_one_to_four_steps(setting, tmp_path):
    runner = CliRunner()
    straight = runner.invoke(app, ["distill", *distill_args(setting, "straight", 4)])
    assert straight.exit_code == 0, (straight.output, straight.exception)
    half = runner.invoke(app, ["distill", *distill_args(setting, "resumed", 2)])
    assert half.exit_code == 0, (half.output, half.exception)
    rest = runner.invoke(app, ["distill", *distill_args(setting, "resumed", 4)])
    assert rest.exit_code == 0, (rest.output, rest.exception)
    ckpts = [torch.load(setting / "runs" / name / "checkpoints" / "step_00000004.pt", weights_only=False)
             for name in ("straight", "resumed")]
    for key in ("model", "ema", "objective"):
        for name, tensor in ckpts[0][key].items():
            assert torch.equal(tensor, ckpts[1][key][name]), (key, name)
    assert ckpts[0]["config"]["process"]["kind"] == "consistency"
    teacher = perturbed("PRDiT-T/6/1").state_dict()
    assert any(not torch.equal(v, w) for v, w in zip(ckpts[0]["model"].values(), teacher.values()))
    # The EMA warms up: after 4 steps it holds the student's weights, not the teacher's it started from (a
    # constant decay of 0.99, the config's, would still hold 96 % of the teacher).
    moved = {name: ckpts[0]["model"][name] - teacher[name] for name in teacher}
    left = {name: ckpts[0]["ema"][name] - ckpts[0]["model"][name] for name in teacher}
    assert sum(v.norm() ** 2 for v in left.values()) < 0.1 * sum(v.norm() ** 2 for v in moved.values())

    model_dir = tmp_path / "student"
    assert runner.invoke(app, ["export", str(setting / "runs" / "straight"), "--out", str(model_dir)]).exit_code == 0
    assert json.loads((model_dir / "config.json").read_text())["process"]["kind"] == "consistency"
    default = runner.invoke(app, ["sample", str(model_dir), "--out", str(tmp_path / "default"), "--num-volumes", "2",
                                  "--quiet"])  # no --steps: the process's own default
    assert default.exit_code == 0, (default.output, default.exception)
    manifest = json.loads((tmp_path / "default" / "manifest.json").read_text())
    assert (manifest["sampler"], manifest["steps"]) == ("consistency", ConsistencyModel.sample_steps)
    volumes = {}
    for steps in (1, 2, 4):
        out = tmp_path / f"steps{steps}"
        result = runner.invoke(app, ["sample", str(model_dir), "--out", str(out), "--num-volumes", "1", "--steps",
                                     str(steps), "--quiet"])
        assert result.exit_code == 0, (result.output, result.exception)
        volumes[steps] = read_volume(out / "sample_00000.nii.gz").array
    assert not np.array_equal(volumes[1], volumes[2]) and not np.array_equal(volumes[2], volumes[4])
    guided = runner.invoke(app, ["reconstruct", str(model_dir), "--task", "sr", "--simulate-from",
                                 str(setting / "data" / "phantom_00000.nii.gz"), "--out", str(tmp_path / "r")])
    assert isinstance(guided.exception, ConfigError) and "no guided reconstruction" in str(guided.exception)


def test_a_discrete_time_distillation_resumes_bitwise_and_differs_from_scd(setting):
    runner = CliRunner()
    cd = ["distill.objective=cd", "distill.intervals=8", "distill.teacher_steps=2"]
    for name, steps in (("cd-straight", 4), ("cd-resumed", 2), ("cd-resumed", 4)):
        result = runner.invoke(app, ["distill", *distill_args(setting, name, steps), *cd])
        assert result.exit_code == 0, (result.output, result.exception)
    straight, resumed = (torch.load(setting / "runs" / name / "checkpoints" / "step_00000004.pt", weights_only=False)
                         for name in ("cd-straight", "cd-resumed"))
    for key in ("model", "ema", "objective"):
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), (key, name)
    assert straight["config"]["distill"]["objective"] == "cd"
    scd = runner.invoke(app, ["distill", *distill_args(setting, "scd-4", 4)])
    assert scd.exit_code == 0, (scd.output, scd.exception)
    other = torch.load(setting / "runs" / "scd-4" / "checkpoints" / "step_00000004.pt", weights_only=False)
    assert any(not torch.equal(v, other["model"][k]) for k, v in straight["model"].items())
    for bad in ("distill.objective=ct", "distill.intervals=0", "distill.teacher_steps=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config("phantoms-tiny-distill", [f"data.train={setting / 'data/train.txt'}",
                                                  f"distill.teacher={setting / 'teacher'}", "distill.objective=cd", bad])


def test_a_progressive_distillation_resumes_bitwise_across_a_round_and_samples_with_ddim(setting, tmp_path):
    runner = CliRunner()
    pd = ["distill.objective=pd", "distill.intervals=8", "distill.final_steps=2", "distill.round_steps=2"]
    for name, steps in (("pd-straight", 6), ("pd-resumed", 4), ("pd-resumed", 6)):  # resumed in the second round
        result = runner.invoke(app, ["distill", *distill_args(setting, name, steps), *pd])
        assert result.exit_code == 0, (result.output, result.exception)
    straight, resumed = (torch.load(setting / "runs" / name / "checkpoints" / "step_00000006.pt", weights_only=False)
                         for name in ("pd-straight", "pd-resumed"))
    for key in ("model", "ema"):
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), (key, name)
    assert straight["config"]["process"]["kind"] == "ian"
    assert straight["objective"]["_extra_state"]["round"] == 1
    model_dir = tmp_path / "pd"
    assert runner.invoke(app, ["export", str(setting / "runs" / "pd-straight"), "--out", str(model_dir)]).exit_code == 0
    assert json.loads((model_dir / "config.json").read_text())["process"]["kind"] == "ian"
    result = runner.invoke(app, ["sample", str(model_dir), "--out", str(tmp_path / "s"), "--num-volumes", "1",
                                 "--sampler", "dpm++1", "--steps", "2", "--quiet"])
    assert result.exit_code == 0, (result.output, result.exception)
    with pytest.raises(ConfigError, match="power of 2"):
        load_config("phantoms-tiny-distill", [f"data.train={setting / 'data/train.txt'}", "process.kind=ian",
                                              f"distill.teacher={setting / 'teacher'}", "distill.objective=pd",
                                              "distill.intervals=12"])
    with pytest.raises(ConfigError, match="process.kind=ian"):
        load_config("phantoms-tiny-distill", [f"data.train={setting / 'data/train.txt'}",
                                              f"distill.teacher={setting / 'teacher'}", "distill.objective=pd"])


def test_the_students_process_follows_the_objective_wherever_it_is_set(setting, tmp_path):
    import yaml

    from prdit.training.cli import distill_config
    from prdit.training.config import resolve_config_path

    data = f"data.train={setting / 'data/train.txt'}"
    values = yaml.safe_load(resolve_config_path("phantoms-tiny-distill").read_text())  # process.kind: consistency
    values["distill"].update(objective="pd", intervals=8, final_steps=2)
    yaml_pd = tmp_path / "pd.yaml"
    yaml_pd.write_text(yaml.safe_dump(values))
    kinds = {"default": distill_config("phantoms-tiny-distill", setting / "teacher", [data]).process.kind,
             "cd": distill_config("phantoms-tiny-distill", setting / "teacher", [data, "distill.objective=cd"]),
             "pd": distill_config("phantoms-tiny-distill", setting / "teacher",
                                  [data, "distill.objective='pd'", "distill.intervals=8", "distill.final_steps=2"]),
             "yaml pd": distill_config(yaml_pd, setting / "teacher", [data])}
    assert {name: k if isinstance(k, str) else k.process.kind for name, k in kinds.items()} == {
        "default": "ian", "cd": "consistency", "pd": "ian", "yaml pd": "ian"}  # the default: progressive
    assert kinds["yaml pd"].distill.objective == "pd"
    assert kinds["yaml pd"].process.settings == kinds["pd"].process.settings  # the teacher's
    with pytest.raises(ConfigError, match="process.kind=ian"):  # a kind the user names is kept, and checked
        distill_config(yaml_pd, setting / "teacher", [data, "process.kind=consistency"])


def test_distillation_needs_an_ian_teacher_and_a_consistency_student(setting, tmp_path):
    with pytest.raises(ConfigError, match="prdit distill MODEL_DIR"):
        train(load_config("phantoms-tiny-distill", [f"data.train={setting / 'data/train.txt'}", "data.val=",
                                                    f"run.root={tmp_path / 'runs'}"]), progress=False)
    with pytest.raises(ConfigError, match="process.kind=consistency"):
        load_config("phantoms-tiny-stage2", [f"data.train={setting / 'data/train.txt'}",
                                             f"distill.teacher={setting / 'teacher'}", "distill.objective=scd"])
    flow = tmp_path / "flow"
    torch.manual_seed(0)
    save_model_folder(flow, create_model("PRDiT-T/6/1", input_size=16, out_channels=1), FlowMatching(),
                      Normalization(), spacing=(2.0, 2.0, 2.0))
    result = CliRunner().invoke(app, ["distill", str(flow), f"data.train={setting / 'data/train.txt'}",
                                      f"run.root={tmp_path / 'runs'}", "--quiet"])
    assert isinstance(result.exception, ConfigError) and "only IaN models" in str(result.exception)
    config = load_config("phantoms-tiny-distill", [f"data.train={setting / 'data/train.txt'}",
                                                   f"distill.teacher={flow}", f"run.root={tmp_path / 'runs'}",
                                                   "model.name=PRDiT-T/6/1", "model.input_size=16", "data.val=",
                                                   "train.steps=1", "log.tensorboard=false", "distill.objective=scd"])
    with pytest.raises(CheckpointError, match="must be an IaN model"):
        train(config, progress=False)
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)


def test_a_run_saved_before_the_distill_section_existed_resumes(setting):
    import yaml

    args = [f"data.train={setting / 'data/train.txt'}", "data.val=", f"run.root={setting / 'runs'}",
            "run.name=older", "model.name=PRDiT-T/6/0", "model.input_size=16", "train.global_batch=2",
            "log.tensorboard=false", "log.preview_every=0", "log.checkpoint_every=1"]
    train(load_config("phantoms-tiny-stage1", [*args, "train.steps=1"]), progress=False)
    saved = setting / "runs" / "older" / "config.yaml"
    values = yaml.safe_load(saved.read_text())
    del values["distill"]  # as an earlier release wrote it
    saved.write_text(yaml.safe_dump(values, sort_keys=False))
    assert train(load_config("phantoms-tiny-stage1", [*args, "train.steps=2"]), progress=False).step == 2


DISTILL_DDP_JOB = """
import os, sys
import torch
from prdit.training import trainer
from prdit.training.cli import teacher_overrides
from prdit.training.config import load_config

captured = {}
original = trainer.EMA
class KeepEMA(original):
    def __init__(self, model, decay):
        super().__init__(model, decay)
        captured["model"] = model
trainer.EMA = KeepEMA
import prdit.training.distill as distill
build = distill.distill_objective
def keep_objective(*args, **kwargs):
    captured["objective"] = build(*args, **kwargs)
    return captured["objective"]
distill.distill_objective = keep_objective
teacher = sys.argv[1]
trainer.train(load_config("phantoms-tiny-distill", [*teacher_overrides(teacher), *sys.argv[2:]]), progress=False)
rank = os.environ["RANK"]
torch.save({"model": captured["model"].state_dict(), "objective": captured["objective"].state_dict()},
           os.path.join(os.environ["OUT"], f"rank{rank}.pt"))
"""


def test_distillation_under_torchrun_keeps_every_rank_identical(setting, tmp_path, jobs):
    """Two gloo processes: the student and the adaptive weighting (outside the DDP module, its gradients
    averaged by hand) stay equal on both ranks."""
    import sys

    job = tmp_path / "job.py"
    job.write_text(DISTILL_DDP_JOB)
    args = [f"data.train={setting / 'data/train.txt'}", "data.val=", f"run.root={tmp_path / 'runs'}",
            "train.steps=3", "train.global_batch=2", "log.every=1", "log.preview_every=0", "log.tensorboard=false",
            "distill.objective=scd"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29571", str(job),
               str(setting / "teacher"), *args]
    result = jobs.run(command, {"OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for part in ("model", "objective"):
        for name, tensor in ranks[0][part].items():
            assert torch.equal(tensor, ranks[1][part][name]), (part, name)
    assert ranks[0]["objective"]["weighting.linear.bias"].abs().item() > 0  # the weighting did learn
