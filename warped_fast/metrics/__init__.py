"""Temporal-consistency (self-warping error) and restoration-quality metrics."""

from .quality import clip_score, fid, inception_score, lpips, mse, psnr, ssim
from .warping import warping_error

__all__ = ["clip_score", "fid", "inception_score", "lpips", "mse", "psnr", "ssim", "warping_error"]
