"""UNet execution backends: eager or torch.compile (forward and forward + input gradient; CUDA graphs
with ``mode="reduce-overhead"`` when shapes are static). The compile cost is measured and reported."""

from __future__ import annotations

import logging
import time
from typing import Literal

import torch

logger = logging.getLogger("warped_fast")

UNetBackend = Literal["eager", "compile"]


class UNetRunner:
    """Calls a module eagerly or through ``torch.compile``; records the first-call cost per shape.

    Attributes:
        compile_seconds: wall time of the first call of each new input signature (compile + run).
    """

    def __init__(self, module: torch.nn.Module, backend: UNetBackend = "eager", mode: str | None = None):
        if backend not in ("eager", "compile"):
            raise ValueError(f"backend: expected 'eager' or 'compile', got {backend!r}")
        self.module, self.backend = module, backend
        self._fn = torch.compile(module, mode=mode, dynamic=False) if backend == "compile" else module
        self.compile_seconds: dict[tuple, float] = {}

    def __call__(self, *args, **kwargs):
        if self.backend == "eager":
            return self._fn(*args, **kwargs)
        # positional and keyword inputs alike, and those in a dict (SDXL's added conditions)
        values = [*args, *(kwargs[k] for k in sorted(kwargs))]
        tensors = [x for v in values for x in (v.values() if isinstance(v, dict) else (v,))]
        key = tuple((tuple(a.shape), a.requires_grad) for a in tensors if isinstance(a, torch.Tensor))
        key += (torch.is_grad_enabled(),)
        if key in self.compile_seconds:
            return self._fn(*args, **kwargs)
        _allow_recompiles(len(self.compile_seconds) + 1)
        t0 = time.perf_counter()
        out = self._fn(*args, **kwargs)
        self.compile_seconds[key] = time.perf_counter() - t0
        logger.info("UNet compiled for %s in %.1f s", key, self.compile_seconds[key])
        return out

    @property
    def total_compile_seconds(self) -> float:
        return sum(self.compile_seconds.values())


def _allow_recompiles(n: int) -> None:
    """Let dynamo keep ``n`` static-shape graphs of the UNet: past its recompile limit (8) it would run
    every further shape (a wavefront's batch sizes, with and without gradients) eagerly, silently."""
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    if getattr(cfg, name) < n:
        setattr(cfg, name, n)
