"""Equivariance self-guidance for one batched denoiser call (method section 4, Algorithm 1 steps 1-4).

Exact mode: D with autograd on, ``g = grad_u ||M (warp(D, f) - D_prev)||`` through the denoiser (one
forward, one backward). Jacobian-free mode (section 5): dD/du taken as the identity, so ``g`` is the
adjoint warp of ``r / ||r||`` and the denoiser runs forward only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..ops import guidance_grad, guidance_loss
from ..ops._checks import check_bool, check_int, check_real
from ..reference.guidance import NORM_GRAD_MIN_RMS


@dataclass(frozen=True)
class GuidanceConfig:
    """Guidance settings.

    Attributes:
        lam: lambda, the step size of the guidance term (paper: 1).
        mode: "exact" (gradient through the denoiser), "jacobian_free", or "off" (lambda = 0).
        loss: "norm" (gradient of ||r||, as in DPS; default) or "squared" (of ||r||^2).
        start_step, end_step: guidance on steps ``start_step <= t < end_step`` (None: to the end).
        occlusion: also mask pixels failing the forward-backward check (needs backward flows).
    """

    lam: float = 1.0
    mode: Literal["exact", "jacobian_free", "off"] = "exact"
    loss: Literal["norm", "squared"] = "norm"
    start_step: int = 0
    end_step: int | None = None
    occlusion: bool = False

    def __post_init__(self):
        if self.mode not in ("exact", "jacobian_free", "off"):
            raise ValueError(f"mode: expected 'exact', 'jacobian_free' or 'off', got {self.mode!r}")
        if self.loss not in ("norm", "squared"):
            raise ValueError(f"loss: expected 'norm' or 'squared', got {self.loss!r}")
        check_real("lam", self.lam, 0)
        check_int("start_step", self.start_step, 0)
        if self.end_step is not None:
            check_int("end_step", self.end_step, 0)
        check_bool("occlusion", self.occlusion)
        if self.end_step is not None and self.end_step < self.start_step:
            raise ValueError(
                f"start_step/end_step: expected 0 <= start <= end, got {self.start_step}, {self.end_step}"
            )

    def active(self, step: int) -> bool:
        """Whether step ``step`` (0-based) is guided (for frames after the first)."""
        if self.mode == "off" or self.lam == 0:
            return False
        return step >= self.start_step and (self.end_step is None or step < self.end_step)

    def differentiates(self, steps: int) -> bool:
        """Whether a run of ``steps`` steps takes gradients through the denoiser (mode "exact", some step
        guided): torch.inference_mode() forbids it."""
        return self.mode == "exact" and any(self.active(k) for k in range(steps))


def check_gradients_allowed() -> None:
    """Exact guidance differentiates through the denoiser, which ``torch.inference_mode()`` forbids."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "guidance: mode='exact' differentiates through the denoiser, which torch.inference_mode() "
            "forbids; run under torch.no_grad() instead, or use mode='jacobian_free'"
        )


# The normalized loss's dead zone, relative to the RMS of the previous prediction: DEAD_ZONE_EPS roundings of
# the precision the model computes in (bfloat16: 0.8%, float16 and CUDA's TF32 convolutions: 0.1%), at least
# DEAD_ZONE_MIN (float32's rounding accumulates through the layers: a tiny UNet's batch layouts differ by
# 3 roundings, 4e-7). Project choice: the shipped model in bfloat16, a static clip batched two ways (the
# wavefront schedule), needs half a rounding to keep its frames equal; the residuals guidance corrects
# (warping errors of about 1e-3 in MSE, 3% RMS) are several times one.
DEAD_ZONE_EPS = 1.0
DEAD_ZONE_MIN = 1e-5


def compute_eps(dtype: torch.dtype, device: torch.device) -> float:
    """The machine epsilon of the precision a model with parameters of ``dtype`` computes in on
    ``device``: TF32's (2^-10) for float32 on CUDA while cuDNN may use it for convolutions (PyTorch's
    default), else the dtype's."""
    if dtype == torch.float32 and device.type == "cuda":
        try:
            tf32 = torch.backends.cudnn.conv.fp32_precision == "tf32"
        except (AttributeError, RuntimeError):  # older torch: the legacy flag
            tf32 = bool(torch.backends.cudnn.allow_tf32)
        if tf32:
            return 2.0**-10
    return torch.finfo(dtype).eps


