"""Inpainting masks for a video: an image (one mask for every frame), a video of masks, a tensor/array,
or generated shapes. Masks are ``[T, 1, H, W]`` float in {0, 1}, 1 where content is generated."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

SHAPES = ("box", "center", "left", "right", "top", "bottom", "stripe")


def generated_mask(shape: str, t: int, h: int, w: int) -> torch.Tensor:
    """Generated shapes: "box" (a quarter-area box, centred), "center" (a centred square of half the
    size), "left"/"right"/"top"/"bottom" (outpainting bands of a quarter), "stripe" (a vertical band)."""
    m = torch.zeros(1, 1, h, w)
    if shape == "box":
        m[..., h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
    elif shape == "center":
        s = min(h, w) // 2
        m[..., (h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2] = 1
    elif shape == "left":
        m[..., : w // 4] = 1
    elif shape == "right":
        m[..., w - w // 4 :] = 1
    elif shape == "top":
        m[..., : h // 4, :] = 1
    elif shape == "bottom":
        m[..., h - h // 4 :, :] = 1
    elif shape == "stripe":
        m[..., 3 * w // 8 : 5 * w // 8] = 1
    else:
        raise ValueError(f"mask: unknown shape {shape!r}; expected a path or one of {SHAPES}")
    return m.expand(t, 1, h, w).contiguous()


def load_mask(mask, t: int, h: int, w: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A mask for ``t`` frames of ``h x w``: a shape name, an image/video path, a PIL image, an array or a
    tensor (``[H, W]``, ``[H, W, 1|3]``, ``[1|T, H, W]``, ``[1|T, 1|3, H, W]``, ``[1|T, H, W, 1|3]``);
    values > 0.5 (of the [0, 1] range; integers above 1 and floats above 1.5 are read as 0..255; an image
    file whose values are all 0 or 1 is read as 0/1) are masked; or a list of such masks, one per frame. A
    ``[3|4, H, W]`` tensor is an image, channels first (torchvision's ``read_image``), unless ``t`` is 3 or
    4 (then masks of frames). An image whose colour is one value and whose transparency varies is refused
    (conventions differ on whether transparent pixels are generated). A mask of more frames than ``t``
    gives its first ``t``.

    ``size``: ``(H', W')`` to resize the mask to (the video resized with it): it is read and thresholded
    at ``h x w``, then area-resized, values in [0, 1] (masked where > 0.5); a mask file is read a frame
    at a time, so a long mask video is never held at its full size."""
    if size is not None:
        return _resized_mask(mask, t, h, w, size)
    if isinstance(mask, str) and mask in SHAPES:
        return generated_mask(mask, t, h, w)
    if isinstance(mask, (list, tuple)) and mask and all(_one_mask(x) for x in mask):
        m = torch.cat([load_mask(x, 1, h, w) for x in mask])  # one mask per frame
        return load_mask(m[:t] if len(mask) > t else m, t, h, w)
    if isinstance(mask, (str, os.PathLike)):
        from .video import IMAGE_SUFFIXES, read_video

        p = Path(mask)
        if not p.exists():
            raise FileNotFoundError(f"mask: {p} does not exist (and is not one of {SHAPES})")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            from PIL import Image

            try:
                with Image.open(p) as im:
                    im.load()
            except Exception:  # Pillow raises many types for damaged files: the reader below names it
                im = None
            if im is not None:
                _check_not_alpha_only(im, p)
        try:
            m = read_video(p, max_frames=t).mean(1, keepdim=True)  # a mask video: its first t frames
        except ValueError as e:
            raise ValueError(f"mask: {e}") from e
    elif hasattr(mask, "convert"):
        _check_not_alpha_only(mask, "the image")
        m = torch.from_numpy(np.asarray(mask.convert("L"))).float()[None, None] / 255.0
    if isinstance(mask, (str, os.PathLike)) or hasattr(mask, "convert"):
        if m.numel() and 0 < m.max() <= 1.5 / 255:  # an image of 0/1 values, not 0..255: as arrays are read
            m = m * 255.0
    else:
        raw = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        m = raw.float()
        if m.numel() and not torch.isfinite(m).all():
            raise ValueError("mask: NaN or infinite values")
        # 0..255 values: integers above 1, or floats well past 1 (a [0, 1] mask resized bicubically
        # overshoots a little and stays as it is)
        if m.numel() and m.max() > (1 if not raw.is_floating_point() else 1.5):
            m = m / 255.0
        if m.dim() == 4 and m.shape[1:3] == (h, w) and m.shape[-1] in (1, 3, 4) and m.shape[-2:] != (h, w):
            # frames [T, H, W, C] (channels last, as images load)
            m = m[..., :3].mean(-1)
        if m.dim() == 3 and m.shape[-1] in (1, 3, 4) and m.shape[-2:] != (h, w):  # one image [H, W, C]
            m = m[..., :3].mean(-1)
        if m.dim() == 3 and m.shape[0] in (3, 4) and m.shape[0] != t and m.shape[-2:] == (h, w):
            m = m[:3].mean(0)  # one image [C, H, W], channels first (torchvision's read_image)
        if m.dim() == 2:  # one mask [H, W]
            m = m[None]
        if m.dim() == 3:  # masks of frames [1|T, H, W]
            m = m[:, None]
        if m.dim() == 4 and m.shape[1] == 3:
            m = m.mean(1, keepdim=True)
    if m.dim() != 4 or m.shape[1] != 1:
        raise ValueError(f"mask: expected [T, 1, H, W] after conversion, got {list(m.shape)}")
    if m.shape[-2:] != (h, w):
        raise ValueError(f"mask: expected size {h}x{w} (the video's), got {m.shape[-2]}x{m.shape[-1]}")
    if m.shape[0] > t:  # a mask of a longer clip (the video cut by max_frames): its first t frames, as files
        m = m[:t]
    if m.shape[0] not in (1, t):
        raise ValueError(f"mask: expected 1 or {t} frames, got {m.shape[0]}")
    return (m > 0.5).float().expand(t, 1, h, w).contiguous()


