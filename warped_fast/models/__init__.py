"""Denoiser adapters, conditioning layouts, UNet backends and analytic denoisers."""

from .analytic import GaussianPriorDenoiser
from .autoencoder import DiffusersVAE, IdentityAutoencoder
from .default import default_model, default_model_dir, load_model, load_unet_folder
from .denoiser import DiffusersDenoiser, x0_from_model_output
from .flux import FluxFillDenoiser, encode_flux_prompt
from .layouts import ConditioningLayout, inpaint_condition, sr_condition
from .noise_augmentation import NoiseAugmentation
from .prompts import PromptEmbeddings, encode_prompt
from .unet_backends import UNetRunner

__all__ = [
    "ConditioningLayout",
    "DiffusersVAE",
    "IdentityAutoencoder",
    "NoiseAugmentation",
    "DiffusersDenoiser",
    "FluxFillDenoiser",
    "GaussianPriorDenoiser",
    "PromptEmbeddings",
    "UNetRunner",
    "default_model",
    "default_model_dir",
    "encode_flux_prompt",
    "encode_prompt",
    "load_model",
    "load_unet_folder",
    "inpaint_condition",
    "sr_condition",
    "x0_from_model_output",
]
