"""What a training config builds: its process, normalisation and network, and the stage-2 start."""

from __future__ import annotations

from pathlib import Path

from prdit.data.normalization import Normalization
from prdit.diffusion import Process, create_process
from prdit.model_folder import load_strict, load_weights
from prdit.models import PRDiT, create_model
from prdit.training.config import ExperimentConfig


def normalization_of(config: ExperimentConfig) -> Normalization:
    """The intensity normalisation a config trains with."""
    d = config.data
    return Normalization(kind=d.normalization, hu_min=d.hu_min, hu_max=d.hu_max, quantile=d.quantile,
                         quantile_clip_hu=d.quantile_clip_hu)


def process_of(config: ExperimentConfig) -> Process:
    """The generative process a config trains."""
    return create_process(config.process.kind, **config.process.settings)


def build_model(config: ExperimentConfig) -> PRDiT:
    """The network a config describes, with the output channels its process needs."""
    m = config.model
    return create_model(m.name, input_size=m.input_size, in_channels=m.in_channels,
                        out_channels=process_of(config).output_channels(m.in_channels))


def initialise_from(model: PRDiT, source: str | Path) -> str:
    """Stage 2 from stage 1: copy and (later) freeze the coarse branch. A source that already has a
    global refiner (or a stage-1 model continuing) loads whole and strictly — the 128³ → 256³
    scale-up, which works because the positional encoding is fixed, not learned."""
    weights = load_weights(source)
    state, described = weights.state, weights.source
    model.load_stage1(state)  # checks width and patch size with a clear message
    if model.stage == 1 or any(k.startswith("global_refiner.") for k in state):
        load_strict(model, state, source)
        return f"all weights from {described}"
    return f"stage-1 weights from {described}"
