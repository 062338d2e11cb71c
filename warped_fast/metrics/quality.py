"""Per-frame restoration quality without network weights: MSE, PSNR, SSIM (torchmetrics). The metrics
that need networks (LPIPS, FID, Inception score, CLIP score) are in :mod:`.perceptual`."""

from __future__ import annotations

import torch

from ..ops._checks import OVERSHOOT, check_unit_range


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    for name, t in (("pred", pred), ("target", target)):
        check_tensor_frames(name, t)
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            f"pred/target: expected equal [T, C, H, W] shapes, got {list(pred.shape)} and {list(target.shape)}"
        )
    check_unit_range("pred", pred, slack=OVERSHOOT)  # a model's output: clamped
    check_unit_range("target", target)


def check_tensor_frames(name: str, t) -> None:
    """``t`` is a floating-point tensor, else a TypeError naming ``name`` and the conversion."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor [T, C, H, W] in [0, 1], got {type(t).__name__} "
            "(warped_fast.io.read_video converts arrays such as [T, H, W, 3] uint8 frames)"
        )
    if not t.is_floating_point():
        raise TypeError(
            f"{name}: expected float frames in [0, 1], got {t.dtype} (divide 0..255 values by 255)"
        )


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame mean squared error ``[T]`` of frames in [0, 1] (``pred`` clamped to [0, 1], what a saved
    frame holds, as for :func:`psnr` and :func:`ssim`)."""
    _check_pair(pred, target)
    return ((pred.double().clamp(0, 1) - target.double()) ** 2).mean((1, 2, 3))


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB ``[T]`` (data range 1)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_pair(pred, target)
    return peak_signal_noise_ratio(
        pred.double().clamp(0, 1), target.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame SSIM ``[T]`` (Gaussian window 11, sigma 1.5, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(pred, target)
    if min(pred.shape[-2:]) < 6:  # the 11-tap window pads by 5 on each side
        raise ValueError(f"pred: SSIM needs frames of at least 6x6 pixels, got {list(pred.shape[-2:])}")
    return structural_similarity_index_measure(
        pred.double().clamp(0, 1), target.double(), data_range=1.0, reduction="none"
    )
