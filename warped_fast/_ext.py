"""Loads the compiled module ``warped_fast._C`` and reports which backends exist here."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

logger = logging.getLogger("warped_fast")

# dtype codes understood by the compiled CPU kernels.
CPU_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


@functools.cache
def ext():
    """The compiled module, or None when it was not built (pure-PyTorch fallback)."""
    try:
        from . import _C  # type: ignore[attr-defined]
    except ImportError as e:  # pragma: no cover - depends on the install
        logger.warning("warped_fast._C is not available (%s); using the PyTorch reference ops", e)
        return None
    return _C


def has_cpu_ext() -> bool:
    """True when the C++ CPU kernels are built."""
    return ext() is not None


@functools.cache
def cuda_ext_built() -> bool:
    """True when the compiled module contains the CUDA kernels (whether or not a GPU is present)."""
    C = ext()
    return bool(C is not None and getattr(C, "with_cuda", False))


@functools.cache
def has_cuda_ext() -> bool:
    """True when the CUDA kernels are built and a CUDA device is usable by both torch and them."""
    return cuda_ext_built() and torch.cuda.is_available() and ext().cuda_device_count() > 0


def triton_interpreted() -> bool:
    """True when Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def has_triton(device_type: str = "cuda") -> bool:
    """True when Triton kernels can run on tensors of ``device_type`` (CPU only under the interpreter)."""
    if not triton_installed():
        return False
    if device_type == "cuda":
        return torch.cuda.is_available()
    return device_type == "cpu" and triton_interpreted()
