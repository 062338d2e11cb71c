"""Per-frame restoration quality: MSE, PSNR, SSIM (torchmetrics, analytic). LPIPS, FID, Inception score and
CLIP scores need network weights: they run only from local weight files, with a clear error otherwise.
They also need torchmetrics' optional backends (torchvision for LPIPS, torch-fidelity for FID/IS,
transformers for CLIP), which the pinned CPU environment does not install; with those and local weights
they go through torchmetrics unchanged (not exercised by the test suite, which checks the errors)."""

from __future__ import annotations

from pathlib import Path

import torch


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            f"pred/target: expected equal [T, C, H, W] shapes, got {list(pred.shape)} and {list(target.shape)}"
        )


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame mean squared error ``[T]`` of frames in [0, 1]."""
    _check_pair(pred, target)
    return ((pred.double() - target.double()) ** 2).mean((1, 2, 3))


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
    return structural_similarity_index_measure(
        pred.double().clamp(0, 1), target.double(), data_range=1.0, reduction="none"
    )


def _need_weights(metric: str, weights: str | Path | None) -> Path:
    if weights is None:
        raise FileNotFoundError(
            f"{metric}: needs network weights, which are never downloaded here; pass weights=<local file>"
        )
    p = Path(weights)
    if not p.exists():
        raise FileNotFoundError(f"{metric}: weights file {p} does not exist")
    return p


def lpips(
    pred: torch.Tensor, target: torch.Tensor, weights: str | Path | None = None, net: str = "alex"
) -> torch.Tensor:
    """Per-frame LPIPS from a local torchmetrics-compatible weights file (the backbone is not downloaded)."""
    p = _need_weights("lpips", weights)
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    except ImportError as e:  # pragma: no cover
        raise ImportError("lpips: needs torchmetrics[image] with torchvision") from e
    m = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True, reduction="none")
    from safetensors.torch import load_file

    m.net.load_state_dict(load_file(str(p)), strict=False)
    return m(pred.float().clamp(0, 1), target.float().clamp(0, 1))


def fid(real: torch.Tensor, fake: torch.Tensor, weights: str | Path | None = None) -> float:
    """FID with Inception weights from a local file (``weights``); never downloads."""
    p = _need_weights("fid", weights)
    from torchmetrics.image.fid import FrechetInceptionDistance

    m = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(p))
    m.update(real.float().clamp(0, 1), real=True)
    m.update(fake.float().clamp(0, 1), real=False)
    return float(m.compute())


def inception_score(frames: torch.Tensor, weights: str | Path | None = None) -> float:
    """Inception score with Inception weights from a local file; never downloads."""
    p = _need_weights("inception_score", weights)
    from torchmetrics.image.inception import InceptionScore

    m = InceptionScore(normalize=True, feature_extractor_weights_path=str(p))
    m.update(frames.float().clamp(0, 1))
    return float(m.compute()[0])


def clip_score(frames: torch.Tensor, text: list[str], model_dir: str | Path | None = None) -> float:
    """CLIP score from a local CLIP model folder (transformers format); never downloads."""
    p = _need_weights("clip_score", model_dir)
    from torchmetrics.multimodal.clip_score import CLIPScore

    m = CLIPScore(model_name_or_path=str(p))
    return float(m((frames.clamp(0, 1) * 255).to(torch.uint8), text))
