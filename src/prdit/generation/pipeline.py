"""``PRDiTPipeline``: a model folder as one callable that returns CT volumes, in the style of a
diffusers pipeline (``from_pretrained``, ``to``, ``__call__`` with ``generator`` and
``output_type``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from prdit.data.io import Volume
from prdit.data.normalization import Normalization
from prdit.device import resolve_device
from prdit.diffusion import Hook, Process, progress_hook
from prdit.diffusion.guidance import DEFAULT_GUIDANCE_SCALE
from prdit.errors import ConfigError, DataError
from prdit.generation.config import SamplingConfig
from prdit.generation.sampling import resolve_precision, sample_volumes, volume_generators, volume_seed
from prdit.models.prdit import PRDiT

OUTPUT_TYPES = ("hu", "model")
LabelMaps = str | Path | np.ndarray | torch.Tensor


@dataclass
class PRDiTPipelineOutput:
    """``volumes``: HU ``np.ndarray`` ``[N, D, H, W]`` (float32) or model-range ``torch.Tensor``
    ``[N, C, D, H, W]`` (fp32, CPU); ``seeds``: each volume's seed (None for given generators)."""

    volumes: np.ndarray | torch.Tensor
    seeds: list[int | None]


class PRDiTPipeline:
    """A trained PRDiT with its process, normalisation and voxel spacing."""

    def __init__(self, model: PRDiT, process: Process, normalization: Normalization,
                 spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), device: torch.device | str | None = "auto",
                 precision: str = SamplingConfig.precision, source: str | Path | None = None) -> None:
        self.model = model.eval()
        self.process = process
        self.normalization = normalization
        self.spacing = tuple(float(s) for s in spacing)
        self.precision = precision
        self.source = None if source is None else Path(source)
        self.to(device)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str | None = "auto",
                        input_size: int | tuple[int, int, int] | None = None,
                        precision: str = SamplingConfig.precision) -> "PRDiTPipeline":
        """Load a model folder (``config.json`` + ``model.safetensors``); ``input_size`` samples at
        another size than trained (e.g. a 128³ model at 256³)."""
        from prdit.model_folder import load_model_folder

        folder = load_model_folder(path, device="cpu", input_size=input_size)
        return cls(folder.model, folder.process, folder.normalization, folder.spacing, device=device,
                   precision=precision, source=path)

    def to(self, device: torch.device | str | None) -> "PRDiTPipeline":
        """Move the network to ``device`` (``auto``: CUDA when available)."""
        self.device = resolve_device(device)
        resolve_precision(self.precision, self.device)
        self.model.to(self.device)
        return self

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        """``(D, H, W)`` of a generated volume."""
        return tuple(self.model.config.input_size)

    def settings(self, settings: SamplingConfig | None = None, guided: bool = False, **changes) -> SamplingConfig:
        """``settings`` (default: this pipeline's precision, the process's sampler and steps, those of guided
        reconstruction where ``guided``) with ``changes`` applied, checked and resolved against the model's process."""
        base = settings if settings is not None else SamplingConfig(precision=self.precision)
        return replace(base, **changes).resolved(self.process, guided)

    def guided_settings(self, guidance, settings: SamplingConfig | None = None, **changes) -> SamplingConfig:
        """The settings of guided reconstruction: the predictor–corrector sampler with ``guidance``'s jump and
        corrector noise and the process's ``guided_steps``, unless ``settings`` or ``changes`` say otherwise."""
        changes = {"sampler": "pc", "jump": guidance.jump, "corrector_noise": guidance.corrector_noise, **changes}
        return self.settings(settings, guided=True, **changes)

    def __call__(self, num_volumes: int = 1, settings: SamplingConfig | None = None,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None,
                 indices: Sequence[int] | None = None, output_type: str = "hu",
                 progress: bool | Callable[[int, int], None] = False, hooks: Sequence[Hook] = (),
                 return_dict: bool = True, labels: LabelMaps | None = None, **changes) -> PRDiTPipelineOutput | tuple:
        """Generate volumes; ``changes`` are :class:`SamplingConfig` fields (``steps=250, sampler="pc",
        seed=0, batch_size=4, exact=False, guidance_scale=2.0``) applied to ``settings``.

        ``labels`` (a conditional model): one label map for every volume or one per volume, as a NIfTI
        path, an array or a tensor (``[D, H, W]`` or ``[N, D, H, W]``, see :meth:`label_maps`); each volume
        is guided by its map with classifier-free guidance of scale ``guidance_scale``.

        Seeds: volume ``i`` (of ``range(num_volumes)``, or of ``indices``) gets
        ``volume_seed(seed, i)``, the rule of ``prdit sample``, where a seed is given (as a change
        or in ``settings``); one
        ``generator`` draws the volumes' seeds; a list of generators (one per volume) is used as is;
        with none of them the base seed is drawn from torch's global generator. ``output_type``:
        ``hu`` (numpy, in Hounsfield units, clipped to the window) or ``model`` (tensor, model range,
        unclipped). ``progress``: a tqdm bar, or ``callback(step, steps)`` after each sampler step.
        ``hooks`` see every sampler step (guidance, previews). All volumes are returned at once;
        ``prdit sample`` writes many volumes one by one instead.
        """
        if output_type not in OUTPUT_TYPES:
            raise ConfigError(f"unknown output_type '{output_type}'; choose one of {', '.join(OUTPUT_TYPES)}")
        # A seed given (here or in ``settings``) fixes every volume; none draws a base seed at random.
        seed = changes["seed"] if "seed" in changes else (settings.seed if settings is not None else None)
        settings = self.settings(settings, **changes)
        if output_type == "hu" and self.model.config.in_channels != 1:
            raise ConfigError(f"HU output needs a one-channel model, this one has {self.model.config.in_channels}")
        seeds, generators = self._seeds_and_generators(num_volumes, generator, seed, indices)
        if labels is not None:
            labels = self.label_maps(labels, len(generators))
        elif settings.guidance_scale != DEFAULT_GUIDANCE_SCALE:
            raise ConfigError(f"guidance_scale={settings.guidance_scale} guides by label maps: pass labels= as well")
        bar, callback = None, progress or None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=-(-len(generators) // settings.batch_size) * settings.steps, desc="sampling",
                       unit="step")
            callback = lambda step, total: bar.update(1)  # noqa: E731 (the bar is closed below)
        hooks = [*hooks, progress_hook(callback)] if callback is not None else list(hooks)
        chunks = []
        try:
            for start in range(0, len(generators), settings.batch_size):
                rows = slice(start, start + settings.batch_size)
                result = sample_volumes(self.model, self.process, generators[rows], settings, self.device, hooks,
                                        labels[rows] if labels is not None else None)
                chunks.append(result.volumes.cpu())
        finally:
            if bar is not None:
                bar.close()
        generated = torch.cat(chunks)
        volumes = self.to_hu(generated) if output_type == "hu" else generated
        if not return_dict:
            return volumes, seeds
        return PRDiTPipelineOutput(volumes=volumes, seeds=seeds)

    def reconstruct(self, task: str, measurement: torch.Tensor, operator=None, guidance=None,
                    settings: SamplingConfig | None = None, output_type: str = "hu",
                    progress: Callable[[int, int], None] | None = None, labels: LabelMaps | None = None,
                    **changes) -> PRDiTPipelineOutput:
        """Reconstruct one volume per row of ``measurement`` ``[B, ...]`` (model range; X-ray: projections
        ``[B, V, rows, columns]`` in water-equivalent mm) by guided predictor–corrector sampling (§15).

        ``operator``: the measurement's :class:`~prdit.inverse.operators.Operator` (default: the task's
        own at this model's size and spacing; infill has no default mask). ``guidance``: a
        :class:`~prdit.inverse.guidance.GuidanceSettings` (default: the task's, ``TASK_DEFAULTS``);
        its jump and corrector noise set the sampler's. ``changes``: :class:`SamplingConfig` fields
        (``steps``, ``seed``: volume b gets ``volume_seed(seed, b)``). ``output_type`` as for ``__call__``.
        ``labels`` (a conditional model): the label map of every row or one per row, as for ``__call__``; the
        prior is guided by it with classifier-free guidance of scale ``guidance_scale``.
        """
        from prdit.inverse.guidance import MeasurementGuidance, task_settings
        from prdit.inverse.tasks import task_operator

        if output_type not in OUTPUT_TYPES:
            raise ConfigError(f"unknown output_type '{output_type}'; choose one of {', '.join(OUTPUT_TYPES)}")
        if not self.process.supports_guidance:
            raise ConfigError(f"guided reconstruction needs a process with guided sampling (ian); this model's "
                              f"process is {self.process.kind}")
        guidance = guidance if guidance is not None else task_settings(task)
        operator = operator if operator is not None else task_operator(task, self.volume_shape, self.spacing,
                                                                       self.normalization)
        settings = self.guided_settings(guidance, settings, **changes)
        if labels is not None:
            labels = self.label_maps(labels, measurement.shape[0])
        elif settings.guidance_scale != DEFAULT_GUIDANCE_SCALE:
            raise ConfigError(f"guidance_scale={settings.guidance_scale} guides by label maps: pass labels= as well")
        hook = MeasurementGuidance(operator, measurement.to(self.device), guidance, self.process)
        seeds = [volume_seed(settings.seed, b) for b in range(measurement.shape[0])]
        hooks = [hook] if progress is None else [hook, progress_hook(progress)]
        result = sample_volumes(self.model, self.process, volume_generators(seeds, self.device), settings,
                                self.device, hooks, labels)
        generated = result.volumes.cpu()
        return PRDiTPipelineOutput(volumes=self.to_hu(generated) if output_type == "hu" else generated, seeds=seeds)

    def label_maps(self, labels: LabelMaps, num_volumes: int, table: str | Path | None = None) -> torch.Tensor:
        """``labels`` as ``[num_volumes, D, H, W]`` int64 indices of this model's label set, checked.

        A path is a NIfTI label map on the model's grid (size, spacing, orientation; see
        :meth:`read_label_map`); an array or tensor holds the model's indices, ``[D, H, W]`` (one map for
        all volumes) or ``[N, D, H, W]``.
        """
        conditioning = self.model.require_conditioning()
        if isinstance(labels, (str, Path)):
            labels = torch.from_numpy(self.read_label_map(labels, table))
        maps = torch.as_tensor(labels)
        if maps.ndim == 3:
            maps = maps[None]
        if maps.ndim != 4 or maps.shape[0] not in (1, num_volumes):
            raise DataError(f"label maps of shape {list(maps.shape)} for {num_volumes} volume(s): give one "
                            f"[D, H, W] map for all, or [{num_volumes}, D, H, W], one per volume")
        if not maps.dtype.is_floating_point and maps.dtype != torch.bool:
            maps = maps.long()
        maps = maps.expand(num_volumes, *maps.shape[1:])
        self.model.check_labels(maps, num_volumes)
        if int(maps.max()) >= conditioning.null_index:
            raise DataError(f"label maps hold the value {conditioning.null_index}, which is 'no label' to this "
                            f"model; its labels are 0..{conditioning.null_index - 1}")
        return maps.to(self.device)

    def read_label_map(self, path: str | Path, table: str | Path | None = None) -> np.ndarray:
        """A NIfTI label map on this model's grid as the model's indices ``[D, H, W]`` (int64).

        Its values follow ``table`` (a CSV/JSON of index -> name, or ``totalsegmentator``), else the
        ``labels.json`` beside it, else they are the model's indices. A map with another size, spacing or
        orientation than the model's volumes, NaN, fractions or values its table does not know raises a
        ``DataError`` naming the file. The origin is not checked: a generated volume has none of its own.
        """
        from prdit.data.labels import (PHANTOM_LABELS, TABLE_NAME, LabelTable, label_table, read_label_table,
                                       read_label_values, to_prdit_indices)

        path = Path(path)
        names = self.model.require_conditioning().labels
        if not path.is_file():
            raise DataError(f"{path}: no such label map; give a NIfTI file (.nii.gz) on the model's grid")
        grid = Volume(array=np.broadcast_to(np.uint8(0), self.volume_shape), spacing=self.spacing,
                      origin=(0.0, 0.0, 0.0), direction=np.eye(3))
        values = read_label_values(path, grid, check_origin=False)
        table = table if table is not None else (path.parent / TABLE_NAME
                                                 if (path.parent / TABLE_NAME).is_file() else None)
        if table is not None:
            if tuple(names) == PHANTOM_LABELS:  # prdit's names, TotalSegmentator's mapped onto them
                mapping = label_table(table)
            else:  # a model's own label set: the table names its labels
                index_of = {name: k for k, name in enumerate(names)}
                named = read_label_table(table)
                unknown = sorted(name for name in named.values() if name not in index_of)
                if unknown:
                    raise DataError(f"{table}: label(s) {', '.join(unknown[:5])} are not this model's "
                                    f"({', '.join(names)}); give a table of the model's labels")
                mapping = LabelTable({value: index_of[name] for value, name in named.items()}, str(table))
            return to_prdit_indices(values, mapping, path).astype(np.int64)
        bad = [int(v) for v in np.unique(values) if not 0 <= v < len(names)]
        if bad:
            raise DataError(f"{path}: label value(s) {', '.join(map(str, bad[:10]))} are not labels of this model "
                            f"(0..{len(names) - 1}); give the map's table with --label-table or labels.json beside "
                            f"it")
        return values

    def to_hu(self, x0: torch.Tensor) -> np.ndarray:
        """Model-range ``[N, 1, D, H, W]`` -> HU ``[N, D, H, W]`` float32, clipped to the window."""
        return self.normalization.to_hu(x0[:, 0].detach().float().cpu().numpy())

    def to_volume(self, hu: np.ndarray) -> Volume:
        """One ``[D, H, W]`` HU array with its geometry: training spacing, identity direction
        (the ITK/DICOM axial orientation, LPS) and the origin at the volume's centre."""
        size = np.array(hu.shape[::-1], dtype=np.float64)  # (x, y, z)
        origin = -(size - 1.0) / 2.0 * np.array(self.spacing)
        return Volume(array=hu, spacing=self.spacing, origin=tuple(float(o) for o in origin), direction=np.eye(3))

    def _seeds_and_generators(self, num_volumes: int, generator, seed: int | None,
                              indices: Sequence[int] | None) -> tuple[list[int | None], list[torch.Generator]]:
        if isinstance(generator, (list, tuple)):
            if seed is not None or indices is not None:
                raise ConfigError("pass either a list of generators or seed/indices, not both")
            if len(generator) != num_volumes:
                raise ConfigError(f"{len(generator)} generators given for {num_volumes} volumes; pass one per volume")
            return [None] * num_volumes, list(generator)
        if indices is not None:
            indices = [int(i) for i in indices]
            bad = [i for i in indices if i < 0]
            if bad:
                raise ConfigError(f"volume indices must be >= 0, got {bad}")
            if seed is None:
                raise ConfigError("indices name volumes of a seeded run; pass seed= as well")
        else:
            if num_volumes < 1:
                raise ConfigError(f"num_volumes must be >= 1, got {num_volumes}")
            indices = list(range(num_volumes))
        if generator is not None and seed is not None:
            raise ConfigError("pass either a generator or a seed, not both")
        if generator is not None:
            draws = torch.randint(0, 2**62, (len(indices),), generator=generator, device=generator.device)
            seeds = [int(s) for s in draws.cpu()]
        else:
            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,)).item())
            seeds = [volume_seed(seed, i) for i in indices]
        return seeds, volume_generators(seeds, self.device)
