"""Typed training configuration: the one source of training defaults (docs/method.md §9), loaded
from YAML and overridden with ``section.key=value`` pairs; unknown keys and wrong types are errors.
The process's settings default in the process class itself (``prdit.diffusion``); the config
names the kind and any settings that differ."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prdit.errors import ConfigError

SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"

@dataclass
class RunConfig:
    """Where the run lives: ``{root}/{name}/``."""

    name: str = "prdit"
    root: str = "runs"

@dataclass
class ModelConfig:
    """Registry name and volume size; the stage follows from the depth (0 = stage 1)."""

    name: str = "PRDiT-B/12/0"
    input_size: int = 128
    in_channels: int = 1
    # Label-map conditioning (docs/method.md §20): "" (none) | stage2 (the global refiner sees the map) | both
    # (the local denoiser too; then train stage 1 with it). Pairs each volume with labels/<its name>.nii.gz.
    conditioning: str = ""

@dataclass
class DataConfig:
    """Training/validation volumes (list file or folder) and their intensity normalisation."""

    train: str = ""
    val: str = ""
    root: str = ""  # list entries are relative to this (default: the list file's folder)
    normalization: str = "window"  # window | quantile
    hu_min: float = -1000.0
    hu_max: float = 1000.0
    quantile: float = 0.999
    quantile_clip_hu: float | None = None  # quantile: clip HU above this before the quantile (RAD-ChestCT: 1000)
    flip: bool = False  # random left-right mirroring
    cache: bool = False  # keep pooled volumes in memory (small data sets)
    num_workers: int = 2

@dataclass
class ProcessConfig:
    """The generative process by kind (``ian``, ``flow``) and the settings that differ from its defaults."""

    kind: str = "ian"
    settings: dict = field(default_factory=dict)

@dataclass
class OptimConfig:
    """AdamW, gradient clipping and EMA."""

    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    # The learning rate over the run: constant (the paper's) | cosine | linear, decaying from lr to final_lr
    # at train.steps (so a continued run with more train.steps stretches the decay), after warmup_steps of a
    # linear rise from 0.
    schedule: str = "constant"
    warmup_steps: int = 0
    final_lr: float = 0.0

@dataclass
class TrainConfig:
    """Length, batch, precision and the stage-2 starting point."""

    steps: int = 104_000
    global_batch: int = 64
    micro_batch: int = 0  # volumes per forward per process (gradient accumulation); 0: the whole per-process batch
    seed: int = 0
    precision: str = "fp32"  # fp32 (TF32 matmuls, bf16 attention on CUDA) | bf16 (autocast everything)
    tf32: bool = True
    compile: bool = False
    grad_checkpointing: bool = False
    init_from: str = ""  # stage 2: a stage-1 run directory, checkpoint or model folder
    # Conditional models: the chance that a volume's whole label map is replaced by "no label" (classifier-free
    # guidance learns the null condition from these), and that one class of a map is, each class on its own.
    label_dropout: float = 0.1
    class_dropout: float = 0.0

@dataclass
class LogConfig:
    """How often to log, validate, preview and checkpoint."""

    every: int = 50
    checkpoint_every: int = 2000
    keep_last: int = 3
    milestone_every: int = 20_000
    val_every: int = 2000
    val_noise_levels: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])  # 0 = data, 1 = pure noise
    val_max_volumes: int = 64
    preview_every: int = 5000
    preview_steps: int | None = None  # None: the process's default (Process.sample_steps)
    preview_num: int = 2
    tensorboard: bool = True

@dataclass
class DistillConfig:
    """Consistency distillation (docs/method.md §18, ``prdit distill``): the IaN teacher, the objective and its
    settings. An empty teacher means ordinary training."""

    teacher: str = ""  # an IaN model folder (prdit export); the student starts from its weights
    # A teacher conditioned on label maps (docs/method.md §20) gives a student conditioned the same way (model.
    # conditioning as the teacher's), trained on each volume's map with train.label_dropout, like the teacher. Its
    # targets are the teacher guided at w = guidance_scale (1: the plain conditional teacher, one call; any other w
    # two, batched). At 1 the student learns the teacher's conditional and null outputs, so sampling it with the
    # default guidance guides it as the teacher would be; distilled from a guided teacher (w != 1), its conditional
    # output is the guided one: sample it with --guidance-scale 1. The w is recorded in its model folder under
    # training.config.distill.guidance_scale.
    guidance_scale: float = 1.0
    # pd (progressive distillation: trains an IaN model for 4-step DDIM, process.kind=ian) | scd (continuous-time
    # consistency, a JVP) | cd (discrete time: the teacher's ODE over one interval). pd is the default because it is
    # the one measured to meet the target: on PRDiT-XS its 4-step student is inside Heun@25's intervals and sCD's
    # trails it at 1, 2 and 4 steps (docs/sampling.md, "Few-step sampling: distillation";
    # benchmarks/results/distillation-*xs-cpu.json)
    objective: str = "pd"
    tangent: str = "jvp"  # jvp (forward mode, float32) | finite-difference (central, float64)
    p_mean: float = -1.0  # τ ~ N(p_mean, p_std²), t = arctan(e^τ/σ)
    p_std: float = 1.4
    warmup_steps: int = 1000  # r rises linearly from 0 to 1 over these steps
    tangent_norm: float = 0.1  # c in g ← g/(‖g‖/√D + c), ‖g‖/√D the root mean square over the D voxels
    # The EMA's decay is min(optim.ema_decay, (1 + step)/(10 + step)): the average drops the teacher's weights,
    # which the student starts from, within a few steps (0.9999 from step 0 kept 13 % of them after 20k steps)
    ema_warmup: bool = True
    freeze_stage1: bool = False  # keep the local denoiser at the teacher's weights
    intervals: int = 64  # cd: the interval is (π/2)/intervals radians of TrigFlow angle; pd: the first teacher's steps
    teacher_steps: int = 1  # cd: Heun steps of the teacher's ODE over one interval
    final_steps: int = 4  # pd: the student's DDIM steps after the last round
    round_steps: int = 250  # pd: training steps of each round (the last runs on)

@dataclass
class ExperimentConfig:
    """A whole training run."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def validate(self) -> None:
        """Check values that parse but cannot work."""
        if self.train.precision not in ("fp32", "bf16"):
            raise ConfigError(f"train.precision must be fp32 or bf16, got '{self.train.precision}'")
        if self.data.normalization not in ("window", "quantile"):
            raise ConfigError(f"data.normalization must be window or quantile, got '{self.data.normalization}'")
        for key, value in (("train.steps", self.train.steps), ("train.global_batch", self.train.global_batch),
                           ("log.every", self.log.every), ("log.checkpoint_every", self.log.checkpoint_every),
                           ("log.keep_last", self.log.keep_last)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        from prdit.models.conditioning import STAGES

        if self.model.conditioning not in ("", *STAGES):
            raise ConfigError(f"model.conditioning must be empty (unconditional) or one of {', '.join(STAGES)}, got "
                              f"'{self.model.conditioning}'")
        if not (0.0 <= self.train.label_dropout <= 1.0 and 0.0 <= self.train.class_dropout <= 1.0):
            raise ConfigError(f"train.label_dropout and train.class_dropout are probabilities in [0, 1], got "
                              f"{self.train.label_dropout} and {self.train.class_dropout}")
        if self.train.micro_batch < 0:
            raise ConfigError(f"train.micro_batch must be >= 0 (0: no accumulation), got {self.train.micro_batch}")
        if not 0.0 <= self.optim.ema_decay < 1.0:
            raise ConfigError(f"optim.ema_decay must be in [0, 1), got {self.optim.ema_decay}")
        from prdit.training.schedule import SCHEDULES

        if self.optim.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got '{self.optim.schedule}'")
        if self.optim.warmup_steps < 0 or not 0.0 <= self.optim.final_lr <= self.optim.lr:
            raise ConfigError(f"optim.warmup_steps must be >= 0 and optim.final_lr in [0, optim.lr], got "
                              f"{self.optim.warmup_steps} and {self.optim.final_lr}")
        if len(self.optim.betas) != 2:
            raise ConfigError(f"optim.betas needs two values, got {self.optim.betas}")
        if any(not 0.0 <= level <= 1.0 for level in self.log.val_noise_levels):
            raise ConfigError(f"log.val_noise_levels must lie in [0, 1], got {self.log.val_noise_levels}")
        from prdit.diffusion import create_process

        create_process(self.process.kind, **self.process.settings)  # unknown kinds or settings raise here
        if self.distill.teacher:
            from prdit.training.distill import OBJECTIVES, TANGENTS, progressive_rounds

            if self.distill.objective not in OBJECTIVES:
                raise ConfigError(f"distill.objective must be one of {', '.join(OBJECTIVES)}, "
                                  f"got '{self.distill.objective}'")
            if self.distill.objective == "pd" and self.process.kind != "ian":
                raise ConfigError(f"progressive distillation (distill.objective=pd) trains an IaN model for DDIM: "
                                  f"set process.kind=ian (got '{self.process.kind}')")
            if self.distill.objective != "pd" and self.process.kind != "consistency":
                raise ConfigError(f"distillation trains a consistency model: set process.kind=consistency (got "
                                  f"'{self.process.kind}')")
            if self.distill.intervals < 1 or self.distill.teacher_steps < 1:
                raise ConfigError("distill.intervals and distill.teacher_steps must be >= 1")
            if self.distill.objective == "pd":
                progressive_rounds(self.distill.intervals, self.distill.final_steps, self.distill.round_steps)
            if self.distill.tangent not in TANGENTS:
                raise ConfigError(f"distill.tangent must be one of {', '.join(TANGENTS)}, got '{self.distill.tangent}'")
            if self.distill.warmup_steps < 0 or not self.distill.p_std > 0 or not self.distill.tangent_norm > 0:
                raise ConfigError("distill.warmup_steps must be >= 0, distill.p_std and distill.tangent_norm > 0")
            if not math.isfinite(self.distill.guidance_scale):
                raise ConfigError(f"distill.guidance_scale must be a finite number, got {self.distill.guidance_scale}")
            if self.distill.guidance_scale != 1.0 and not self.model.conditioning:
                raise ConfigError(f"distill.guidance_scale={self.distill.guidance_scale:g} guides a teacher "
                                  "conditioned on label maps; this student is unconditional (model.conditioning "
                                  "is empty): leave distill.guidance_scale at 1")
        if not self.data.train:
            raise ConfigError("data.train is empty: give a list file or folder of volumes "
                              "(e.g. data.train=data/phantoms/train.txt)")

    def to_dict(self) -> dict:
        """Nested plain dict (YAML/JSON-ready)."""
        return dataclasses.asdict(self)

def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))

