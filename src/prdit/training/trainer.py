"""The two-stage training loop (docs/method.md §9, §12): one explicit loop for both stages and any
process of the family, DDP through torchrun, EMA, gradient accumulation, exact resume. The stage
follows from the model's depth; what the config builds lives in ``setup.py``, the run directory
in ``run_dir.py``."""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prdit.device import CompiledModule, compiled
from prdit.diffusion import Process
from prdit.errors import ConfigError, PRDiTError
from prdit.model_folder import CHECKPOINT_DIR
from prdit.models.conditioning import drop_labels
from prdit.training import distributed as D
from prdit.training.checkpoint import (capture_rng_state, checkpoint_path, load_checkpoint, prune_checkpoints,
                                       restore_rng_state, save_atomic)
from prdit.training.config import ExperimentConfig
from prdit.training.ema import EMA, warmed_up_decay
from prdit.training.interrupts import DeferredInterrupts, ignore_interrupts, launched_by_torchrun
from prdit.training.metrics import MetricsLogger
from prdit.training.run_dir import prepare_run_directory, write_run_config
from prdit.training.schedule import learning_rate
from prdit.training.setup import build_model, initialise_from, normalization_of, process_of


@dataclass
class RunState:
    """What a finished (or interrupted) call of :func:`train` reports."""

    run_dir: Path
    step: int
    last_loss: float
    checkpoint: Path | None


