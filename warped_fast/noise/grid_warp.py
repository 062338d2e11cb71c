"""Grid warping baselines (Warped Diffusion, Daras et al., NeurIPS 2024, method.md section 7):
the previous frame's noise resampled at ``x + back_flow(x)`` by nearest-neighbour or bilinear
interpolation, of white noise or of GP noise.

Both are compositions of tensor ops that run on any device (nearest: rounding and a gather; bilinear:
the :func:`warped_fast.warp` op), so they have no kernel of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ..ops import warp
from .base import NoiseWarper, register_method
from .rff import RFFConfig
from .sources import Base, NoiseSource, check_base, check_rff

Mode = Literal["nearest", "bilinear"]


@dataclass(frozen=True)
class GridWarpConfig:
    """Options of ``nearest`` and ``bilinear``.

    Attributes:
        mode: ``"nearest"`` or ``"bilinear"`` resampling of the previous frame's noise.
        base: ``"white"`` or ``"gp"`` noise (frame 0 and fresh noise where the sample point leaves
            the frame).
        rff: RFF settings for ``base="gp"``.
    """

    mode: Mode = "nearest"
    base: Base = "white"
    rff: RFFConfig | None = None

    def __post_init__(self):
        if self.mode not in get_args(Mode):
            raise ValueError(f"mode: expected one of {get_args(Mode)}, got {self.mode!r}")
        check_base(self.base)
        check_rff(self.rff, self.base)


def nearest_sample(noise: torch.Tensor, back: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``noise(round(x + back(x)))`` and where that pixel exists.

    Args:
        noise: ``[C, H, W]``; back: ``[2, H, W]``.
    Returns:
        ``[C, H, W]`` (0 where invalid) and ``[H, W]`` bool valid. Rounding is ``floor(v + 0.5)``.
    """
    c, h, w = noise.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=noise.device, dtype=torch.float32),
        torch.arange(w, device=noise.device, dtype=torch.float32),
        indexing="ij",
    )
    sx = torch.floor(xs + back[0] + 0.5)
    sy = torch.floor(ys + back[1] + 0.5)
    valid = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    # Flat indices in int64: a float32 product is inexact past 2^24 pixels.
    idx = (sy.clamp(0, h - 1).long() * w + sx.clamp(0, w - 1).long()).reshape(-1)
    out = noise.reshape(c, -1)[:, idx].reshape(c, h, w)
    return out * valid, valid


class _GridWarp(NoiseWarper):
    _mode: Mode = "nearest"

    def __init__(self, base: Base = "white", rff: RFFConfig | None = None):
        super().__init__()
        self.config = GridWarpConfig(self._mode, base, rff)

    def _reset(self) -> torch.Tensor:
        self._src = NoiseSource(self.config.base, self.config.rff)
        self._noise = self._src.start(self)
        return self._noise

    def _step(self, back, fwd) -> torch.Tensor:
        if self.config.mode == "nearest":
            out, valid = nearest_sample(self._noise, back)
        else:
            o, v = warp(self._noise[None], back[None])
            out, valid = o[0], v[0, 0]
        fresh = self._src.fresh(self.frame, ~valid)
        self._noise = torch.where(valid, out, fresh)
        return self._noise


@register_method("nearest")
class NearestWarp(_GridWarp):
    """Nearest-neighbour warping: ``u_j(x) = u_{j-1}(round(x + b_j(x)))``; fresh noise (white, or the
    GP on a far-away tile) where the rounded point leaves the frame.

    Exact under integer translation. Known limits: where the flow expands, pixels are duplicated
    (neighbours become perfectly correlated); where it contracts, values are dropped; sub-pixel motion
    accumulates no displacement until it rounds over (the pattern jumps).
    """

    _mode = "nearest"


@register_method("bilinear")
class BilinearWarp(_GridWarp):
    """Bilinear warping: ``u_j(x)`` = bilinear sample of ``u_{j-1}`` at ``x + b_j(x)``; fresh noise
    where the sample point leaves ``[0, W-1] x [0, H-1]``.

    Known limits (the baseline's flaw the paper points out): interpolating noise values averages
    independent samples, so the variance drops at sub-pixel positions (white noise shifted by
    (a, b) pixels: ``((1-a)^2 + a^2) ((1-b)^2 + b^2)``, 0.25 at a half-pixel diagonal shift) and keeps
    dropping frame after frame while the noise becomes spatially smooth. The output is NOT unit
    variance.
    """

    _mode = "bilinear"
