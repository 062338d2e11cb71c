"""Flow files: Middlebury ``.flo``, NumPy ``.npy``, and tensors.

Layouts: flows are ``[2, H, W]`` or ``[T, 2, H, W]`` tensors (dx, dy) in pixels. ``.flo`` holds one
``[H, W, 2]`` field (magic 202021.25, int32 width and height, then row-major float32 (dx, dy));
``.npy`` holds ``[..., 2, H, W]`` or ``[..., H, W, 2]`` (channels last is detected when the
third-to-last axis is not 2 and the last is).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

FLO_MAGIC = 202021.25

__all__ = ["as_flow", "load_flow", "read_flo", "save_flow", "write_flo"]


def read_flo(path: str | os.PathLike) -> torch.Tensor:
    """Read a Middlebury ``.flo`` file -> ``[2, H, W]`` float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no flow file at {path}")
    with path.open("rb") as f:
        magic = np.fromfile(f, np.float32, count=1)
        if magic.size != 1 or magic[0] != np.float32(FLO_MAGIC):
            raise ValueError(f"path: {path} is not a .flo file (bad magic number)")
        size = np.fromfile(f, "<i4", count=2)
        if size.size != 2:
            raise ValueError(f"path: {path} is truncated (no width and height after the magic number)")
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0 or w * h > 2**31:
            raise ValueError(f"path: {path} has an invalid size {w}x{h}")
        data = np.fromfile(f, "<f4", count=2 * w * h)
    if data.size != 2 * w * h:
        raise ValueError(f"path: {path} is truncated ({data.size} of {2 * w * h} values)")
    return torch.from_numpy(data.reshape(h, w, 2).copy()).permute(2, 0, 1).contiguous()


def write_flo(path: str | os.PathLike, flow: torch.Tensor) -> None:
    """Write a ``[2, H, W]`` flow as a Middlebury ``.flo`` file."""
    flow = as_flow(flow)
    if flow.dim() != 3:
        raise ValueError(f"flow: a .flo file holds one field [2, H, W], got {list(flow.shape)}")
    _, h, w = flow.shape
    with Path(path).open("wb") as f:
        np.array([FLO_MAGIC], "<f4").tofile(f)
        np.array([w, h], "<i4").tofile(f)
        flow.permute(1, 2, 0).contiguous().numpy().astype("<f4").tofile(f)


def as_flow(flow) -> torch.Tensor:
    """A flow from a tensor or array in ``[..., 2, H, W]`` or ``[..., H, W, 2]`` layout -> float32
    ``[2, H, W]`` or ``[T, 2, H, W]`` on the CPU."""
    if isinstance(flow, np.ndarray):
        if not flow.dtype.isnative:  # e.g. a big-endian .npy: torch takes native byte order only
            flow = flow.astype(flow.dtype.newbyteorder("="))
        flow = torch.from_numpy(np.ascontiguousarray(flow))
    if not isinstance(flow, torch.Tensor):
        raise TypeError(f"flow: expected a tensor or a numpy array, got {type(flow).__name__}")
    if flow.dim() not in (3, 4):
        raise ValueError(f"flow: expected [2, H, W], [T, 2, H, W] or channels-last, got {list(flow.shape)}")
    if flow.shape[-3] != 2 and flow.shape[-1] == 2:
        flow = flow.movedim(-1, -3)
    if flow.shape[-3] != 2:
        raise ValueError(f"flow: expected 2 channels (dx, dy), got shape {list(flow.shape)}")
    if not flow.is_floating_point():
        raise TypeError(f"flow: expected a floating-point dtype, got {flow.dtype}")
    return flow.detach().to("cpu", torch.float32).contiguous()


def load_flow(path: str | os.PathLike) -> torch.Tensor:
    """Load a flow from ``.flo`` (one field), ``.npy``, or ``.pt`` (a tensor, loaded with
    ``weights_only=True``) -> ``[2, H, W]`` or ``[T, 2, H, W]`` float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no flow file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".flo":
        return read_flo(path)
    if suffix == ".npy":
        return as_flow(np.load(path, allow_pickle=False))
    if suffix == ".pt":
        return as_flow(torch.load(path, map_location="cpu", weights_only=True))
    raise ValueError(f"path: expected a .flo, .npy or .pt file, got {path.name}")


def save_flow(path: str | os.PathLike, flow) -> None:
    """Save a flow as ``.flo`` (one field), ``.npy`` (``[..., 2, H, W]``) or ``.pt``."""
    path = Path(path)
    flow = as_flow(flow)
    suffix = path.suffix.lower()
    if suffix == ".flo":
        write_flo(path, flow)
    elif suffix == ".npy":
        np.save(path, flow.numpy())
    elif suffix == ".pt":
        torch.save(flow, path)
    else:
        raise ValueError(f"path: expected a .flo, .npy or .pt file, got {path.name}")
