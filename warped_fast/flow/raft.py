"""Optical flow with RAFT (Teed and Deng, ECCV 2020) from torchvision, from a LOCAL weights file only.

Nothing is downloaded: the user points to a weights file (``.safetensors``, or a plain state dict
loaded with ``torch.load(weights_only=True)``), e.g. torchvision's ``raft_large_C_T_SKHT_V2`` saved
on a machine with network access. torchvision is imported lazily; it is not a dependency of
warped_fast (installing it can replace the installed torch build, so install it deliberately).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from ..ops._checks import check_int
from .dis import unit_frames

Model = Literal["large", "small"]

__all__ = ["estimate_flow_raft", "load_raft"]


def _torchvision_raft(model: str):
    try:
        from torchvision.models import optical_flow
    except ImportError as e:
        raise ImportError(
            "RAFT flow needs torchvision (torchvision.models.optical_flow), which is not installed. "
            "Install a torchvision build matching your torch, or use warped_fast.flow.estimate_flow "
            "(OpenCV DIS, no weights needed)."
        ) from e
    return optical_flow.raft_large if model == "large" else optical_flow.raft_small


def _load_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"weights: {path} does not hold a state dict (got {type(sd).__name__})")
    return sd


def load_raft(weights: str | os.PathLike, model: Model = "large", device=None) -> torch.nn.Module:
    """Build torchvision's RAFT and load local weights.

    Args:
        weights: path of a ``.safetensors`` file or a ``torch.save``-d state dict.
        model: ``"large"`` or ``"small"`` (must match the weights).
        device: where to put the model.
    Raises:
        FileNotFoundError: no file at ``weights``. ImportError: torchvision is missing.
    """
    if model not in get_args(Model):
        raise ValueError(f"model: expected one of {get_args(Model)}, got {model!r}")
    if weights is None:
        raise FileNotFoundError(
            "weights: RAFT needs a local weights file (.safetensors or a state dict); nothing is "
            "downloaded. Save e.g. torchvision's Raft_Large_Weights state dict on a machine with "
            "network access and pass its path."
        )
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights: no RAFT weights file at {path} (expected a .safetensors file or a state dict; "
            "nothing is downloaded)"
        )
    ctor = _torchvision_raft(model)
    net = ctor(weights=None, progress=False)
    net.load_state_dict(_load_state_dict(path))
    return net.eval().to(device)


def _prep(frames: torch.Tensor) -> torch.Tensor:
    f = unit_frames(frames)
    if f.shape[1] == 1:
        f = f.expand(-1, 3, -1, -1)
    return f * 2.0 - 1.0  # RAFT's input range


@torch.no_grad()
def estimate_flow_raft(
    frames: torch.Tensor,
    weights: str | os.PathLike | torch.nn.Module,
    model: Model = "large",
    num_flow_updates: int = 12,
    batch: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward flow of consecutive frames with RAFT from local weights.

    Args:
        frames: ``[T, 3 | 1, H, W]`` float in [0, 1] or uint8; runs on the frames' device.
        weights: path of the weights file, or a model from :func:`load_raft`.
        model: ``"large"`` or ``"small"`` (with a path).
        num_flow_updates: RAFT's refinement iterations.
        batch: frame pairs per forward pass.
    Returns:
        fwd ``[T-1, 2, H, W]`` (j -> j+1) and back ``[T-1, 2, H, W]`` (j+1 -> j), float32 pixels.
    """
    check_int("batch", batch, 1)
    check_int("num_flow_updates", num_flow_updates, 1)
    x = _prep(frames)
    net = weights if isinstance(weights, torch.nn.Module) else load_raft(weights, model, frames.device)
    t, _, h, w = x.shape
    ph, pw = (-h) % 8, (-w) % 8  # RAFT needs sizes divisible by 8
    x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    a, b = x[:-1], x[1:]
    fwd, back = [], []
    for s in range(0, t - 1, batch):
        i1, i2 = a[s : s + batch], b[s : s + batch]
        out = net(torch.cat([i1, i2]), torch.cat([i2, i1]), num_flow_updates=num_flow_updates)[-1]
        n = i1.shape[0]
        fwd.append(out[:n, :, :h, :w])
        back.append(out[n:, :, :h, :w])
    return torch.cat(fwd).float(), torch.cat(back).float()