def _resized_mask(mask, t: int, h: int, w: int, size: tuple[int, int]) -> torch.Tensor:
    """:func:`load_mask` with ``size``: ``[t, 1, H', W']``."""
    from .video import iter_video, resize_frames

    if not isinstance(mask, (str, os.PathLike)) or (isinstance(mask, str) and mask in SHAPES):
        return resize_frames(load_mask(mask, t, h, w), size)  # a shape, or in memory already
    load_mask(mask, 1, h, w)  # the file's checks (it exists, its size, not alpha alone) on its first frame
    # each frame thresholded both ways, as 0..255 and as 0/1 values, then resized: load_mask picks the
    # reading from the largest value of all the frames, known at the end
    high, low, peak = [], [], 0.0
    try:
        for f in iter_video(mask, max_frames=t):
            m = f.mean(0, keepdim=True)[None]
            if m.shape[-2:] != (h, w):
                raise ValueError(f"expected size {h}x{w} (the video's), got {m.shape[-2]}x{m.shape[-1]}")
            peak = max(peak, float(m.max()))
            high.append(resize_frames((m > 0.5).float(), size))
            low.append(resize_frames((m * 255.0 > 0.5).float(), size))
    except ValueError as e:
        raise ValueError(e if str(e).startswith("mask:") else f"mask: {e}") from e
    if len(high) not in (1, t):
        raise ValueError(f"mask: expected 1 or {t} frames, got {len(high)}")
    frames = low if 0 < peak <= 1.5 / 255 else high
    return torch.cat(frames).expand(t, -1, -1, -1).contiguous()


def _one_mask(x) -> bool:
    """Whether a list item is a mask of its own (a file, an image, an array or tensor), not a number or a
    row of an array given as nested lists."""
    return isinstance(x, (str, os.PathLike, torch.Tensor, np.ndarray)) or hasattr(x, "convert")


