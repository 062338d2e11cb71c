"""Calling the compiled CPU kernels: pointers, dtype codes, thread count."""

from __future__ import annotations

import torch

from .. import _ext


def ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def dtype_code(t: torch.Tensor) -> int:
    return _ext.CPU_DTYPE_CODES[t.dtype]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else runs in float32 on the CPU."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_MIN_WORK_PER_THREAD = 1 << 15  # elements; below this, thread start-up costs more than it saves


def threads(work: int | None = None) -> int:
    """OpenMP threads for a kernel over ``work`` elements (torch's intra-op thread count at most)."""
    t = max(1, torch.get_num_threads())
    if work is not None:
        t = max(1, min(t, work // _MIN_WORK_PER_THREAD))
    return t


def lib():
    return _ext.ext()
