"""Inverse-problem degradations for training and evaluation: random inpainting masks (rectangles,
brush strokes, outpainting bands, full masks, as in SDXL-inpainting training) and x8 low-resolution
inputs. Tensors are ``[B, C, H, W]`` in [-1, 1]; masks are 1 where content is to be generated."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_masks(n: int, h: int, w: int, generator: torch.Generator, p_full: float = 0.05) -> torch.Tensor:
    """``[n, 1, h, w]`` float masks: rectangles, brush strokes, outpainting bands, or the full frame."""
    masks = torch.zeros(n, 1, h, w)
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )

    steps = torch.linspace(0, 1, 12).tolist()

    def r(lo=0.0, hi=1.0):
        return lo + (hi - lo) * float(torch.rand(1, generator=generator))

    for i in range(n):
        kind = r()
        if kind < p_full:
            masks[i] = 1
        elif kind < 0.4:  # rectangles
            for _ in range(1 + int(r(0, 3))):
                mh, mw = int(r(0.15, 0.6) * h), int(r(0.15, 0.6) * w)
                y0, x0 = int(r(0, h - mh)), int(r(0, w - mw))
                masks[i, :, y0 : y0 + mh, x0 : x0 + mw] = 1
        elif kind < 0.75:  # brush strokes: thick polylines, drawn as discs at 12 points per segment
            discs = []  # (x, y, radius^2)
            for _ in range(1 + int(r(0, 3))):
                x, y, ang = r(0, w), r(0, h), r(0, 2 * math.pi)
                width = r(0.04, 0.12) * min(h, w)
                for _ in range(4 + int(r(0, 6))):
                    ang += r(-1.2, 1.2)
                    length = r(0.1, 0.3) * min(h, w)
                    nx, ny = x + length * math.cos(ang), y + length * math.sin(ang)
                    discs += [(x + (nx - x) * v, y + (ny - y) * v, width**2) for v in steps]
                    x, y = min(max(nx, 0), w - 1), min(max(ny, 0), h - 1)
            cx, cy, r2 = torch.tensor(discs).T.view(3, -1, 1, 1)
            masks[i, 0][((xx - cx) ** 2 + (yy - cy) ** 2 <= r2).any(0)] = 1
        else:  # outpainting band on one side
            side, frac = int(r(0, 4)), r(0.15, 0.5)
            if side == 0:
                masks[i, :, : int(frac * h)] = 1
            elif side == 1:
                masks[i, :, h - int(frac * h) :] = 1
            elif side == 2:
                masks[i, :, :, : int(frac * w)] = 1
            else:
                masks[i, :, :, w - int(frac * w) :] = 1
    return masks


def inpaint_inputs(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked image (masked pixels set to 0, i.e. mid-grey in [-1, 1]) ``[B, C, H, W]``."""
    return x * (1 - mask)


def downsample(x: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Low-resolution frame by area averaging: ``[B, C, H / f, W / f]``."""
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"x: expected H and W divisible by {factor}, got {h}x{w}")
    return F.avg_pool2d(x, factor)


def upsample(lowres: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic upsampling to ``size`` (the SR conditioning and the bicubic baseline), clamped to [-1, 1]."""
    return F.interpolate(lowres, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


def task_condition(task: str, x: torch.Tensor, generator: torch.Generator, factor: int = 8) -> torch.Tensor:
    """Conditioning channels for a clean batch ``x``: inpaint -> ``[mask | masked image]``,
    sr -> ``[bicubic upsampling of the x8 low-resolution frame]``."""
    if task == "inpaint":
        m = random_masks(x.shape[0], *x.shape[-2:], generator)
        return torch.cat([m, inpaint_inputs(x, m)], 1)
    if task == "sr":
        return upsample(downsample(x, factor), x.shape[-2:])
    raise ValueError(f"task: expected 'inpaint' or 'sr', got {task!r}")