def _check_not_alpha_only(im, where) -> None:
    """Refuse a PIL image whose colour is one value and whose transparency varies: its region is marked by
    alpha alone, and conventions differ on which side is generated."""
    if "A" not in im.getbands() and "transparency" not in im.info:
        return
    rgba = np.asarray(im.convert("RGBA"))
    if (rgba[..., :3] == rgba[:1, :1, :3]).all() and rgba[..., 3].min() != rgba[..., 3].max():
        raise ValueError(
            f"mask: {where} marks its region by transparency alone (one colour, varying alpha); give the "
            "mask as values, white (or 1) where content is generated"
        )


def iter_masks(mask, h: int, w: int) -> Iterator[torch.Tensor]:
    """Masks ``[1, 1, H, W]`` frame by frame, for a stream of frames whose number is not known ahead.

    ``mask``: a shape name; a mask file (an image, or a video or a folder of images, decoded as the
    frames are consumed); a PIL image; an array or tensor (one mask, or ``[T, ...]`` masks of frames); a
    list of masks; or an iterator, one mask per frame, never read ahead (a live source's). Values are read
    as :func:`load_mask` reads them (0/1-valued files as such, decided on the first frame that is not all
    zero). A file, tensor or list of one mask gives it for every frame; longer ones, and iterators, end
    where they end.
    """
    check_mask_source(mask)
    if (isinstance(mask, str) and mask in SHAPES) or hasattr(mask, "convert"):
        return itertools.repeat(load_mask(mask, 1, h, w))
    if isinstance(mask, (str, os.PathLike)):
        from .video import iter_video

        try:
            frames = iter_video(mask)
        except ValueError as e:
            raise ValueError(f"mask: {e}") from e
        items = _file_masks(frames, h, w)
    elif isinstance(mask, (torch.Tensor, np.ndarray)):
        # frames: [T, ...] of 4 dims, or [T, H, W]; else one mask ([H, W] or [H, W, C])
        t = mask.shape[0] if mask.ndim == 4 or (mask.ndim == 3 and tuple(mask.shape[-2:]) == (h, w)) else 1
        m = load_mask(mask, t, h, w)
        items = (m[j : j + 1] for j in range(t))
    elif isinstance(mask, (list, tuple)):
        items = (load_mask(x, 1, h, w) for x in mask)
    else:  # an iterator, say of a live source's masks: one per frame, never read ahead
        try:
            return (load_mask(x, 1, h, w) for x in iter(mask))
        except TypeError:
            raise TypeError(
                f"mask: expected a mask, a mask file or an iterable of masks, got {type(mask).__name__}"
            ) from None
    return _repeat_if_one(items)


def check_mask_source(mask) -> None:
    """A mask given by name or path names a shape or an existing file, else an error naming ``mask``."""
    if isinstance(mask, (str, os.PathLike)) and not (isinstance(mask, str) and mask in SHAPES):
        if not Path(mask).exists():
            raise FileNotFoundError(f"mask: {mask} does not exist (and is not one of {SHAPES})")


def _repeat_if_one(items: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    """``items``, or its one item forever where it has only one (a mask for every frame, as load_mask)."""
    first = next(items, None)
    if first is None:
        return
    second = next(items, None)
    if second is None:
        yield from itertools.repeat(first)
    yield first
    yield second
    yield from items


def _file_masks(frames: Iterator[torch.Tensor], h: int, w: int) -> Iterator[torch.Tensor]:
    """Decoded mask frames ``[3, H, W]`` in [0, 1] as masks; a file whose values are all 0 or 1 is read as
    0/1 (as :func:`load_mask` reads image files), decided on its first frame that is not all zero."""
    scale = None
    for f in frames:
        m = f.mean(0)
        if scale is None and m.numel() and m.max() > 0:
            scale = 255.0 if m.max() <= 1.5 / 255 else 1.0
        yield load_mask(m * (scale or 1.0), 1, h, w)
