"""Sigma schedules, the Euler ODE sampler, equivariance self-guidance and frame schedules."""

from .euler import sample_image
from .guidance import GuidanceConfig, predict_and_guide
from .schedules import SigmaSchedule, diffusers_schedule, karras_sigmas, timesteps_for_sigmas
from .video import FrameInput, VideoSampler, VideoSamplerConfig

__all__ = [
    "FrameInput",
    "GuidanceConfig",
    "SigmaSchedule",
    "VideoSampler",
    "VideoSamplerConfig",
    "diffusers_schedule",
    "karras_sigmas",
    "predict_and_guide",
    "sample_image",
    "timesteps_for_sigmas",
]
