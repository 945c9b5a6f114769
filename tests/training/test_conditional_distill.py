"""Distilling a teacher conditioned on label maps (docs/method.md §18, §20): its student is conditional too, starts
as the teacher, sees each example's map as the teacher does (label dropout included), learns the targets of the
teacher guided at distill.guidance_scale, and samples from a map with `prdit sample --labels`."""

import copy
import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from prdit.cli import app
from prdit.data.dataset import split_volumes
from prdit.data.labels import PHANTOM_LABELS
from prdit.data.phantoms import write_phantoms
from prdit.diffusion import IaNDiffusion
from prdit.errors import ConfigError
from prdit.model_folder import load_model_folder, save_model_folder
from prdit.models import create_model
from prdit.data.normalization import Normalization
from prdit.training.checkpoint import load_checkpoint
from prdit.training.distill import ProgressiveObjective, SCDObjective, time_tangent, velocity

K = len(PHANTOM_LABELS)
OBJECTIVES = {"pd": ["distill.objective=pd", "distill.intervals=8", "distill.final_steps=2", "distill.round_steps=2"],
              "scd": ["distill.objective=scd", "distill.warmup_steps=2"]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setting(tmp_path_factory, make_conditional_model):
    """Six 16³ phantoms with their label maps and a split, and a tiny conditional IaN teacher (both stages see the
    map, every weight off its initialisation, so the map changes its output)."""
    root = tmp_path_factory.mktemp("conditional-distill")
    write_phantoms(6, 16, root / "data", seed=0, labels=True)
    split_volumes(root / "data", val_fraction=0.34, seed=42, out_dir=root / "data")
    make_conditional_model(root / "teacher", 16, (2.0, 2.0, 2.0), seed=0)
    return root


def distill_args(root, name: str, steps: int, objective: str, *extra: str) -> list[str]:
    return ["distill", str(root / "teacher"), f"data.train={root / 'data/train.txt'}", "data.val=",
            f"run.root={root / 'runs'}", f"run.name={name}", f"train.steps={steps}", "train.global_batch=2",
            "log.every=1", "log.checkpoint_every=2", "log.preview_every=0", "log.tensorboard=false",
            *OBJECTIVES[objective], *extra, "--quiet"]


def invoke(*args) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)


def labelled(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("label_conditioning.")}


@pytest.mark.parametrize("objective", ["pd", "scd"])
def test_a_conditional_teacher_gives_a_conditional_student_that_starts_as_it_and_samples_from_a_map(
        setting, tmp_path, monkeypatch, objective):
    from prdit.training import trainer

    starts = []

    class Start(trainer.EMA):  # the student as training begins (the EMA is built from it)
        def __init__(self, model, decay):
            starts.append(copy.deepcopy(model).eval())
            super().__init__(model, decay)

    monkeypatch.setattr(trainer, "EMA", Start)
    invoke(*distill_args(setting, f"student-{objective}", 2, objective))
    teacher = load_model_folder(setting / "teacher").model
    (student,) = starts
    assert student.config.conditioning == teacher.config.conditioning
    for name, weight in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[name], weight), name
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 1, 16, 16, 16, generator=gen), torch.tensor([900.0, 400.0, 50.0])
    maps = torch.randint(0, K + 1, (3, 16, 16, 16), generator=gen)
    maps[2] = K  # a dropped map
    with torch.no_grad():
        assert torch.equal(student(x, t, maps), teacher(x, t, maps))
        assert not torch.equal(teacher(x, t, maps), teacher(x, t))  # the map matters to the teacher

    run = setting / "runs" / f"student-{objective}"
    trained = load_checkpoint(run / "checkpoints" / "step_00000002.pt")["model"]
    moved = [k for k, v in labelled(teacher.state_dict()).items() if not torch.equal(trained[k], v)]
    assert any("stage1" in k for k in moved) and any("stage2" in k for k in moved), moved

    folder = tmp_path / "student"
    invoke("export", run, "--out", folder)
    recorded = json.loads((folder / "config.json").read_text())
    assert recorded["model"]["conditioning"] == json.loads((setting / "teacher/config.json").read_text())[
        "model"]["conditioning"]
    assert recorded["training"]["config"]["distill"]["guidance_scale"] == 1.0
    steps = ["--sampler", "dpm++1", "--steps", "2"] if objective == "pd" else ["--steps", "1"]
    out = tmp_path / "samples"
    invoke("sample", folder, "--labels", setting / "data/labels/phantom_00000.nii.gz", "--out", out, *steps,
           "--no-previews", "--quiet")
    assert (out / "sample_00000.nii.gz").is_file() and (out / "labels" / "sample_00000.nii.gz").is_file()
    for model in (setting / "teacher", folder):  # without a map, the student refuses as its teacher does
        result = CliRunner().invoke(app, ["sample", str(model), "--out", str(tmp_path / "none"), "--quiet"])
        assert isinstance(result.exception, ConfigError) and "conditioned on label maps" in str(result.exception)
    invoke("sample", folder, "--unconditional", "--out", tmp_path / "null", *steps, "--no-previews", "--quiet")