def dead_zone(prev_pred: torch.Tensor, denoiser) -> torch.Tensor:
    """``[G]`` the RMS residual per element under which the norm loss has no gradient: the ops' absolute
    :data:`~warped_fast.reference.guidance.NORM_GRAD_MIN_RMS`, or, if larger, :data:`DEAD_ZONE_EPS`
    roundings of the model's precision (:func:`compute_eps` of its parameters' dtype, else the
    prediction's; at least :data:`DEAD_ZONE_MIN`) relative to ``prev_pred``'s RMS. A normalized gradient
    has unit norm however small the residual: without it, the rounding differences of two batch layouts
    of a static scene would each take a full guidance step."""
    dtype = prev_pred.dtype
    if isinstance(denoiser, torch.nn.Module):
        p = next(denoiser.parameters(), None)
        if p is not None and p.is_floating_point() and torch.finfo(p.dtype).eps > torch.finfo(dtype).eps:
            dtype = p.dtype
    rel = max(DEAD_ZONE_EPS * compute_eps(dtype, prev_pred.device), DEAD_ZONE_MIN)
    rms = prev_pred.detach().flatten(1).float().pow(2).mean(1).sqrt()
    return (rel * rms).clamp_min(NORM_GRAD_MIN_RMS)


def _rows(idx: list[int], device: torch.device) -> slice | torch.Tensor:
    """Selector of the rows ``idx`` (ascending) of a batch: a slice when they are consecutive, else an
    index tensor on ``device``. On CUDA it is copied from pinned memory without waiting for the device
    (a pageable copy synchronizes the stream); it is used at once, on the current stream."""
    if idx == list(range(idx[0], idx[-1] + 1)):
        return slice(idx[0], idx[-1] + 1)
    if device.type == "cuda":
        return torch.tensor(idx).pin_memory().to(device, non_blocking=True)
    return torch.tensor(idx, device=device)


def predict_and_guide(
    denoiser,
    u: torch.Tensor,
    sigma: torch.Tensor,
    cond: torch.Tensor | None,
    guided: list[bool],
    prev_pred: torch.Tensor | None,
    flow: torch.Tensor | None,
    mask: torch.Tensor | None,
    config: GuidanceConfig,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One denoiser call for a batch of frames, with the guidance gradient of the guided ones.

    Args:
        u: ``[B, C, H, W]``; sigma ``[B]``; cond ``[B, Cc, H, W]`` or None.
        guided: per item, whether it is guided at its step.
        prev_pred: ``[G, C, H, W]`` stored previous-frame predictions of the G guided items (in order).
        flow: ``[G, 2, H, W]`` forward flows (previous -> this frame, on the previous frame's grid).
        mask: ``[G, 1, H, W]`` extra valid pixels (e.g. non-occluded) or None.
    Returns:
        D ``[B, C, H, W]`` (detached), g ``[B, C, H, W]`` (zero for unguided items) or None, and
        the per-item losses ``[G]`` or None.
    """
    if not any(guided):
        with torch.no_grad():
            return denoiser(u, sigma, cond), None, None
    idx = _rows([i for i, gi in enumerate(guided) if gi], u.device)
    squared = config.loss == "squared"
    zone = None if squared else dead_zone(prev_pred, denoiser)
    if config.mode == "jacobian_free":
        with torch.no_grad():
            d = denoiser(u, sigma, cond)
            loss, g_sub = guidance_grad(d[idx], prev_pred, flow, mask, squared=squared, min_rms=zone)
        g = torch.zeros_like(u)
        g[idx] = g_sub.to(u.dtype)
        return d, g, loss
    check_gradients_allowed()
    with torch.enable_grad():
        ug = u.detach().requires_grad_(True)
        d = denoiser(ug, sigma, cond)
        if not d.requires_grad:
            raise RuntimeError(
                "guidance: mode 'exact' differentiates the denoiser's prediction with respect to its input, "
                "but the denoiser returned one without a gradient (does it run under torch.no_grad() or "
                "detach its output?); use GuidanceConfig(mode='jacobian_free') for such a denoiser"
            )
        loss = guidance_loss(d[idx], prev_pred, flow, mask, squared=squared, min_rms=zone)
        (g,) = torch.autograd.grad(loss.sum(), ug)
    return d.detach(), g, loss.detach()
