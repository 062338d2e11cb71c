"""Base noise of the simple methods: white noise or GP (RFF) noise, on the grid and fresh per frame."""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import torch

from .base import NoiseWarper, fresh_offset
from .rff import RFFConfig, RFFField, identity_coords

Base = Literal["white", "gp"]


def check_base(base) -> None:
    if base not in get_args(Base):
        raise ValueError(f"base: expected one of {get_args(Base)}, got {base!r}")


def check_rff(rff, base: Base | None = None) -> None:
    """``rff`` an RFFConfig or None; with a ``base``, settings given for a white base (which would be
    ignored) are refused."""
    if rff is not None and not isinstance(rff, RFFConfig):
        raise TypeError(f"rff: expected an RFFConfig or None, got {type(rff).__name__}")
    if rff is not None and base == "white":
        raise ValueError(
            "rff: GP field settings, but base='white' draws white noise; pass base='gp' to use them"
        )


def rff_for(rff: RFFConfig | None, channels: int) -> RFFConfig:
    """The RFF settings for ``channels`` noise channels (the channel count comes from the noise shape)."""
    cfg = rff if rff is not None else RFFConfig()
    return cfg if cfg.channels == channels else dataclasses.replace(cfg, channels=channels)


class NoiseSource:
    """White or GP noise for one warper: frame 0 on the grid, and fresh noise for frame ``j``.

    White: ``randn`` from the warper's device generator. GP: one RFF field drawn at :meth:`start` from
    the warper's CPU generator; fresh noise of frame ``j`` is that field on far-away tile ``j - 1``
    (:func:`~warped_fast.noise.base.fresh_offset`), a deterministic function of the seed.
    """

    def __init__(self, base: Base, rff: RFFConfig | None = None):
        check_base(base)
        check_rff(rff, base)
        self.base, self.rff = base, rff
        self.field: RFFField | None = None

    def start(self, warper: NoiseWarper) -> torch.Tensor:
        self.warper = warper
        c, h, w = warper.shape
        if self.base == "gp":
            self.field = RFFField.sample(rff_for(self.rff, c), warper.cpu_gen, device=warper.device)
            return self.field.on_grid(h, w)[0]
        return warper.randn(c, h, w)

    def fresh(self, frame: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fresh noise ``[C, H, W]`` for frame ``frame >= 1``; with ``mask`` ``[H, W]`` bool, only the
        masked pixels are guaranteed to be filled (GP: the field is evaluated there only)."""
        c, h, w = self.warper.shape
        if self.base == "white":
            return self.warper.randn(c, h, w)
        off = fresh_offset(frame - 1, h, w)
        if mask is None:
            return self.field.on_grid(h, w, offset=off)[0]
        out = torch.zeros(c, h, w, device=self.warper.device)
        idx = mask.reshape(-1).nonzero().squeeze(1)
        if idx.numel():
            pts = identity_coords(h, w, device=self.warper.device, offset=off).reshape(-1, 2)[idx]
            out.view(c, -1)[:, idx] = self.field(pts.view(1, 1, -1, 2))[0, :, 0]
        return out

    def new_frame(self) -> torch.Tensor:
        """An independent frame: white noise, or a newly drawn GP field on the grid."""
        c, h, w = self.warper.shape
        if self.base == "white":
            return self.warper.randn(c, h, w)
        field = RFFField.sample(rff_for(self.rff, c), self.warper.cpu_gen, device=self.warper.device)
        return field.on_grid(h, w)[0]
