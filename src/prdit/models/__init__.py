"""The PRDiT network: local denoiser, global residual DiT, registry."""

from prdit.models.prdit import PRDiT, PRDiTConfig, count_parameters
from prdit.models.registry import create_model, model_names, model_spec, stage1_name

__all__ = ["PRDiT", "PRDiTConfig", "count_parameters", "create_model", "model_names", "model_spec", "stage1_name"]
