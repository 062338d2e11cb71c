"""Infinite-Resolution Integral Noise Warping (Deng, Lin, Li, Smirnov, Burgert, Yu, Dedun, Taghavi,
ICLR 2025), particle variant.

HIWYN's integral warping (:mod:`warped_fast.noise.hiwyn`) in the limit of infinite upsampling: the
white-noise integral of a pixel (value x, area 1) split into pieces of areas ``a_1..a_m``
(``sum a = 1``) follows a Brownian bridge from 0 to x, so no sub-pixel grid is needed. Particle
variant, one step:

1. Each previous-frame pixel is a particle moved by the forward flow to ``p = s + f(s)``; its unit area
   is split into 4 bilinear "area tickets" ``a_t`` for the 4 pixels around ``p``.
2. Brownian-bridge splitting of its value x: the pieces ``W_t`` of a bridge from 0 to x at cumulative
   times ``a_1, a_1 + a_2, ...`` have mean ``a_t x`` and covariance ``diag(a) - a a^T``. Sampled in
   closed form (equal in law to sequential bridge increments):
   ``W_t = a_t x + (sqrt(a_t) Z_t - a_t sum_u sqrt(a_u) Z_u)``, ``Z`` i.i.d. N(0, 1).
   Pieces of one particle are uncorrelated with each other (hence independent).
3. Each new pixel sums the pieces and areas that arrive: ``S``, ``A``. ``missing="fill"`` (default):
   the area that did not arrive is filled with fresh white noise and the result renormalized,
   ``x' = (S + sqrt(max(1 - A, 0)) eps) / sqrt(max(A, 1))``; so ``A = 0`` gives fresh noise.
   ``missing="renormalize"``: ``x' = S / sqrt(A)`` where ``A > min_area``, fresh noise elsewhere.

Both give N(0, 1) pixels, independent across pixels. Pieces leaving the frame are dropped. Exact
under integer translation (one ticket of area 1 per particle: ``W = x + (Z - Z) = x``).

Known limits: the bilinear tickets approximate each particle's warped footprint (a unit square at
``p``), so under strong deformation the area assignment is approximate; under folding (occlusions)
several particles pile onto one pixel, which is renormalized, so nothing is lost or duplicated, but
the occluded content's noise is merged into the occluder's; disoccluded pixels get fresh noise. Which
of ``fill`` / ``renormalize`` the paper uses for partially covered pixels is this project's reading:
``fill`` keeps a pixel's value tied to the area that really arrives.

GPU path: :mod:`warped_fast.triton.infres` (a splat kernel with atomics and a finalize kernel); CPU path:
the C++ kernel ``csrc/infres.cpp`` (the reference's order of summation, one task per channel:
deterministic, and the reference's result to float32 rounding).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ..ops import _cpu
from ..ops._checks import as_f32
from ..ops._dispatch import register, select
from ..reference._bilinear import pixel_grid
from .base import NoiseWarper, check_cpu_kernel_frame, check_tensors, frame_shape, register_method

register("infres", ("triton", "cpu", "reference"))

Missing = Literal["fill", "renormalize"]


@dataclass(frozen=True)
class InfResConfig:
    """Options of ``infres``.

    Attributes:
        missing: how a pixel that receives total area ``A < 1`` is completed: ``"fill"`` the missing
            area with fresh noise, or ``"renormalize"`` by ``sqrt(A)``.
        min_area: with ``"renormalize"``, pixels receiving less area get fresh noise.
    """

    missing: Missing = "fill"
    min_area: float = 1e-6

    def __post_init__(self):
        check_options(self.missing, self.min_area)


def _tickets(fwd: torch.Tensor):
    """Destination indices ``[4, H*W]`` (long), in-frame masks and areas ``[4, H*W]`` of each particle."""
    _, h, w = fwd.shape
    xs, ys = pixel_grid(h, w, fwd.device, torch.float32)
    px, py = xs + fwd[0], ys + fwd[1]
    x0, y0 = torch.floor(px), torch.floor(py)
    fx, fy = px - x0, py - y0
    dx = torch.tensor([0.0, 1.0, 0.0, 1.0], device=fwd.device)[:, None, None]
    dy = torch.tensor([0.0, 0.0, 1.0, 1.0], device=fwd.device)[:, None, None]
    tx, ty = x0[None] + dx, y0[None] + dy
    ax = torch.stack((1 - fx, fx, 1 - fx, fx))
    ay = torch.stack((1 - fy, 1 - fy, fy, fy))
    a = ax * ay
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1) & (a > 0)
    # Clamped before the int64 conversion (far-away taps are masked out anyway).
    idx = torch.where(inside, ty.clamp(0, h - 1).long() * w + tx.clamp(0, w - 1).long(), 0)
    return idx.reshape(4, -1), inside.reshape(4, -1), a.reshape(4, -1)


def infres_transport_reference(
    prev: torch.Tensor,
    fwd: torch.Tensor,
    z: torch.Tensor,
    fresh: torch.Tensor,
    missing: Missing = "fill",
    min_area: float = 1e-6,
) -> torch.Tensor:
    """One particle step in PyTorch (vectorized).

    Args:
        prev: ``[C, H, W]`` previous frame's noise.
        fwd: ``[2, H, W]`` forward flow (previous -> new) on the previous frame's grid.
        z: ``[C, 4, H, W]`` i.i.d. N(0, 1), one per particle, ticket and channel.
        fresh: ``[C, H, W]`` N(0, 1) for the area that does not arrive.
        missing, min_area: see :class:`InfResConfig`.
    Returns:
        ``[C, H, W]`` float32.
    """
    c, h, w = prev.shape
    idx, inside, a = _tickets(fwd.float())
    sa = a.sqrt()
    zf = z.float().reshape(c, 4, h * w)
    s = (sa[None] * zf).sum(1, keepdim=True)
    pieces = a[None] * prev.float().reshape(c, 1, h * w) + (sa[None] * zf - a[None] * s)
    m = inside.reshape(-1)
    acc = torch.zeros(c, h * w, device=prev.device)
    acc.index_add_(1, idx.reshape(-1)[m], pieces.reshape(c, -1)[:, m])
    area = torch.zeros(h * w, device=prev.device)
    area.index_add_(0, idx.reshape(-1)[m], a.reshape(-1)[m])
    return _finalize(acc, area, fresh.float().reshape(c, -1), missing, min_area).reshape(c, h, w)


def check_options(missing, min_area) -> None:
    """``missing`` one of :data:`Missing`, ``min_area`` a number in [0, 1)."""
    if missing not in get_args(Missing):
        raise ValueError(f"missing: expected one of {get_args(Missing)}, got {missing!r}")
    real = isinstance(min_area, numbers.Real) and not isinstance(min_area, bool)
    if not (real and 0 <= min_area < 1):
        raise ValueError(f"min_area: expected a value in [0, 1), got {min_area!r}")


def _finalize(acc, area, fresh, missing, min_area):
    if missing == "fill":
        return (acc + torch.sqrt(torch.clamp(1.0 - area, min=0.0)) * fresh) / torch.sqrt(area.clamp(min=1.0))
    ok = area > min_area
    return torch.where(ok, acc / torch.sqrt(torch.where(ok, area, 1.0)), fresh)


def infres_transport(
    prev: torch.Tensor,
    fwd: torch.Tensor,
    z: torch.Tensor,
    fresh: torch.Tensor,
    missing: Missing = "fill",
    min_area: float = 1e-6,
) -> torch.Tensor:
    """One particle step (arguments as :func:`infres_transport_reference`), dispatched: Triton on GPU
    tensors (and on CPU under the interpreter when forced), the C++ kernel on CPU tensors (PyTorch where
    the compiled module is missing)."""
    c, h, w = frame_shape("prev", prev)
    check_tensors(prev=(prev, (c, h, w)), fwd=(fwd, (2, h, w)), z=(z, (c, 4, h, w)), fresh=(fresh, (c, h, w)))
    check_options(missing, min_area)
    backend = select("infres", prev.device.type)
    if backend == "triton":
        from ..triton import infres as ti

        return ti.infres_transport(prev, fwd, z, fresh, missing, min_area)
    if backend == "cpu":
        check_cpu_kernel_frame("prev", h, w)
        prev, fwd, z, fresh = (as_f32(t) for t in (prev, fwd, z, fresh))
        out, area = torch.empty_like(prev), prev.new_empty(h, w)
        _cpu.lib().infres_transport_cpu(
            *(_cpu.ptr(t) for t in (prev, fwd, z, fresh, out, area)),
            c, h, w, missing == "fill", float(min_area), _cpu.threads(c * h * w),
        )  # fmt: skip
        return out
    return infres_transport_reference(prev, fwd, z, fresh, missing, min_area)


@register_method("infres")
class InfResWarp(NoiseWarper):
    """Infinite-Resolution Integral Noise Warping (Deng et al., ICLR 2025), particle variant: bilinear
    area tickets along the forward flow, Brownian-bridge splitting of each source value, fresh noise
    for the area that does not arrive.

    Needs the forward flow (previous -> new); the backward flow is not used. Exact under integer
    translation. Options: :class:`InfResConfig`. See the module docstring for the details and limits.
    """

    needs_forward_flow = True

    def __init__(self, missing: Missing = "fill", min_area: float = 1e-6):
        super().__init__()
        self.config = InfResConfig(missing, min_area)

    def _reset(self) -> torch.Tensor:
        self._noise = self.randn(*self.shape)
        return self._noise

    def _step(self, back, fwd) -> torch.Tensor:
        c, h, w = self.shape
        z = self.randn(c, 4, h, w)
        fresh = self.randn(c, h, w)
        cfg = self.config
        self._noise = infres_transport(self._noise, fwd, z, fresh, cfg.missing, cfg.min_area)
        return self._noise
