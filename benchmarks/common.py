"""What every benchmark shares: device choice, the machine's description, timing (warm-up then
median), peak memory, running a configuration in a fresh process, the voxel-space U-Net
baseline, and table/JSON output.

Memory is measured the same way for every script:

* CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated when the measurement
  started (tensors only; the caching allocator's reserve is not counted).
* CPU: the process's peak resident set (``VmHWM``) above its resident set when the measurement
  started, in a fresh process per configuration so that memory freed by an earlier
  configuration cannot be reused unseen, after a tiny model has run once so that the libraries'
  one-time set-up (~95 MiB) is not counted. This is process memory, not tensor bytes: it also
  holds allocator slack.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPOSITORY / "benchmarks" / "results"
MiB = 2**20
GiB = 2**30

# --------------------------------------------------------------------------------------
# Command line and device
# --------------------------------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser, repeats: int = 3, time_budget: float = 300.0,
                    time_budget_help: str = "seconds of timed runs per configuration; fewer repeats when one run "
                                            "is slower") -> None:
    """``--device``, ``--repeats``, ``--warmup``, ``--time-budget``, ``--smoke``, ``--json``; a script whose
    budget means something else passes its own default and help."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to run (auto: CUDA when available)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed runs per configuration (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--time-budget", type=float, default=time_budget, help=time_budget_help)
    parser.add_argument("--smoke", action="store_true", help="tiny models and sizes: checks that the script runs")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the results (default benchmarks/results/<name>-<device>.json)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all cores)")
    parser.add_argument("--same-process", action="store_true",
                        help="on CPU, measure every configuration in this process (faster to start; memory freed "
                             "by an earlier configuration may then be reused unseen)")


