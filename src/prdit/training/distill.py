"""Continuous-time consistency distillation (sCD) of a trained IaN model (docs/method.md §18).

IaN with noise std σ is TrigFlow with ``σ_d = σ`` and angle ``t = β``. The student has the teacher's
network and starts from its weights; ``σ_d·F`` is a network's velocity ``v̂ = cos t·ε̂ − sin t·x̂₀`` from
its two heads (per radian), and its consistency function is ``f = cos t·x_t − sin t·σ_d·F``. Per example:

* ``τ ~ N(P_mean, P_std²)``, ``t = arctan(e^τ/σ_d)``, ``x_t = cos t·x₀ + sin t·z`` (z of std σ_d);
* ``dx_t/dt = v̂_teacher(x_t, t)`` (no gradients);
* ``cos t·sin t·dF⁻/dt``: the JVP of the stop-gradient student with tangents ``(cos t·sin t·dx_t/dt,
  cos t·sin t)`` in ``(x_t, t)`` (the network's time input is the timestep ``2T·t/π``, so its tangent is
  scaled by ``2T/π``), by ``torch.func.jvp`` with the math attention kernel (fused kernels have no
  forward-mode derivative), or by a central finite difference in float64 (``tangent: finite-difference``);
* ``g = −cos²t·(σ_d·F⁻ − dx_t/dt) − r·(cos t·sin t·x_t + σ_d·cos t·sin t·dF⁻/dt)``, ``r`` warmed up
  linearly from 0 to 1, normalised per example by its root mean square, ``g ← g/(‖g‖/√D + c)`` (FastGen's
  sCM does the same): its elements are O(1) whatever the volume size D;
* loss ``e^{−w(t)}/D·‖F_θ − F⁻ − g‖² + w(t)`` with a learned weighting ``w`` (:class:`AdaptiveWeight`),
  averaged over the batch. ``F_θ − F⁻`` is zero in value and carries the gradient: ``F⁻`` is ``F_θ`` of the
  same forward pass, detached.

With g normalised by its full L2 norm instead (elements about 1/√D) the loss term was about 1/D, w's optimum
log(1/D) (−10 at 32³) and, with w starting at 0, the gradients D times smaller than the weighting means them
to be; normalised by the root mean square the term starts near 1 and w's optimum near 0.

A teacher conditioned on label maps (docs/method.md §20) gives a student conditioned the same way: the teacher,
the student's pass with gradients and its stop-gradient passes all see the same map of each example, the map after
the trainer's label dropout, so the student learns the null-map prediction too and classifier-free guidance works
with it. The teacher's targets are the teacher guided at ``guidance_scale`` w (through
:class:`~prdit.diffusion.guidance.CFGDenoiser`: w = 1 one conditional call, any other w the null and conditional
calls in one batch); the student's conditional output learns the guided one, so it is sampled at w = 1.

The JVP runs in strict float32 (with bf16 the JVP is unstable): no autocast, no TF32, attention in float32 on
every device (:func:`~prdit.models.global_refiner.numerics`); the teacher runs in float32 without autocast; the
student's forward with gradients follows the trainer's precision, and ``F⁻`` is its value.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from prdit.diffusion import IaNDiffusion, Prediction
from prdit.diffusion.guidance import PLAIN_GUIDANCE_SCALE, CFGDenoiser
from prdit.errors import ConfigError
from prdit.models.embeddings import FREQUENCY_DIM, timestep_sinusoid
from prdit.models.global_refiner import numerics

TANGENTS = ("jvp", "finite-difference")
OBJECTIVES = ("scd", "cd", "pd")


def student_process_kind(objective: str) -> str:
    """The process a student of ``objective`` is trained and sampled as: progressive distillation trains an IaN
    model for DDIM, sCD and CD a consistency model."""
    return "ian" if objective == "pd" else "consistency"


class AdaptiveWeight(nn.Module):
    """``w(t)``: a linear layer on the sinusoid of the network's time input, zero at the start."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(FREQUENCY_DIM, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, model_time: torch.Tensor) -> torch.Tensor:
        """``[B]`` network times -> ``[B]`` log-weights."""
        return self.linear(timestep_sinusoid(model_time))[:, 0]


