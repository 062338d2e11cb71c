"""Optical flow with OpenCV's DIS (Dense Inverse Search; Kroeger et al., ECCV 2016): no weights, CPU.

DIS runs on 8-bit grayscale frames; colour frames are converted with the ITU-R BT.601 luma weights
(as ``cv2.cvtColor(..., COLOR_RGB2GRAY)``). OpenCV's flow of ``calc(prev, next)`` is the forward
flow of the pair: pixel x of ``prev`` is at ``x + f(x)`` in ``next`` (the house convention).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

Preset = Literal["ultrafast", "fast", "medium"]
_LUMA = (0.299, 0.587, 0.114)
_MIN_SIDE = 32  # shorter frame sides are padded to this for DIS (see estimate_flow)


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "estimate_flow needs OpenCV: pip install opencv-python-headless (the [test] extra has it)"
        ) from e
    return cv2


def unit_frames(frames: torch.Tensor) -> torch.Tensor:
    """Frames for a flow estimator: ``[T >= 2, 3 | 1, H, W]``, float in [0, 1] or uint8 -> float32 in [0, 1]
    on the frames' device, else an error naming ``frames``."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames: expected a torch.Tensor, got {type(frames).__name__}")
    if frames.dim() != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"frames: expected shape [T, 3 or 1, H, W], got {list(frames.shape)}")
    if frames.shape[0] < 2:
        raise ValueError(f"frames: expected at least 2 frames, got {frames.shape[0]}")
    frames = frames.detach()
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    if not frames.is_floating_point():
        raise TypeError(f"frames: expected uint8 or a float dtype, got {frames.dtype}")
    f = frames.float()
    if f.numel() and not (f.min() >= -1e-3 and f.max() <= 1 + 1e-3):  # NaN fails too
        raise ValueError(
            f"frames: float frames must be in [0, 1], got range [{f.min():.3f}, {f.max():.3f}] "
            "(divide 0..255 values by 255)"
        )
    return f


def to_gray_u8(frames: torch.Tensor) -> np.ndarray:
    """Frames ``[T, 3|1, H, W]`` (float in [0, 1] or uint8) -> ``[T, H, W]`` uint8 grayscale."""
    f = unit_frames(frames).cpu()
    if f.shape[1] == 3:
        w = torch.tensor(_LUMA).view(1, 3, 1, 1)
        f = (f * w).sum(1, keepdim=True)
    return (f[:, 0].clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def estimate_flow(frames: torch.Tensor, preset: Preset = "medium") -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward optical flow of consecutive frames with OpenCV DIS.

    Args:
        frames: ``[T, 3 | 1, H, W]``, float in [0, 1] or uint8 (any device; computed on the CPU).
        preset: DIS preset, ``"ultrafast"``, ``"fast"`` or ``"medium"`` (the most accurate).
    Returns:
        fwd ``[T-1, 2, H, W]`` (frame j -> j+1, on frame j's grid) and back ``[T-1, 2, H, W]``
        (frame j+1 -> j, on frame j+1's grid), float32 (dx, dy) in pixels, on the frames' device.
    """
    if preset not in get_args(Preset):
        raise ValueError(f"preset: expected one of {get_args(Preset)}, got {preset!r}")
    cv2 = _cv2()
    gray = to_gray_u8(frames)
    code = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }[preset]
    dis = cv2.DISOpticalFlow_create(code)
    _, h, w = gray.shape
    # OpenCV DIS sizes its pyramid by the longer side: frames under 32 rows crash it (or give NaN) once
    # they are a few times wider. Short sides are padded (edge values) to 32, and the flow cropped back.
    gray = np.pad(gray, ((0, 0), (0, max(0, _MIN_SIDE - h)), (0, max(0, _MIN_SIDE - w))), mode="edge")
    fwd, back = [], []
    for a, b in zip(gray[:-1], gray[1:], strict=True):
        try:
            fwd.append(dis.calc(a, b, None)[:h, :w])
            back.append(dis.calc(b, a, None)[:h, :w])
        except cv2.error as e:
            raise ValueError(
                f"frames: OpenCV DIS cannot estimate the flow of {h}x{w} frames "
                f"({str(e).strip().splitlines()[-1]}); give the flows instead"
            ) from e
        if not (np.isfinite(fwd[-1]).all() and np.isfinite(back[-1]).all()):
            raise ValueError(
                f"frames: OpenCV DIS gave a non-finite flow for {h}x{w} frames; give the flows instead"
            )
    to_t = lambda fl: torch.from_numpy(np.stack(fl)).permute(0, 3, 1, 2).contiguous().to(frames.device)  # noqa: E731
    return to_t(fwd), to_t(back)
