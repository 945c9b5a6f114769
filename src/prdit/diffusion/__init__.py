"""The generative processes of the PRDiT family (IaN, flow matching, consistency models distilled from
IaN), their interface and registry, and the sampling loop."""

from prdit.diffusion.consistency import ConsistencyModel
from prdit.diffusion.flow import FlowMatching
from prdit.diffusion.ian import IaNDiffusion
from prdit.diffusion.process import Prediction, Process
from prdit.diffusion.registry import PROCESSES, create_process, process_from_dict
from prdit.diffusion.samplers import (Denoiser, Hook, SampleResult, SamplerSettings, SamplerStep, progress_hook,
                                      sample)

__all__ = ["ConsistencyModel", "FlowMatching", "IaNDiffusion", "Prediction", "Process", "PROCESSES", "create_process",
           "process_from_dict", "Denoiser", "Hook", "SampleResult", "SamplerSettings", "SamplerStep",
           "progress_hook", "sample"]