def velocity(output: torch.Tensor, x_t: torch.Tensor, angle: torch.Tensor, process: IaNDiffusion) -> torch.Tensor:
    """``v̂ = cos t·ε̂ − sin t·x̂₀`` of a network ``output`` on ``x_t`` at angles ``angle`` ``[B]`` (radians)."""
    heads: Prediction = IaNDiffusion.predict(process, output, x_t, angle * (2 * process.num_timesteps / math.pi))
    cos, sin = _per_sample(torch.cos(angle), x_t), _per_sample(torch.sin(angle), x_t)
    return cos * heads.noise - sin * heads.x0


def with_labels(network: Callable, labels: torch.Tensor | None) -> Callable:
    """``network`` as an ``(x, t)`` callable with the label maps ``labels`` ``[B, D, H, W]`` bound (unchanged
    without maps)."""
    return network if labels is None else functools.partial(network, labels=labels)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return _broadcast(values, like).to(like.dtype)


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample ``values`` ``[B]`` shaped to broadcast against ``like`` ``[B, ...]`` (dtype kept: masks too)."""
    return values.reshape((-1,) + (1,) * (like.ndim - 1))


@contextlib.contextmanager
def math_attention():
    """Scaled-dot-product attention through its math kernel, which has forward-mode derivatives."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def time_tangent(model: nn.Module, x_t: torch.Tensor, angle: torch.Tensor, dx: torch.Tensor, dangle: torch.Tensor,
                 process: IaNDiffusion, method: str = "jvp",
                 labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A network's ``σ_d·F`` at ``(x_t, angle)`` (``[B, C, D, H, W]``, angles ``[B]`` in radians; a conditional
    network's label maps ``labels`` ``[B, D, H, W]``, held fixed) and its directional derivative along
    ``(dx, dangle)``: ``jvp`` (forward-mode, float32) or ``finite-difference`` (central, float64). Either runs
    without autocast or TF32, its attention in the inputs' precision (on CUDA the network's attention otherwise
    casts to bf16)."""
    scale = 2 * process.num_timesteps / math.pi
    if method not in TANGENTS:
        raise ConfigError(f"unknown tangent method '{method}'; choose one of {', '.join(TANGENTS)}")
    with numerics(model, "fp32"), torch.autocast(x_t.device.type, enabled=False):
        if method == "jvp":
            return _jvp_tangent(model, x_t, angle, dx, dangle, process, scale, labels)
        return _finite_difference_tangent(model, x_t, angle, dx, dangle, process, scale, labels)


def _jvp_tangent(model: nn.Module, x_t: torch.Tensor, angle: torch.Tensor, dx: torch.Tensor, dangle: torch.Tensor,
                 process: IaNDiffusion, scale: float,
                 labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`time_tangent` by forward-mode AD in float32, through the math attention kernel."""
    from torch.func import jvp

    network = with_labels(model, labels)

    def field(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return velocity(network(x, a * scale).float(), x, a, process)

    with math_attention():
        return jvp(field, (x_t.float(), angle.float()), (dx.float(), dangle.float()))


def _finite_difference_tangent(model: nn.Module, x_t: torch.Tensor, angle: torch.Tensor, dx: torch.Tensor,
                               dangle: torch.Tensor, process: IaNDiffusion, scale: float,
                               labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`time_tangent` by a central difference of step 1e-4 in float64."""
    from torch.func import functional_call

    state = {k: v.double() for k, v in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items()}
    kwargs = {} if labels is None else {"labels": labels}

    def field64(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return velocity(functional_call(model, state, (x, a * scale), kwargs), x, a, process)

    h = 1e-4
    x64, a64, dx64, da64 = x_t.double(), angle.double(), dx.double(), dangle.double()
    value = field64(x64, a64)
    ahead, behind = field64(x64 + h * dx64, a64 + h * da64), field64(x64 - h * dx64, a64 - h * da64)
    return value.float(), ((ahead - behind) / (2 * h)).float()


class DistillObjective(nn.Module):
    """What the trainer optimises when it distils: time and noise draws and the losses of a batch.

    ``teacher``: the IaN network (kept frozen, float32); ``student``: the network being trained (its
    stop-gradient copy makes the target); the module's own parameters are the weighting ``w``. A conditional
    teacher's targets for label maps are the teacher guided at ``guidance_scale`` (w = 1: the plain conditional
    teacher); the losses take each example's map, the same for teacher and student.
    """

    loss_names = ("loss", "loss_consistency", "weight_log")

    def __init__(self, teacher: nn.Module, student: nn.Module, process: IaNDiffusion, p_mean: float = -1.0,
                 p_std: float = 1.4, guidance_scale: float = PLAIN_GUIDANCE_SCALE) -> None:
        super().__init__()
        if not p_std > 0:
            raise ConfigError("distill.p_std must be > 0")
        if not math.isfinite(guidance_scale):
            raise ConfigError(f"distill.guidance_scale must be a finite number, got {guidance_scale}")
        if guidance_scale != PLAIN_GUIDANCE_SCALE:
            teacher.require_conditioning()  # guidance mixes label-map outputs: an unconditional teacher has none
        self.teacher = [copy.deepcopy(teacher).float().eval().requires_grad_(False)]  # a list: not a submodule
        self.student = [student]
        self.process = process
        self.p_mean, self.p_std = p_mean, p_std
        self.guidance_scale = float(guidance_scale)
        self.weighting = AdaptiveWeight()
        self.step = 0  # the trainer sets the step about to run (for warm-ups)
        self.to_timestep = 2 * process.num_timesteps / math.pi  # network time per radian

    def to(self, *args, **kwargs):
        """Move the weighting and the teacher."""
        self.teacher[0].to(*args, **kwargs)
        return super().to(*args, **kwargs)

    @property
    def sigma(self) -> float:
        return self.process.sigma

    def sample_time(self, batch: int, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Network times ``[batch]`` (timesteps, fractional) of ``t = arctan(e^τ/σ_d)``, ``τ ~ N(P_mean, P_std²)``."""
        gen_device = generator.device if generator is not None else device
        tau = torch.randn(batch, generator=generator, device=gen_device, dtype=torch.float64) * self.p_std + self.p_mean
        angle = torch.atan(torch.exp(tau) / self.sigma)
        return (angle * (2 * self.process.num_timesteps / math.pi)).float().to(device)

    def sample_noise(self, shape, device="cpu", generator=None, dtype=torch.float32) -> torch.Tensor:
        """``z`` of standard deviation σ_d."""
        return self.process.sample_noise(shape, device, generator, dtype)

    def _on_path(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
        """Angles ``[B]`` (float64, float32), their per-sample cos and sin, and ``x_t``."""
        angle64 = t.double() * (math.pi / (2 * self.process.num_timesteps))
        cos, sin = _per_sample(torch.cos(angle64), x0), _per_sample(torch.sin(angle64), x0)
        return angle64, angle64.float(), cos, sin, cos * x0 + sin * noise

    @property
    def teacher_guidance(self) -> float:
        """The guidance scale of the teacher's targets."""
        return self.guidance_scale

    def _teacher_network(self, labels: torch.Tensor | None) -> Callable:
        """The teacher as the ``(x, t) -> output`` of its targets: for label maps ``labels`` ``[B, D, H, W]`` guided
        by them at :attr:`teacher_guidance` against the null map."""
        teacher = self.teacher[0]
        if labels is None:
            return teacher
        return CFGDenoiser(teacher, labels, teacher.require_conditioning().null_index, self.teacher_guidance)

    def _teacher_velocity(self, x: torch.Tensor, angle: torch.Tensor, model_time: torch.Tensor,
                          labels: torch.Tensor | None = None) -> torch.Tensor:
        """``v̂_teacher(x, t)`` per radian at angles ``angle`` = network times ``model_time`` (no gradients,
        float32), guided by the label maps ``labels`` of a conditional teacher."""
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            output = self._teacher_network(labels)(x.float(), model_time.float())
            return velocity(output.float(), x.float(), angle.float(), self.process)

    @contextlib.contextmanager
    def _stop_gradient_student(self):
        """The student in eval mode for the target's pass (no dropout in PRDiT; eval keeps the stop-gradient pass
        deterministic anyway), its mode restored afterwards; the caller holds ``no_grad``."""
        student = self.student[0]
        was_training = student.training
        student.eval()
        try:
            yield student
        finally:
            student.train(was_training)

    def _data_prediction(self, network: Callable, x: torch.Tensor, angle: torch.Tensor,
                         model_time: torch.Tensor) -> torch.Tensor:
        """``D = cos t·x − sin t·v̂`` of ``network`` (``(x, t) -> output``) at per-sample angles ``angle`` = network
        times ``model_time`` (a consistency model's ``f``); cos and sin in the angle's own precision."""
        v = velocity(network(x, model_time).float(), x, angle.float(), self.process)
        return _per_sample(torch.cos(angle), x) * x - _per_sample(torch.sin(angle), x) * v

    def _weighted(self, per_example: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """``e^{−w(t)}·loss + w(t)`` averaged over the batch, with the parts the trainer logs."""
        log_weight = self.weighting(t)
        loss = (torch.exp(-log_weight) * per_example + log_weight).mean()
        return {"loss": loss, "loss_consistency": per_example.mean().detach(),
                "weight_log": log_weight.mean().detach()}


class SCDObjective(DistillObjective):
    """Continuous-time consistency distillation (sCD): the tangent of the stop-gradient student along the
    teacher's ODE makes the target."""

    def __init__(self, teacher: nn.Module, student: nn.Module, process: IaNDiffusion, p_mean: float = -1.0,
                 p_std: float = 1.4, warmup_steps: int = 1000, tangent_norm: float = 0.1,
                 tangent: str = "jvp", guidance_scale: float = PLAIN_GUIDANCE_SCALE) -> None:
        if tangent not in TANGENTS:
            raise ConfigError(f"distill.tangent must be one of {', '.join(TANGENTS)}, got '{tangent}'")
        if warmup_steps < 0 or not tangent_norm > 0:
            raise ConfigError("distill.warmup_steps must be >= 0 and distill.tangent_norm > 0")
        super().__init__(teacher, student, process, p_mean, p_std, guidance_scale)
        self.warmup_steps, self.tangent_norm, self.tangent = warmup_steps, tangent_norm, tangent

    def warmup(self) -> float:
        """``r``: 0 at the first step, 1 from ``warmup_steps`` on."""
        return 1.0 if self.warmup_steps == 0 else min(1.0, self.step / self.warmup_steps)

    def training_losses(self, model: Callable, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                        labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The sCD loss of ``x0`` at network times ``t`` with noise ``noise`` (a conditional model's label maps
        ``labels`` ``[B, D, H, W]``); ``model`` is the student as the trainer calls it (DDP, compiled, its maps
        bound), the only call with gradients."""
        process, sigma = self.process, self.sigma
        _, angle, cos, sin, x_t = self._on_path(x0, t, noise)
        dxdt = self._teacher_velocity(x_t, angle, t, labels)
        v_theta = velocity(model(x_t, t).float(), x_t, angle, process)
        # F⁻ is this pass's value: a second pass in another precision (bf16 autocast here, float32 in the JVP)
        # would leave its rounding in F_θ − F⁻, larger than g.
        v_minus = v_theta.detach()
        with torch.no_grad(), torch.autocast(x0.device.type, enabled=False):
            with self._stop_gradient_student() as student:
                # Tangents scaled by cos t·sin t: dv_dt is cos t·sin t·σ_d·dF⁻/dt.
                _, dv_dt = time_tangent(student, x_t, angle, cos * sin * dxdt, (cos * sin).flatten().float(),
                                        process, self.tangent, labels)
            g = -cos**2 * (v_minus - dxdt) - self.warmup() * (cos * sin * x_t + dv_dt)
            rms = g.flatten(1).square().mean(dim=1).sqrt()
            g = g / _per_sample(rms + self.tangent_norm, g)
        per_example = (((v_theta - v_minus) / sigma - g) ** 2).flatten(1).mean(dim=1)  # ‖F_θ − F⁻ − g‖²/D
        return self._weighted(per_example, t)


class DiscreteCDObjective(DistillObjective):
    """Discrete-time consistency distillation (CD, Song et al. 2023, in TrigFlow angles): the teacher's ODE
    carries ``x_t`` over one interval ``Δ = (π/2)/intervals`` to ``t' = max(t − Δ, 0)`` in ``teacher_steps``
    Heun steps (the last one to 0 an Euler step), and the stop-gradient student there is the target:
    ``e^{−w}·‖f_θ(x_t, t) − f⁻(x_t', t')‖²/(D·σ_d²·Δ²) + w``. No tangent: only forward passes."""

    def __init__(self, teacher: nn.Module, student: nn.Module, process: IaNDiffusion, p_mean: float = -1.0,
                 p_std: float = 1.4, intervals: int = 64, teacher_steps: int = 1,
                 guidance_scale: float = PLAIN_GUIDANCE_SCALE) -> None:
        if intervals < 1 or teacher_steps < 1:
            raise ConfigError(f"distill.intervals and distill.teacher_steps must be >= 1, got {intervals} "
                              f"and {teacher_steps}")
        super().__init__(teacher, student, process, p_mean, p_std, guidance_scale)
        self.interval, self.teacher_steps = (math.pi / 2) / intervals, teacher_steps

    def teacher_ode(self, x: torch.Tensor, angle: torch.Tensor, target: torch.Tensor,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` at per-sample angles ``angle`` carried to ``target`` (float64 angles ``[B]``) along the
        teacher's ODE ``dx/dt = v̂`` (guided by the label maps ``labels``): Heun steps, an Euler step where a step
        ends at 0."""
        x = x.float()
        for k in range(self.teacher_steps):
            here = angle + (target - angle) * (k / self.teacher_steps)
            there = angle + (target - angle) * ((k + 1) / self.teacher_steps)
            h = _per_sample(there - here, x).float()
            v = self._teacher_velocity(x, here, here * self.to_timestep, labels)
            euler = x + h * v
            heun = x + h * 0.5 * (v + self._teacher_velocity(euler, there, there * self.to_timestep, labels))
            x = torch.where(_broadcast(there > 0, x), heun, euler)
        return x

    def consistency(self, model: Callable, x: torch.Tensor, angle: torch.Tensor,
                    model_time: torch.Tensor) -> torch.Tensor:
        """``f = cos t·x − sin t·v̂`` of a network (``(x, t) -> output``) at per-sample angles ``angle`` = network
        times ``model_time``; ``f = x`` at angle 0 whatever the network says there."""
        return torch.where(_broadcast(angle > 0, x), self._data_prediction(model, x, angle, model_time), x)

    def training_losses(self, model: Callable, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                        labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The CD loss of ``x0`` at network times ``t`` with noise ``noise`` (a conditional model's label maps
        ``labels`` ``[B, D, H, W]``); ``model`` is the student as the trainer calls it (DDP, compiled, its maps
        bound), the only call with gradients."""
        angle64, angle, _, _, x_t = self._on_path(x0, t, noise)
        earlier = (angle64 - self.interval).clamp_min(0.0)
        with torch.no_grad(), torch.autocast(x0.device.type, enabled=False):
            x_earlier = self.teacher_ode(x_t, angle64, earlier, labels)
            with self._stop_gradient_student() as student:
                target = self.consistency(with_labels(student, labels), x_earlier, earlier.float(),
                                          (earlier * self.to_timestep).float())
        f_theta = self.consistency(model, x_t, angle, t)
        scale = self.sigma * self.interval
        per_example = (((f_theta - target) / scale) ** 2).flatten(1).mean(dim=1)
        return self._weighted(per_example, t)


def progressive_rounds(start_steps: int, final_steps: int, round_steps: int) -> int:
    """The rounds of progressive distillation from ``start_steps`` (``distill.intervals``) down to
    ``final_steps``, halving each round; ConfigError unless the first is the second times a power of 2 (at
    least 2) and every count is at least 1."""
    ratio, rest = divmod(start_steps, max(final_steps, 1))
    if final_steps < 1 or round_steps < 1 or rest or ratio < 2 or ratio & (ratio - 1):
        raise ConfigError(f"progressive distillation halves distill.intervals ({start_steps}) down to "
                          f"distill.final_steps ({final_steps}) in rounds of distill.round_steps ({round_steps}) "
                          "steps: the first must be the second times a power of 2, and both counts >= 1")
    return ratio.bit_length() - 1


class ProgressiveObjective(DistillObjective):
    """Progressive distillation (Salimans & Ho 2022), the baseline of few-step distillation: in round r the
    student learns to do in one DDIM step (with D, docs/method.md §16) what its teacher does in two, on the
    uniform grid of IaN's samplers; the first round's teacher is the IaN model over ``start_steps`` steps, each
    later round's teacher the student as the round began, so ``start_steps`` halves to ``final_steps`` over
    log2(start/final) rounds of ``round_steps`` training steps (the last round runs on for the rest of the run).
    Guidance (``guidance_scale``) applies to the first round's teacher only: each later teacher is a student that
    has already learnt the guided output as its conditional one, and is called at w = 1.

    Per example: a grid point ``t`` of the student's grid, ``x_t = cos t·x₀ + sin t·z``, two teacher DDIM steps
    to ``t − Δ/2`` and ``t'' = t − Δ``, and the D that makes one DDIM step from ``t`` land there,
    ``D* = (sin t·x_t'' − sin t''·x_t)/sin(t − t'')``; both heads learn it (``x̂₀ → D*``,
    ``ε̂ → (x_t − cos t·D*)/sin t``), so the student is an ordinary IaN model that DDIM (``--sampler dpm++1
    --steps final_steps``) samples. The round and its teacher's weights are part of the objective's state
    (checkpointed: a resumed run continues the round it was in)."""

    def __init__(self, teacher: nn.Module, student: nn.Module, process: IaNDiffusion, start_steps: int = 64,
                 final_steps: int = 4, round_steps: int = 250, guidance_scale: float = PLAIN_GUIDANCE_SCALE) -> None:
        rounds = progressive_rounds(start_steps, final_steps, round_steps)
        super().__init__(teacher, student, process, guidance_scale=guidance_scale)
        self.start_steps, self.final_steps, self.round_steps = start_steps, final_steps, round_steps
        self.rounds = rounds
        self.round = 0

    @property
    def teacher_guidance(self) -> float:
        """``guidance_scale`` in the first round; 1 later, when the teacher is an earlier student."""
        return self.guidance_scale if self.round == 0 else PLAIN_GUIDANCE_SCALE

    @property
    def student_steps(self) -> int:
        """The steps of this round's student."""
        return self.start_steps >> (self.round + 1)

    def get_extra_state(self) -> dict:
        return {"round": self.round, "teacher": self.teacher[0].state_dict() if self.round else None}

    def set_extra_state(self, state: dict) -> None:
        self.round = int(state["round"])
        if state["teacher"] is not None:
            self.teacher[0].load_state_dict(state["teacher"])

    def _advance(self) -> None:
        """Start the rounds that ``step`` has reached: each one's teacher is the student as it is now."""
        while self.round < min(self.step // self.round_steps, self.rounds - 1):
            self.teacher[0].load_state_dict(self.student[0].state_dict())
            self.round += 1

    def sample_time(self, batch: int, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Network times ``[batch]``: points of this round's student grid, ``T·(1 − i/N)``, i uniform in 0..N−1
        (the round is advanced here, at the start of each step, once the trainer has set ``step``)."""
        self._advance()
        gen_device = generator.device if generator is not None else device
        steps = self.student_steps
        index = torch.randint(0, steps, (batch,), generator=generator, device=gen_device)
        return (self.process.num_timesteps * (1 - index.double() / steps)).float().to(device)

    def _ddim(self, x: torch.Tensor, angle: torch.Tensor, model_time: torch.Tensor, to: torch.Tensor,
              labels: torch.Tensor | None = None) -> torch.Tensor:
        """One DDIM step of the teacher (guided by the label maps ``labels``) with its D from per-sample ``angle``
        to ``to`` (float64 ``[B]``); the caller holds ``no_grad`` with autocast off."""
        data = self._data_prediction(self._teacher_network(labels), x, angle, model_time)
        cos, sin = _per_sample(torch.cos(angle), x), _per_sample(torch.sin(angle), x)
        return _per_sample(torch.cos(to), x) * data + _per_sample(torch.sin(to), x) * (x - cos * data) / sin

    def training_losses(self, model: Callable, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                        labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The progressive-distillation loss of ``x0`` at the grid times ``t`` with noise ``noise`` (a conditional
        model's label maps ``labels`` ``[B, D, H, W]``, bound to ``model`` by the trainer)."""
        angle64, _, cos, sin, x_t = self._on_path(x0, t, noise)
        interval = (math.pi / 2) / self.student_steps
        middle, end = angle64 - interval / 2, (angle64 - interval).clamp_min(0.0)
        with torch.no_grad(), torch.autocast(x0.device.type, enabled=False):
            x_middle = self._ddim(x_t.float(), angle64, t, middle, labels)
            x_end = self._ddim(x_middle, middle, (middle * self.to_timestep).float(), end, labels)
            data = (_per_sample(torch.sin(angle64), x0) * x_end - _per_sample(torch.sin(end), x0) * x_t) \
                / _per_sample(torch.sin(angle64 - end), x0)
            noise_target = (x_t - cos * data) / sin
        heads = IaNDiffusion.predict(self.process, model(x_t, t).float(), x_t, t)
        per_example = ((heads.x0 - data) ** 2 + (heads.noise - noise_target) ** 2).flatten(1).mean(dim=1)
        return self._weighted(per_example, t)


def distill_objective(config, student: nn.Module, process, device: torch.device) -> DistillObjective:
    """The objective (sCD, CD or progressive) of a config's ``distill`` section: the teacher loaded from its model
    folder and checked against the student (same network and label-map conditioning, an IaN teacher of the
    student's noise std and timesteps)."""
    from prdit.errors import CheckpointError
    from prdit.model_folder import load_model_folder

    folder = load_model_folder(config.distill.teacher, device="cpu")
    teacher = folder.model
    if type(folder.process) is not IaNDiffusion:
        raise CheckpointError(f"{config.distill.teacher}: the teacher must be an IaN model, its process is "
                              f"{folder.process.kind} (flow-matching models are not distilled here)")
    if (folder.process.noise_std, folder.process.num_timesteps) != (process.noise_std, process.num_timesteps):
        raise ConfigError(f"the student's process (noise std {process.noise_std}, {process.num_timesteps} timesteps) "
                          f"differs from the teacher's ({folder.process.noise_std}, {folder.process.num_timesteps}): "
                          "leave process.settings at the teacher's")
    if teacher.name != student.name or tuple(teacher.config.input_size) != tuple(student.config.input_size):
        raise ConfigError(f"the student ({student.name} at {tuple(student.config.input_size)}) must be the teacher's "
                          f"network ({teacher.name} at {tuple(teacher.config.input_size)}): set model.name and "
                          "model.input_size to the teacher's")
    _check_conditioning(teacher.config.conditioning, student.config.conditioning, config.distill.teacher)
    d = config.distill
    if d.objective == "pd":
        return ProgressiveObjective(teacher, student, process, start_steps=d.intervals, final_steps=d.final_steps,
                                    round_steps=d.round_steps, guidance_scale=d.guidance_scale).to(device)
    if d.objective == "cd":
        return DiscreteCDObjective(teacher, student, process, p_mean=d.p_mean, p_std=d.p_std, intervals=d.intervals,
                                   teacher_steps=d.teacher_steps, guidance_scale=d.guidance_scale).to(device)
    return SCDObjective(teacher, student, process, p_mean=d.p_mean, p_std=d.p_std, warmup_steps=d.warmup_steps,
                        tangent_norm=d.tangent_norm, tangent=d.tangent, guidance_scale=d.guidance_scale).to(device)


def _check_conditioning(teacher, student, source) -> None:
    """ConfigError unless the student (``Conditioning`` or None) is conditioned on label maps as its teacher is:
    a conditional teacher's student is conditional, on the same label set and stages, and an unconditional
    teacher has no label-map targets to teach."""
    if teacher == student:
        return
    if teacher is None:
        raise ConfigError(f"{source} is unconditional: it has no label-map outputs to distil into a conditional "
                          f"student; leave model.conditioning empty (`prdit distill` sets it to the teacher's)")
    if student is None:
        raise ConfigError(f"{source} is conditioned on label maps (model.conditioning={teacher.stages}): its student "
                          f"is too; leave model.conditioning at {teacher.stages} (`prdit distill` sets it)")
    if teacher.stages != student.stages:
        raise ConfigError(f"{source} conditions {teacher.stages}, the student {student.stages}: set "
                          f"model.conditioning={teacher.stages}")
    raise ConfigError(f"{source} is conditioned on a label set ({teacher.num_labels} labels, embedding width "
                      f"{teacher.embed_dim}) other than the one training builds ({student.num_labels} labels, width "
                      f"{student.embed_dim}): its student cannot be trained here")