def _coerce(value, tp, key: str):
    """Check ``value`` against the field type ``tp`` (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' needs a list of {_type_name(item_type)}, got {value!r}")
        return [_coerce(v, item_type, key) for v in value]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is str and value is None:
        return ""
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"config key '{key}' needs a {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value

def _apply(section, values: dict, prefix: str) -> None:
    hints = typing.get_type_hints(type(section))
    names = [f.name for f in dataclasses.fields(section)]
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{full}'; valid keys here: {', '.join(prefix + n for n in names)}")
        current = getattr(section, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{full}' is a section; give it a mapping")
            _apply(current, value, f"{full}.")
        else:
            setattr(section, key, _coerce(value, hints[key], full))

def resolve_config_path(config: str | Path) -> Path:
    """A YAML path, or the name of a shipped config (``prdit train phantoms-tiny-stage1``)."""
    path = Path(config)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))
    raise ConfigError(f"{config}: no such config file, nor a shipped config of that name ({', '.join(names)})")

def parse_overrides(overrides: list[str]) -> dict:
    """``["optim.lr=1e-4", "train.steps=10"]`` -> nested dict (values parsed as YAML)."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        *parents, leaf = dotted.strip().split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested

def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, validated."""
    config = unvalidated_config(path, overrides)
    config.validate()
    return config

def unvalidated_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """:func:`load_config` without the final check: for a caller that derives one key from the others."""
    config = ExperimentConfig()
    if path is not None:
        resolved = resolve_config_path(path)
        try:
            values = yaml.safe_load(resolved.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{resolved}: not valid YAML ({err})") from err
        if not isinstance(values, dict):
            raise ConfigError(f"{resolved}: expected a mapping of sections at the top level")
        _apply(config, values, "")
    _apply(config, parse_overrides(overrides or []), "")
    return config

def config_from_dict(values: dict) -> ExperimentConfig:
    """Rebuild a config saved with :meth:`ExperimentConfig.to_dict` (older layouts upgraded)."""
    config = ExperimentConfig()
    _apply(config, upgrade_config_dict(values), "")
    return config


def upgrade_config_dict(values: dict) -> dict:
    """A saved config of an earlier release in today's layout: the IaN-only ``diffusion`` section
    becomes ``process``, ``model.learn_sigma`` (always true) goes, validation timesteps become noise levels,
    sections added since take their defaults."""
    values = {key: dict(section) if isinstance(section, dict) else section for key, section in values.items()}
    if "diffusion" in values:
        from prdit.diffusion import IaNDiffusion

        legacy, defaults = values.pop("diffusion"), IaNDiffusion().to_dict()
        values["process"] = {"kind": "ian", "settings": {k: v for k, v in legacy.items() if v != defaults.get(k)}}
        if "val_timesteps" in values.get("log", {}):
            total = legacy.get("num_timesteps", 1000)
            values["log"]["val_noise_levels"] = [t / total for t in values["log"].pop("val_timesteps")]
    values.get("model", {}).pop("learn_sigma", None)
    # A section or key added since (``distill``, ``optim.schedule``) is absent from older runs; its defaults
    # are what they ran with.
    for section in dataclasses.fields(ExperimentConfig):
        defaults = dataclasses.asdict(section.default_factory())
        if section.name not in values:
            values[section.name] = defaults
        elif isinstance(values[section.name], dict):
            values[section.name] = {**defaults, **values[section.name]}
    return values

def diff_configs(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_configs(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out

