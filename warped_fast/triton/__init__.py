"""Triton kernels: the warp family and the guidance step (the ops' GPU paths), and the transports of
the HIWYN, InfRes and GWTF noise methods. Each public function runs on the device of its tensors."""

from __future__ import annotations

import contextlib
import functools

import torch


def on_tensor_device(fn):
    """Run ``fn`` with its first tensor argument's CUDA device current: Triton launches on the current
    device, whatever device the tensors are on (tensors on ``cuda:1`` while ``cuda:0`` is current)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = next((a for a in args if isinstance(a, torch.Tensor)), None)
        guard = contextlib.nullcontext()
        if t is not None and t.is_cuda and t.device.index != torch.cuda.current_device():
            guard = torch.cuda.device(t.device)
        with guard:
            return fn(*args, **kwargs)

    return wrapper
