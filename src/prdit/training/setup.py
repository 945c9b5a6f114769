"""What a training config builds: its process, normalisation and network, and the stage-2 start."""

from __future__ import annotations

from pathlib import Path

from prdit.data.labels import PHANTOM_LABELS
from prdit.data.normalization import Normalization
from prdit.diffusion import Process, create_process
from prdit.model_folder import load_strict, load_weights
from prdit.errors import CheckpointError
from prdit.models import PRDiT, create_model
from prdit.models.conditioning import Conditioning
from prdit.training.config import ExperimentConfig


def normalization_of(config: ExperimentConfig) -> Normalization:
    """The intensity normalisation a config trains with."""
    d = config.data
    return Normalization(kind=d.normalization, hu_min=d.hu_min, hu_max=d.hu_max, quantile=d.quantile,
                         quantile_clip_hu=d.quantile_clip_hu)


def process_of(config: ExperimentConfig) -> Process:
    """The generative process a config trains."""
    return create_process(config.process.kind, **config.process.settings)


def conditioning_of(config: ExperimentConfig) -> Conditioning | None:
    """The label-map conditioning a config trains (prdit's label set), None for an unconditional model."""
    if not config.model.conditioning:
        return None
    return Conditioning(labels=PHANTOM_LABELS, stages=config.model.conditioning)


def build_model(config: ExperimentConfig) -> PRDiT:
    """The network a config describes, with the output channels its process needs."""
    m = config.model
    return create_model(m.name, input_size=m.input_size, in_channels=m.in_channels,
                        out_channels=process_of(config).output_channels(m.in_channels),
                        conditioning=conditioning_of(config))


def initialise_from(model: PRDiT, source: str | Path) -> str:
    """Stage 2 from stage 1: copy and (later) freeze the coarse branch. A source that already has a
    global refiner (or a stage-1 model continuing) loads whole and strictly — the 128³ → 256³
    scale-up, which works because the positional encoding is fixed, not learned."""
    weights = load_weights(source)
    state, described = weights.state, weights.source
    fresh_labels = _fresh_label_weights(model, state, source)
    state = {**fresh_labels, **state}
    if fresh_labels:
        described += "; the label conditioning starts fresh, its projections at zero"
    model.load_stage1(state)  # checks width and patch size with a clear message
    if model.stage == 1 or any(k.startswith("global_refiner.") for k in state):
        grown = _shallower_refiner(model, state)
        if grown is None:
            load_strict(model, state, source)
            return f"all weights from {described}"
        fresh = {k: v for k, v in model.state_dict().items() if k.startswith(_BLOCKS) and _block_index(k) >= grown}
        load_strict(model, {**fresh, **state}, source)  # any other missing, unexpected or mis-shaped key is an error
        depth = len(model.global_refiner.blocks)
        return (f"all weights from {described}, whose {grown} DiT blocks are this model's first; blocks "
                f"{grown}-{depth - 1} start as the identity (adaLN-Zero), so the model starts as its source")
    return f"stage-1 weights from {described}"


_BLOCKS = "global_refiner.blocks."
_LABELS = "label_conditioning."


def _fresh_label_weights(model: PRDiT, state: dict, source: str | Path) -> dict:
    """A conditional model's own (fresh, zero-projected) label weights where ``state`` has none: an unconditional
    source then loads strictly into every other weight. A conditional source must have them all (strict load)."""
    own = {k: v for k, v in model.state_dict().items() if k.startswith(_LABELS)}
    theirs = [k for k in state if k.startswith(_LABELS)]
    unknown = [k for k in theirs if k not in own]
    if unknown:
        raise CheckpointError(f"{source}: conditioned on label maps in a way this model is not ({unknown[0]}, ...); "
                              f"set model.conditioning as the source was trained")
    if not own or theirs:
        return {}
    return own


def _block_index(name: str) -> int | None:
    """The DiT block a weight belongs to, None outside the blocks."""
    return int(name[len(_BLOCKS):].split(".", 1)[0]) if name.startswith(_BLOCKS) else None


def _shallower_refiner(model: PRDiT, state: dict) -> int | None:
    """The depth of a source's global refiner when its blocks are the first of ``model``'s, fewer of them:
    deepening a trained model keeps its blocks, and the new ones, zero-gated, leave its output unchanged.
    None for any other source (the strict load then names what does not fit)."""
    if model.global_refiner is None:
        return None
    theirs = {_block_index(k) for k in state} - {None}
    if not theirs or theirs != set(range(len(theirs))) or len(theirs) >= len(model.global_refiner.blocks):
        return None
    return len(theirs)
