"""The IaN diffusion process and its samplers."""

from prdit.diffusion.ian import IaNDiffusion
from prdit.diffusion.samplers import SAMPLERS, SampleResult, euler_step, sample

__all__ = ["IaNDiffusion", "SAMPLERS", "SampleResult", "euler_step", "sample"]
