"""Temporal-consistency (self-warping error) and restoration-quality metrics."""

from .perceptual import clip_score, fid, frechet_distance, inception_score, lpips
from .quality import mse, psnr, ssim
from .warping import warping_error

__all__ = [
    "clip_score",
    "fid",
    "frechet_distance",
    "inception_score",
    "lpips",
    "mse",
    "psnr",
    "ssim",
    "warping_error",
]