def test_teacher_and_student_see_the_same_maps_and_the_dropped_ones_train_the_null_label(setting, monkeypatch):
    """A spy on the teacher and on the student (the pass with gradients and the stop-gradient JVP of sCD): every
    call of a step gets the same maps, the training volumes' maps with some dropped to the null index; the null
    label's embedding then moves, which it does not without label dropout."""
    import prdit.training.distill as distill

    seen = {"teacher": [], "student": []}
    build = distill.distill_objective

    def spy(who):
        def hook(module, args, kwargs):
            seen[who].append(kwargs["labels"] if "labels" in kwargs else args[2])
        return hook

    def spied(*args, **kwargs):
        objective = build(*args, **kwargs)
        objective.teacher[0].register_forward_pre_hook(spy("teacher"), with_kwargs=True)
        objective.student[0].register_forward_pre_hook(spy("student"), with_kwargs=True)
        return objective

    monkeypatch.setattr(distill, "distill_objective", spied)
    invoke(*distill_args(setting, "spied", 4, "scd", "train.label_dropout=0.5"))
    assert len(seen["teacher"]) == 4 and len(seen["student"]) == 8  # per step: teacher; student and its JVP
    for step in range(4):
        teacher, student, tangent = seen["teacher"][step], *seen["student"][2 * step:2 * step + 2]
        assert torch.equal(teacher, student) and torch.equal(teacher, tangent)
    maps = torch.cat(seen["teacher"])
    null = (maps == K).flatten(1).all(1)
    assert 0 < null.sum() < len(maps)  # some maps dropped, the others the phantoms' own
    assert all(len(m.unique()) > 5 and (m < K).all() for m in maps[~null])

    teacher = load_model_folder(setting / "teacher").model.state_dict()
    key = "label_conditioning.stage2.patches.embedding.weight"
    monkeypatch.setattr(distill, "distill_objective", build)
    invoke(*distill_args(setting, "undropped", 4, "scd", "train.label_dropout=0"))
    rows = {name: load_checkpoint(setting / "runs" / name / "checkpoints" / "step_00000004.pt")["model"][key]
            for name in ("spied", "undropped")}
    assert not torch.equal(rows["spied"][K], teacher[key][K])  # the null map's output was trained
    assert torch.equal(rows["undropped"][K], teacher[key][K])
    assert not torch.equal(rows["undropped"][:K], teacher[key][:K])


def test_the_tangent_of_a_conditional_student_follows_its_map_by_either_method(setting):
    """sCD's stop-gradient student is differentiated with the example's map held fixed: the JVP and the float64
    finite difference agree with a map, and the map changes the tangent."""
    model, process = load_model_folder(setting / "teacher").model, IaNDiffusion()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 16, 16, 16, generator=gen) * 0.5
    angle, dangle = torch.tensor([0.3, 1.2]), torch.tensor([0.2, 0.4])
    dx = torch.randn(x.shape, generator=gen) * 0.1
    maps = torch.randint(0, K, (2, 16, 16, 16), generator=gen)
    _, tangent = time_tangent(model, x, angle, dx, dangle, process, "jvp", maps)
    _, tangent64 = time_tangent(model, x, angle, dx, dangle, process, "finite-difference", maps)
    _, null = time_tangent(model, x, angle, dx, dangle, process, "jvp")
    assert (tangent - tangent64).abs().max() < 1e-3 * tangent64.abs().max()
    assert (tangent - null).abs().max() > 1e-2 * tangent64.abs().max()


