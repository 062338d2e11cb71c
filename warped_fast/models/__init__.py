"""Denoiser adapters, conditioning layouts, UNet backends and analytic denoisers."""

from .analytic import GaussianPriorDenoiser
from .denoiser import DiffusersDenoiser, x0_from_model_output
from .layouts import ConditioningLayout, inpaint_condition, sr_condition
from .unet_backends import UNetRunner

__all__ = [
    "ConditioningLayout",
    "DiffusersDenoiser",
    "GaussianPriorDenoiser",
    "UNetRunner",
    "inpaint_condition",
    "sr_condition",
    "x0_from_model_output",
]