def parse_int_list(text: str) -> list[int]:
    """``"64,128"`` -> ``[64, 128]``."""
    return [int(part) for part in text.split(",") if part.strip()]


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads here and in the fresh processes started later (0: torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch in spawned processes


def resolve_device(name: str) -> torch.device:
    """The project's device choice (``auto``: CUDA when available), with TF32 matmuls on CUDA."""
    from prdit.device import resolve_device as choose_device
    from prdit.errors import ConfigError

    try:
        device = choose_device(name)
    except ConfigError as error:
        raise SystemExit(f"--device: {error}") from None
    if device.type == "cuda":
        # Spec §9: fp32 weights with TF32 matmuls on GPU.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (how the models train there); plain fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_note(device: torch.device) -> str:
    """One line saying which arithmetic the numbers were taken with."""
    return "bf16 autocast, TF32 matmuls" if device.type == "cuda" else "fp32"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device) -> dict[str, Any]:
    """CPU model and cores, RAM, torch version, and the GPU when running on one."""
    info: dict[str, Any] = {
        "device": device.type,
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_total_gib": round(_meminfo("MemTotal") / GiB, 1) if _meminfo("MemTotal") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GiB, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def machine_lines(machine: dict[str, Any]) -> list[str]:
    """The machine description as printable lines."""
    lines = [f"CPU: {machine['cpu']} ({machine['cpu_cores']} cores, torch uses {machine['torch_threads']} threads), "
             f"RAM {machine['ram_total_gib']} GiB",
             f"torch {machine['torch']}, Python {machine['python']}, {machine['platform']}"]
    if machine["device"] == "cuda":
        lines.append(f"GPU: {machine['gpu']} ({machine['gpu_memory_gib']} GiB), CUDA {machine['cuda']}, "
                     f"cuDNN {machine['cudnn']}")
    else:
        lines.append("GPU: none used (running on CPU)")
    return lines


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall-clock seconds of the timed runs of one configuration."""

    times: list[float]

    @property
    def median(self) -> float:
        """Median seconds per run."""
        return statistics.median(self.times)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (all runs kept)."""
        return {"median_s": self.median, "min_s": min(self.times), "max_s": max(self.times),
                "runs": len(self.times), "times_s": self.times}


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def affordable_repeats(repeats: int, seconds_per_run: float, budget_s: float | None) -> int:
    """At most ``repeats`` runs, fewer (at least 1) when they would take longer than ``budget_s``."""
    if budget_s is None or seconds_per_run <= 0:
        return repeats
    return max(1, min(repeats, int(budget_s // seconds_per_run)))


def time_runs(fn: Callable[[], Any], device: torch.device, warmup: int = 1, repeats: int = 3,
              budget_s: float | None = None) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then time up to ``repeats`` runs (fewer past ``budget_s``)."""
    last = 0.0
    for _ in range(warmup):
        last = timed(fn, device)
    return Timing([timed(fn, device) for _ in range(affordable_repeats(repeats, last, budget_s))])


def time_alternating(fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int = 1, repeats: int = 3,
                     budget_s: float | None = None) -> dict[str, Timing]:
    """Time several workloads in rounds (A, B, A, B, …) so that drift of the machine hits all alike."""
    last = {name: 0.0 for name in fns}
    for _ in range(warmup):
        for name, fn in fns.items():
            last[name] = timed(fn, device)
    rounds = affordable_repeats(repeats, sum(last.values()), budget_s)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return {name: Timing(t) for name, t in times.items()}


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


def _meminfo(key: str) -> int | None:
    """A ``/proc/meminfo`` field in bytes, or None off Linux."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _status_bytes(key: str) -> int | None:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in bytes, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def available_memory(device: torch.device) -> int:
    """Bytes a new allocation can still get: free GPU memory, or the kernel's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available = _meminfo("MemAvailable")
    if available is None:
        raise RuntimeError("cannot read available memory (/proc/meminfo)")
    return available


def memory_note(device: torch.device, same_process: bool = False) -> str:
    """What the memory column means on this device."""
    if device.type == "cuda":
        return "memory: torch.cuda.max_memory_allocated above the start of the measurement (tensors only)"
    if same_process:
        return ("memory: peak resident-set growth within one process for all configurations (--same-process): "
                "memory freed by an earlier configuration may be reused unseen, so later peaks can read low")
    return ("memory: peak resident-set growth of a fresh process (VmHWM - VmRSS at the start), "
            "after priming the libraries with a tiny model; includes allocator slack, not tensor bytes")


class PeakMemory:
    """Context manager: ``.peak`` = peak bytes above the level at entry (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self.method = ""
        self._start = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "cuda.max_memory_allocated"
        else:
            self._start = _status_bytes("VmRSS") or _maxrss_bytes()
            self.method = "VmHWM" if _reset_peak_rss() and _status_bytes("VmHWM") else "ru_maxrss"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_bytes("VmHWM") if self.method == "VmHWM" else _maxrss_bytes()
        self.peak = max(0, (peak or 0) - self._start)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA OOM and for CPU allocations the system refused."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return "out of memory" in text.lower() or "can't allocate memory" in text.lower()


# --------------------------------------------------------------------------------------
# One configuration per fresh process (CPU memory)
# --------------------------------------------------------------------------------------


class ConfigurationFailed(RuntimeError):
    """A configuration ended without a result; ``out_of_memory`` says whether memory was the cause."""

    def __init__(self, message: str, out_of_memory: bool) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory


def _child(conn: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException as error:  # noqa: BLE001 — reported to the parent, which decides
        conn.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}", is_out_of_memory(error)))
    finally:
        conn.close()


def run_configuration(device: torch.device, fn: Callable[..., Any], *args: Any, same_process: bool = False,
                      **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``: on CPU in a fresh process (``fn`` must be a module-level function)
    unless ``same_process``, on CUDA in this one. Raises :class:`ConfigurationFailed` when it errs,
    runs out of memory or is killed (e.g. by the kernel's OOM killer)."""
    if device.type == "cuda" or same_process:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            if is_out_of_memory(error):
                raise ConfigurationFailed(f"{type(error).__name__}: {error}", True) from error
            raise
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, fn, args, kwargs))
    process.start()
    send.close()
    try:
        reply = receive.recv()
    except EOFError:
        process.join()
        killed = process.exitcode is not None and process.exitcode < 0
        raise ConfigurationFailed(f"the process ended with exit code {process.exitcode}"
                                  + (" (killed, most likely out of memory)" if killed else ""), killed) from None
    process.join()
    if reply[0] == "error":
        raise ConfigurationFailed(reply[1], reply[2])
    return reply[1]


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def parameter_count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_prdit(name: str, size: int, device: torch.device, train: bool = False) -> torch.nn.Module:
    """A registered PRDiT for ``size``³ volumes; for training a stage-2 model its stage 1 is frozen."""
    from prdit.models import create_model

    model = create_model(name, input_size=size).to(device)
    if train and model.stage == 2:
        model.freeze_stage1()
    return model.train(train)


@dataclass(frozen=True)
class UNetSpec:
    """Shape of the voxel-space DDPM baseline (MONAI ``DiffusionModelUNet``, 3D, 1 channel in and out)."""

    channels: tuple[int, ...] = (64, 128, 192, 384)
    attention_levels: tuple[bool, ...] = (False, False, False, True)
    num_res_blocks: int = 2

    def describe(self) -> str:
        """Short text for table headers."""
        levels = "".join("A" if a else "-" for a in self.attention_levels)
        return (f"3D DiffusionModelUNet channels {','.join(map(str, self.channels))}, "
                f"{self.num_res_blocks} res blocks/level, attention levels {levels} (+ middle block)")


# ~97 M parameters at 64³ and beyond: comparable to PRDiT-B/12/4 (93.2 M); self-attention at the
# coarsest level (8³ tokens at 64³) and in the middle block, like common DDPM U-Nets.
DEFAULT_UNET = UNetSpec()
SMOKE_UNET = UNetSpec(channels=(8, 16), attention_levels=(False, True), num_res_blocks=1)


def add_unet_args(parser: argparse.ArgumentParser) -> None:
    """``--unet-channels``, ``--unet-attention``, ``--unet-res-blocks``."""
    parser.add_argument("--unet-channels", default=",".join(map(str, DEFAULT_UNET.channels)),
                        help="U-Net channels per level (each a multiple of 32 unless smaller than 32)")
    parser.add_argument("--unet-attention", default=",".join(str(int(a)) for a in DEFAULT_UNET.attention_levels),
                        help="1/0 per level: self-attention at that level")
    parser.add_argument("--unet-res-blocks", type=int, default=DEFAULT_UNET.num_res_blocks)


def unet_spec_from_args(args: argparse.Namespace) -> UNetSpec:
    """The U-Net the command line asks for (the tiny one under ``--smoke``)."""
    if args.smoke:
        return SMOKE_UNET
    channels = tuple(parse_int_list(args.unet_channels))
    attention = tuple(bool(v) for v in parse_int_list(args.unet_attention))
    if len(attention) != len(channels):
        raise SystemExit(f"--unet-attention needs one 1/0 per level ({len(channels)} levels)")
    return UNetSpec(channels=channels, attention_levels=attention, num_res_blocks=args.unet_res_blocks)


def smoke_model_folder(folder: Path, kind: str = "ian", spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                       seed: int = 0) -> Path:
    """A tiny untrained PRDiT-T/6/1 model folder at 16³ for the ``--smoke`` runs: the zero-initialised output
    layer of the local denoiser gets random weights (std 0.1, from ``seed``) so volumes are not all one value;
    ``kind`` names the process (the same weights serve an IaN teacher and its consistency model)."""
    from prdit.data.normalization import Normalization
    from prdit.diffusion import create_process
    from prdit.model_folder import save_model_folder
    from prdit.models import create_model

    torch.manual_seed(seed)
    model = create_model("PRDiT-T/6/1", input_size=16)
    torch.nn.init.normal_(model.local_denoiser.output.weight, std=0.1)
    return save_model_folder(folder, model, create_process(kind), Normalization(), spacing=spacing)


def build_unet(spec: UNetSpec, device: torch.device) -> torch.nn.Module:
    """MONAI's 3D ``DiffusionModelUNet`` (epsilon prediction) of the given shape."""
    try:
        from monai.networks.nets import DiffusionModelUNet
        import einops  # noqa: F401 — MONAI's attention blocks need it
    except ImportError as error:
        raise SystemExit(f"the U-Net baseline needs MONAI with einops ({error}); `pip install einops`") from None
    groups = math.gcd(32, *spec.channels)
    attended = [c for c, a in zip(spec.channels, spec.attention_levels) if a] + [spec.channels[-1]]
    head_channels = math.gcd(64, *attended)
    return DiffusionModelUNet(spatial_dims=3, in_channels=1, out_channels=1, channels=spec.channels,
                              attention_levels=spec.attention_levels, num_res_blocks=spec.num_res_blocks,
                              norm_num_groups=groups, num_head_channels=head_channels).to(device)


def prime_libraries(device: torch.device, unet: bool = False) -> None:
    """Run a tiny PRDiT (and U-Net) training step and forward once, so that the libraries' one-time
    set-up (thread pools, autograd engine, kernel code; ~95 MiB of RSS on CPU) happens before a
    memory measurement rather than inside it."""
    x0 = training_volume(1, 16, device)
    model = build_prdit("PRDiT-T/6/1", 16, device, train=True)
    prdit_train_step(model, x0, device)()
    with torch.no_grad(), autocast(device):
        model.eval()(x0, torch.full((1,), 500.0, device=device))
    if unet:
        network = build_unet(SMOKE_UNET, device).train()
        unet_train_step(network, x0, device)()
        with torch.no_grad(), autocast(device):
            network.eval()(x0, torch.full((1,), 500, device=device, dtype=torch.long))
    synchronize(device)


def make_optimizer(model: torch.nn.Module, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, with the training settings of docs/method.md §9; ``fused`` (one
    kernel for the whole update, as ``prdit train`` uses) or torch's default multi-tensor one."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                             fused=True if fused else None)


def prdit_train_step(model: torch.nn.Module, x0: torch.Tensor, device: torch.device,
                     fused_adamw: bool = True) -> Callable[[], None]:
    """One training step of a PRDiT: IaN loss, backward, gradient clip 1.0, AdamW."""
    from prdit.diffusion import create_process

    diffusion = create_process("ian")
    optimizer = make_optimizer(model, fused_adamw)
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = diffusion.training_losses(model, x0)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def unet_train_step(model: torch.nn.Module, x0: torch.Tensor, device: torch.device,
                    fused_adamw: bool = True) -> Callable[[], None]:
    """One training step of the DDPM U-Net: epsilon-prediction MSE at a random timestep of the
    linear 1,000-step schedule, backward, gradient clip 1.0, AdamW."""
    from monai.networks.schedulers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = make_optimizer(model, fused_adamw)
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        t = torch.randint(0, 1000, (x0.shape[0],), device=device)
        noise = torch.randn_like(x0)
        with autocast(device):
            x_t = scheduler.add_noise(x0, noise, t)
            loss = torch.nn.functional.mse_loss(model(x_t, t).float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def training_volume(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """``[B, 1, G, G, G]`` stand-in data in the training range [-1, 1] (speed does not depend on content)."""
    generator = torch.Generator().manual_seed(0)
    return (2 * torch.rand(batch, 1, size, size, size, generator=generator) - 1).to(device)


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns (numbers as already formatted strings)."""
    cells = [[str(c) for c in columns]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt_bytes(n: float | None, unit: int = MiB) -> str:
    """Bytes as MiB (or GiB) with sensible precision; ``-`` for missing."""
    if n is None:
        return "-"
    value = n / unit
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def fmt_number(value: float | None) -> str:
    """Three significant digits (whole numbers from 1,000 on); ``-`` for missing."""
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def report(name: str, device: torch.device, args: argparse.Namespace, title: str, notes: Sequence[str],
           columns: Sequence[str], rows: Sequence[Sequence[Any]], results: Any) -> Path:
    """Print the machine, the notes and the table; write everything as JSON. Returns the JSON path."""
    print(f"\n== {title} ==")
    for line in machine_lines(describe_machine(device)) + list(notes):
        print(line)
    print()
    print(format_table(columns, rows))
    path = write_results(name, device, args, title, notes, columns, rows, results)
    print(f"\nwritten {path}")
    return path


def write_results(name: str, device: torch.device, args: argparse.Namespace, title: str, notes: Sequence[str],
                  columns: Sequence[str], rows: Sequence[Sequence[Any]], results: Any) -> Path:
    """Write the machine, arguments, notes, table and results as JSON to ``--json`` (default
    ``benchmarks/results/<name>-<device>.json``), atomically: a kill leaves the previous file or this one. Paths
    are recorded as :func:`recorded` writes them, in the arguments and wherever notes and results repeat them."""
    from prdit.files import atomic_write

    machine = describe_machine(device)
    path = args.json or RESULTS_DIR / f"{name}-{device.type}.json"
    forms = _recorded_forms(vars(args).values())
    arguments = {k: _portable(v, forms) for k, v in vars(args).items()}
    payload = {"benchmark": name, "title": title, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "machine": machine, "arguments": arguments, "notes": _portable(list(notes), forms),
               "table": {"columns": list(columns), "rows": [[_portable(str(v), forms) for v in r] for r in rows]},
               "results": _portable(results, forms)}
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def recorded(path: str | Path) -> str:
    """A path as the results record it: relative to the repository; a model folder outside it by the SHA-256 of
    its weights (``sha256:...``), so that no result names the folders of the machine that measured it."""
    from prdit.model_folder import recorded_model

    return recorded_model(path, REPOSITORY)


def _recorded_forms(values: Any) -> dict[str, str]:
    """Each path among the argument values, absolute (as scripts print them, resolved or not) -> recorded."""
    forms: dict[str, str] = {}
    for value in values:
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(path, Path) and str(path):
                for absolute in {os.path.abspath(path), str(path.resolve())}:
                    forms[absolute] = recorded(path)
    return forms


def _portable(value: Any, forms: dict[str, str]) -> Any:
    """``value`` with its paths recorded: a ``Path`` by :func:`recorded`, and in text each absolute path of
    ``forms`` by its recorded form (longest first) and any other path in the repository relative to it."""
    if isinstance(value, Path):
        return recorded(value)
    if isinstance(value, str):
        for absolute in sorted(forms, key=len, reverse=True):
            value = value.replace(absolute, forms[absolute])
        return value.replace(f"{REPOSITORY}/", "")
    if isinstance(value, dict):
        return {key: _portable(item, forms) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_portable(item, forms) for item in value]
    return value