class Guided(nn.Module):
    """A conditional network's output guided at ``w``, by two separate calls: the reference for the targets."""

    def __init__(self, network: nn.Module, w: float) -> None:
        super().__init__()
        self.network, self.w = network, w

    def require_conditioning(self):
        return self.network.require_conditioning()

    def forward(self, x, t, labels):
        null = self.network(x, t, torch.full_like(labels, K))
        return null + self.w * (self.network(x, t, labels) - null)


def test_the_targets_of_a_guided_teacher_are_its_cfg_combination(setting):
    teacher = load_model_folder(setting / "teacher").model
    student = copy.deepcopy(teacher)
    process, w = IaNDiffusion(), 3.0
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 1, 16, 16, 16, generator=gen) * 0.3
    maps = torch.randint(0, K, (3, 16, 16, 16), generator=gen)
    maps[1] = K  # a dropped map: its target is the null output whatever w

    scd = SCDObjective(teacher, student, process, warmup_steps=10, guidance_scale=w)
    t = scd.sample_time(3, generator=gen)
    angle = t.double() * (math.pi / 2000)
    x_t = torch.randn(x0.shape, generator=gen)
    with torch.no_grad():
        reference = velocity(Guided(teacher, w)(x_t, t, maps), x_t, angle.float(), process)
        plain = velocity(teacher(x_t, t, maps), x_t, angle.float(), process)
    guided = scd._teacher_velocity(x_t, angle, t, maps)
    assert torch.allclose(guided, reference, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(guided[[0, 2]], plain[[0, 2]], atol=1e-2)
    assert torch.allclose(guided[1], plain[1], atol=1e-4)

    def losses(objective, round_=0):
        objective.round = round_
        times = torch.tensor([1000.0, 500.0, 1000.0])  # on the student's grid in either round
        noise = process.sample_noise(x0.shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            return objective.training_losses(lambda x, s: student(x, s, maps), x0, times, noise,
                                             maps)["loss_consistency"]

    def pd(network, scale=1.0):
        return ProgressiveObjective(network, student, process, start_steps=8, final_steps=2, guidance_scale=scale)

    assert torch.allclose(losses(pd(teacher, w)), losses(pd(Guided(teacher, w))), rtol=1e-4)
    assert not torch.allclose(losses(pd(teacher, w)), losses(pd(teacher)), rtol=1e-2)
    # later rounds' teachers are earlier students, which learnt the guided output: called at w = 1
    assert torch.equal(losses(pd(teacher, w), 1), losses(pd(teacher), 1))


def test_what_cannot_work_in_a_conditional_distillation_is_a_clear_config_error(setting, tmp_path):
    from prdit.training.cli import distill_config
    from prdit.training.trainer import train

    data = [f"data.train={setting / 'data/train.txt'}", "data.val=", f"run.root={tmp_path / 'runs'}",
            "train.steps=1", "log.tensorboard=false", "log.preview_every=0"]
    assert distill_config("phantoms-tiny-distill", setting / "teacher", data).model.conditioning == "both"
    for override, message in (("model.conditioning=", "its student is too"),
                              ("model.conditioning=stage2", "set model.conditioning=both")):
        with pytest.raises(ConfigError, match=message):
            train(distill_config("phantoms-tiny-distill", setting / "teacher", [*data, override]), progress=False)
    with pytest.raises(ConfigError, match="finite"):
        distill_config("phantoms-tiny-distill", setting / "teacher", [*data, "distill.guidance_scale=.nan"])

    plain = tmp_path / "plain"
    torch.manual_seed(0)
    save_model_folder(plain, create_model("PRDiT-T/6/1", input_size=16), IaNDiffusion(), Normalization(),
                      spacing=(2.0, 2.0, 2.0))
    assert distill_config("phantoms-tiny-distill", plain, data).model.conditioning == ""
    with pytest.raises(ConfigError, match="guides a teacher conditioned on label maps"):
        distill_config("phantoms-tiny-distill", plain, [*data, "distill.guidance_scale=2"])
    with pytest.raises(ConfigError, match="is unconditional"):
        train(distill_config("phantoms-tiny-distill", plain, [*data, "model.conditioning=both"]), progress=False)