def _random_flips(x: torch.Tensor, generator: torch.Generator,
                  labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mirror each volume left-right (the W axis) with probability 1/2, drawn from the trainer's
    generator so a resumed run flips the same volumes; a volume's label map ``[D, H, W]`` with it."""
    chosen = (torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5).to(x.device)
    if labels is not None:
        labels = torch.where(chosen.reshape(-1, 1, 1, 1), labels.flip(-1), labels)
    return torch.where(chosen.reshape(-1, 1, 1, 1, 1), x.flip(-1), x), labels


@torch.no_grad()
def validate(model: torch.nn.Module, process: Process, dataset, config: ExperimentConfig,
             dist: D.DistInfo, device: torch.device, batch_size: int) -> dict[str, float]:
    """x₀-MSE at fixed noise levels on the validation split, each rank its shard, summed over ranks.
    Noise is seeded by volume index, so the numbers are comparable between evaluations."""
    count = min(len(dataset), config.log.val_max_volumes)
    indices = list(range(dist.rank, count, dist.world_size))
    times = [process.time_at_noise_level(level) for level in config.log.val_noise_levels]
    totals = torch.zeros(len(times) + 1, dtype=torch.float64, device=device)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        items = [dataset[i] for i in chunk]
        # A conditional model is validated on each volume's own label map.
        labels = torch.stack([item[1] for item in items]).to(device) if dataset.labels else None
        x0 = torch.stack([item[0] if dataset.labels else item for item in items]).to(device)
        generators = [torch.Generator().manual_seed(10_000 + i) for i in chunk]
        noise = process.sample_noise(x0.shape, generator=generators).to(device)
        for k, t_value in enumerate(times):
            t = torch.full((len(chunk),), t_value, device=device)
            x_t = process.q_sample(x0, t, noise)
            time_input = process.model_time(t)
            output = model(x_t, time_input) if labels is None else model(x_t, time_input, labels)
            x0_hat = process.predict(output.float(), x_t, t).x0
            totals[k] += ((x0_hat - x0) ** 2).mean(dim=(1, 2, 3, 4)).sum().double()
        totals[-1] += len(chunk)
    D.all_reduce(totals)
    n = max(totals[-1].item(), 1.0)
    values = {f"x0_mse_t{t:g}": totals[k].item() / n for k, t in enumerate(times)}
    values["x0_mse"] = sum(values.values()) / max(len(times), 1)
    return values


def train(config: ExperimentConfig, resume: bool = False, progress: bool = True,
          stop_after: int | None = None, time_limit_s: float | None = None) -> RunState:
    """Train one stage as ``config`` says; continue from the run's newest checkpoint if it has one.

    ``stop_after`` ends the call after that many steps of this call, ``time_limit_s`` after the
    first step that ends past that many seconds; either way a checkpoint is written and the run
    can be continued later. Ctrl-C or SIGTERM ends it when the step in progress has finished, on
    every rank, with a checkpoint of that step and a ``PRDiTError`` saying so.
    """
    started = time.perf_counter()
    from torch.nn.parallel import DistributedDataParallel

    from prdit.data.dataset import VolumeDataset

    dist = D.setup_distributed()
    device = torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and config.train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if config.train.global_batch % dist.world_size:
        raise ConfigError(f"train.global_batch {config.train.global_batch} is not divisible by "
                          f"{dist.world_size} processes")
    batch_size = config.train.global_batch // dist.world_size
    micro_batch = min(config.train.micro_batch or batch_size, batch_size)

    # Rank 0 decides for every rank: a rank that alone saw no checkpoint (a node-local run folder) would start at
    # step 0 and run more steps, and so more collectives, than the others.
    run_dir, resume_from = D.on_main(lambda: prepare_run_directory(config, resume), dist)

    seed = config.train.seed
    random.seed(seed + dist.rank)
    np.random.seed(seed + dist.rank)
    torch.manual_seed(seed + dist.rank)

    normalization = normalization_of(config)
    process = process_of(config)
    data_root = config.data.root or None
    conditional = bool(config.model.conditioning)  # (volume, label map) pairs, docs/method.md §20
    train_set = VolumeDataset(config.data.train, size=config.model.input_size, normalization=normalization,
                              root=data_root, cache=config.data.cache, labels=conditional)
    val_set = (VolumeDataset(config.data.val, size=config.model.input_size, normalization=normalization,
                             root=data_root, cache=config.data.cache, labels=conditional) if config.data.val else None)

    # Identical weights on every rank, before any DDP wrap (docs/method.md §12.3).
    torch.manual_seed(seed)
    model = build_model(config).to(device)
    checkpoint = load_checkpoint(resume_from, map_location="cpu") if resume_from else None
    distilling = bool(config.distill.teacher)  # consistency distillation (docs/method.md §18)
    if process.kind == "consistency" and not distilling:
        raise ConfigError("a consistency model is distilled from an IaN teacher: run `prdit distill MODEL_DIR` "
                          "(or give distill.teacher=MODEL_DIR)")
    init_from = config.train.init_from or config.distill.teacher  # a student starts from its teacher
    init_note = ""
    objective = process  # what draws times and noise and gives the losses
    if distilling:  # the teacher is checked before any weights are loaded from it
        from prdit.training.distill import distill_objective

        objective = distill_objective(config, model, process, device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"], strict=True)
        init_note = f"resumed from {resume_from}"
    elif model.stage == 2 or init_from:
        if not init_from:
            raise ConfigError(f"{model.name} is a stage-2 model: give the stage-1 run with --init-from "
                              f"(or train.init_from=...), e.g. --init-from runs/<stage-1 run>")
        init_note = initialise_from(model, init_from)
    if distilling:
        init_note += f"; distilling the IaN model {config.distill.teacher}"
    if model.stage == 2 and (not distilling or config.distill.freeze_stage1):
        model.freeze_stage1()
    model.set_grad_checkpointing(config.train.grad_checkpointing)
    ema = EMA(model, config.optim.ema_decay)
    # A distilled student starts as the teacher: the EMA warms up (distill.ema_warmup) so it does not keep it.
    warm_ema = distilling and config.distill.ema_warmup
    params = [p for p in model.parameters() if p.requires_grad]  # clipped together
    # Distillation also learns the adaptive weighting w(t), outside the clipped norm (a gradient of about 1
    # per feature from the first step on would otherwise scale the student's gradient down).
    optimized = params + (list(objective.parameters()) if distilling else [])
    optimizer = torch.optim.AdamW(optimized, lr=config.optim.lr, betas=tuple(config.optim.betas),
                                  eps=config.optim.eps, weight_decay=config.optim.weight_decay, fused=True)
    generator = torch.Generator(device=device).manual_seed(seed * 1000 + dist.rank)
    start_step = 0
    if checkpoint is not None:
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_step = int(checkpoint["step"])
        if distilling:
            objective.load_state_dict(checkpoint["objective"])
        restore_rng_state(checkpoint["rng"])
        states = checkpoint["generators"]
        if len(states) == dist.world_size:
            generator.set_state(states[dist.rank])
        del checkpoint
    # Written only once data and weights are in place, so a failed start leaves no run behind
    # that would block the corrected command.
    D.barrier()
    if dist.is_main:
        write_run_config(run_dir, config)

    forward_model: torch.nn.Module | CompiledModule = model
    ddp_model = None
    if dist.enabled:
        forward_model = ddp_model = DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    if config.train.compile:
        forward_model = compiled(forward_model, "training")

    total = config.train.steps
    end = total if stop_after is None else min(total, start_step + stop_after)
    sampler = D.ShardedBatchSampler(len(train_set), batch_size, dist.rank, dist.world_size, seed, start_step, end)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=config.data.num_workers,
                                         pin_memory=device.type == "cuda", persistent_workers=False,
                                         worker_init_fn=ignore_interrupts)
    logger = MetricsLogger(run_dir, start_step, config.log.tensorboard) if dist.is_main else None
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if device.type == "cuda" and config.train.precision == "bf16" else contextlib.nullcontext())

    def boundary() -> tuple[dict, torch.Tensor]:
        """The RNG state between two steps, which a checkpoint of that step must hold."""
        return capture_rng_state(), generator.get_state()

    def save(step: int, rng: tuple[dict, torch.Tensor]) -> Path | None:
        generators = D.all_gather_objects(rng[1])
        path = None
        if dist.is_main:
            path = checkpoint_path(run_dir / CHECKPOINT_DIR, step)
            save_atomic({
                "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "step": step, "rng": rng[0], "generators": generators,
                "data_position": sampler.position(step), "config": config.to_dict(),
                **({"objective": objective.state_dict()} if distilling else {}),
                "meta": {"spacing": list(train_set.spacing), "stage": model.stage, "world_size": dist.world_size,
                         "model_name": model.name},
            }, path)
            prune_checkpoints(run_dir / CHECKPOINT_DIR, config.log.keep_last, config.log.milestone_every)
        D.barrier()
        return path

    bar = None
    if dist.is_main and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start_step, desc=f"stage {model.stage} {config.run.name}",
                   unit="step", dynamic_ncols=True)
        bar.write(f"{model.name} at {config.model.input_size}³, {len(train_set)} training volumes, "
                  f"global batch {config.train.global_batch} on {dist.world_size} process(es), {device}"
                  + (f"; {init_note}" if init_note else ""))

    names = objective.loss_names

    def gradients(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                  labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's gradients in ``.grad``, micro-batch by micro-batch ([B, C, D, H, W] in
        micro-batches of ``micro_batch``; a conditional model's label maps [B, D, H, W] beside them): the
        weighted losses and whether this rank's are finite."""
        optimizer.zero_grad(set_to_none=True)
        step_losses = torch.zeros(len(names), dtype=torch.float64, device=device)
        local_finite = torch.ones(1, device=device)
        starts = range(0, x0.shape[0], micro_batch)
        for k, lo in enumerate(starts):
            part = slice(lo, lo + micro_batch)
            weight = x0[part].shape[0] / x0.shape[0]
            # Gradients are all-reduced once per step, on the last micro-batch.
            sync = (ddp_model.no_sync() if ddp_model is not None and k < len(starts) - 1
                    else contextlib.nullcontext())
            with sync:
                with autocast:
                    # The process calls the network as (x_t, t); a conditional model gets its maps bound, and a
                    # distillation's teacher (and stop-gradient student) gets the same maps from the objective.
                    maps = labels[part] if labels is not None else None
                    network = functools.partial(forward_model, labels=maps) if maps is not None else forward_model
                    losses = objective.training_losses(network, x0[part], t=t[part], noise=noise[part],
                                                       **({"labels": maps} if distilling else {}))
                (losses["loss"] * weight).backward()
            values = torch.stack([losses[key].detach().double() for key in names])
            step_losses += weight * values
            local_finite = local_finite * torch.isfinite(values[0]).float()
        if distilling and dist.enabled:  # the weighting is outside the DDP module: average its gradients here
            for p in objective.parameters():
                D.all_reduce(p.grad)
                p.grad /= dist.world_size
        return step_losses, local_finite

    window = torch.zeros(len(names) + 1, dtype=torch.float64, device=device)  # each loss, then the step count
    skipped = 0
    last_loss = float("nan")
    last_path = None
    tick, tick_step = time.perf_counter(), start_step
    # The RNG state at the end of the last finished step: what its checkpoint holds, whatever
    # validation or a preview draw afterwards, so a resumed run continues exactly.
    completed_rng = boundary()
    step = start_step
    # Ctrl-C and SIGTERM stop the run at the end of the step in progress, on every rank together.
    interrupts = DeferredInterrupts(second_stops_at_once=not launched_by_torchrun(), announce=dist.is_main)
    try:
        interrupts.install()
        model.train()
        for step, batch in enumerate(loader, start=start_step):
            x0, labels = batch if conditional else (batch, None)
            x0 = x0.to(device, non_blocking=True)
            if labels is not None:
                labels = labels.to(device, non_blocking=True)
            if config.data.flip:
                x0, labels = _random_flips(x0, generator, labels)
            if labels is not None:  # the null condition that classifier-free guidance compares against
                labels = drop_labels(labels, model.config.conditioning.null_index, config.train.label_dropout,
                                     config.train.class_dropout, generator)
            # Timesteps and noise for the whole batch first, so micro-batches see what one big batch would.
            if distilling:
                objective.step = step  # the warm-up of the consistency target, the round of progressive distillation
            t = objective.sample_time(x0.shape[0], x0.device, generator)
            noise = objective.sample_noise(x0.shape, x0.device, generator, x0.dtype)
            try:
                step_losses, local_finite = gradients(x0, t, noise, labels)
            except Exception as err:
                # A compiled backward graph is built lazily, on the first backward() of each
                # graph, outside the guarded forward: the step is repeated eagerly. Under DDP
                # the other ranks are already reducing this step's gradients; it cannot be redone.
                if (not isinstance(forward_model, CompiledModule) or not forward_model.is_compiled
                        or isinstance(err, torch.cuda.OutOfMemoryError)):
                    raise
                if dist.enabled:
                    raise PRDiTError(f"step {step + 1} failed with train.compile=true ({type(err).__name__}: {err}); "
                                     "where torch.compile is the cause, run again with train.compile=false") from err
                forward_model.fall_back(err)
                step_losses, local_finite = gradients(x0, t, noise, labels)
            # Skip a non-finite step on every rank together, so no rank waits in all-reduce.
            finite = D.all_reduce(local_finite, "min").item() > 0
            if finite:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
                if torch.isfinite(grad_norm):
                    rate = learning_rate(step, total, config.optim.lr, config.optim.schedule,
                                         config.optim.warmup_steps, config.optim.final_lr)
                    for group in optimizer.param_groups:
                        group["lr"] = rate
                    optimizer.step()
                    ema.update(warmed_up_decay(config.optim.ema_decay, step) if warm_ema else None)
                else:
                    finite = False
            if not finite:
                skipped += 1
                if bar is not None:
                    bar.write(f"step {step + 1}: non-finite loss or gradient, step skipped on all ranks")
            else:
                window += torch.cat([step_losses, torch.ones(1, dtype=torch.float64, device=device)])
            completed_rng = boundary()
            done = step + 1
            out_of_time = time_limit_s is not None and D.all_reduce(torch.tensor(
                [float(time.perf_counter() - started > time_limit_s)], device=device), "max").item() > 0
            last = done == end or out_of_time  # the last step of this call: log, validate, preview, save
            if done % config.log.every == 0 or last:
                D.all_reduce(window)
                count = max(window[-1].item(), 1.0)
                now = time.perf_counter()
                values = {name: window[k].item() / count for k, name in enumerate(names)}
                values.update({"grad_norm": float(grad_norm) if finite else math.nan,
                               "lr": optimizer.param_groups[0]["lr"], "skipped": skipped,
                               "steps_per_s": (done - tick_step) / max(now - tick, 1e-9)})
                last_loss = values["loss"]
                tick, tick_step, window = now, done, torch.zeros_like(window)
                if logger is not None:
                    logger.log(done, "train", values)
                if bar is not None:
                    bar.set_postfix(loss=f"{values['loss']:.4f}")
            if val_set is not None and config.log.val_every > 0 and (done % config.log.val_every == 0 or last):
                values = validate(ema.model, process, val_set, config, dist, device, batch_size)
                if logger is not None:
                    logger.log(done, "val", values)
                if bar is not None:
                    bar.write(f"step {done}: validation x0-MSE {values['x0_mse']:.5f} (EMA)")
            if (model.stage == 2 and dist.is_main and config.log.preview_every > 0
                    and (done % config.log.preview_every == 0 or last)):
                from prdit.training.previews import save_training_preview

                save_training_preview(ema.model, process, normalization, run_dir / "previews" / f"step_{done:08d}.png",
                                      config.log.preview_num, config.log.preview_steps, seed, device)
            saved = done % config.log.checkpoint_every == 0 or last
            if saved:
                last_path = save(done, completed_rng)
            if bar is not None:
                bar.update(1)
            if interrupts.stop_requested(device):  # the step boundary: every rank asks, every step
                if not saved:
                    last_path = save(done, completed_rng)
                where = f" in {last_path}" if last_path else " by rank 0"
                raise PRDiTError(f"interrupted; checkpoint saved at step {done}{where}. "
                                 "Run the same command again to continue.")
            if out_of_time:
                end = done
                if bar is not None:
                    bar.write(f"time limit of {time_limit_s:.0f} s reached at step {done}; checkpoint saved")
                break
        step = end
    except KeyboardInterrupt:
        raise PRDiTError(f"interrupted again: stopped at once during step {step + 1}, without saving it. "
                         "Run the same command again to continue from the newest checkpoint.") from None
    except torch.cuda.OutOfMemoryError as err:
        raise PRDiTError(f"out of GPU memory at {config.model.input_size}³ with {batch_size} volumes per GPU: "
                         "lower train.global_batch, use more GPUs, or set train.grad_checkpointing=true") from err
    finally:
        interrupts.restore()
        if bar is not None:
            bar.close()
        if logger is not None:
            logger.close()
    interrupts.redeliver()
    return RunState(run_dir=run_dir, step=end, last_loss=last_loss, checkpoint=last_path)
