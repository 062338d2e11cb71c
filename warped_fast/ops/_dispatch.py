"""Backend selection for the ops: cuda-ext | triton | cpu-ext | reference.

The default order by device is ``cuda, triton, reference`` on CUDA tensors and ``cpu, reference``
on CPU tensors, restricted to the backends an op has. ``use_backend(name)`` (or the environment
variable ``WARPED_FAST_BACKEND``) forces one backend; forcing a backend an op lacks, or one that
cannot run here, raises.
"""

from __future__ import annotations

import contextvars
import logging
import os

from .. import _ext

logger = logging.getLogger("warped_fast")

BACKENDS = ("cuda", "triton", "cpu", "reference")
_DEFAULT_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}
# Backends implemented per op; filled by each op module at import.
OP_BACKENDS: dict[str, tuple[str, ...]] = {}
_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("warped_fast_backend", default=None)
_logged: set[tuple[str, str, str]] = set()
# select() per (op, device type, dtype, forced backend, TRITON_INTERPRET): what can run does not change
# within a process, and every eager op call selects (the probes cost microseconds of host time).
_selected: dict[tuple, str] = {}


def register(op: str, backends: tuple[str, ...]) -> None:
    """Declare ``op``'s backends."""
    OP_BACKENDS[op] = backends
    _selected.clear()


def available(backend: str, device_type: str) -> bool:
    """Whether ``backend`` can run on tensors of ``device_type`` in this process."""
    if backend == "reference":
        return True
    if backend == "cpu":
        return device_type == "cpu" and _ext.has_cpu_ext()
    if backend == "cuda":
        return device_type == "cuda" and _ext.has_cuda_ext()
    if backend == "triton":
        return _ext.has_triton(device_type)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def forced_backend() -> str | None:
    forced = _forced.get()
    if forced == "auto":  # use_backend(None): automatic, whatever WARPED_FAST_BACKEND says
        return None
    if forced:
        return forced
    env = os.environ.get("WARPED_FAST_BACKEND") or None
    if env is not None and env not in BACKENDS:
        raise ValueError(f"WARPED_FAST_BACKEND: expected one of {BACKENDS} or unset, got {env!r}")
    return env


class ContextSetting:
    """Sets a context variable when called; used in a ``with`` block, restores the previous value on exit
    (``torch.set_grad_enabled`` style: both ``f(x)`` and ``with f(x):`` work)."""

    def __init__(self, var: contextvars.ContextVar, value):
        self._var = var
        self._token = var.set(value)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._var.reset(self._token)


def use_backend(name: str | None) -> ContextSetting:
    """Force every op called from now on (or, in a ``with`` block, inside it) to use backend ``name``
    (None: automatic selection, also when the environment variable ``WARPED_FAST_BACKEND`` forces one).
    The setting is a context variable: it holds in this thread (and asyncio task), and in the backward
    passes of ops called under it; other threads keep their own (set it there, or use the variable)."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")
    return ContextSetting(_forced, "auto" if name is None else name)


def register_autograd(op, backward, setup_context) -> None:
    """``op.register_autograd(backward, setup_context=...)``, the backward running under the backend
    forced at the forward: autograd runs CUDA backwards on its own threads, which do not see the
    caller's context variables (``with use_backend("reference")`` would otherwise not reach them)."""

    def setup(ctx, inputs, output):
        ctx.forced_backend = _forced.get()
        setup_context(ctx, inputs, output)

    def backward_forced(ctx, *grads):
        if ctx.forced_backend is None:
            return backward(ctx, *grads)
        with ContextSetting(_forced, ctx.forced_backend):
            return backward(ctx, *grads)

    op.register_autograd(backward_forced, setup_context=setup)


# Triton kernels compute in float32 and take float32/float16/bfloat16 tensors only.
_TRITON_DTYPES = ("torch.float32", "torch.float16", "torch.bfloat16")


def select(op: str, device_type: str, dtype=None) -> str:
    """The backend ``op`` uses for tensors on ``device_type`` (of ``dtype``, when given) now."""
    forced = forced_backend()
    key = (op, device_type, dtype, forced, os.environ.get("TRITON_INTERPRET"))
    backend = _selected.get(key)
    if backend is None:
        backend = _selected[key] = _select(op, device_type, dtype, forced)
    return backend


def _select(op: str, device_type: str, dtype, forced: str | None) -> str:
    have = OP_BACKENDS[op]
    if dtype is not None and str(dtype) not in _TRITON_DTYPES:
        have = tuple(b for b in have if b != "triton")
    if forced is not None:
        if forced == "triton" and forced in OP_BACKENDS[op] and forced not in have:
            raise ValueError(f"{op}: backend 'triton' does not take {dtype} tensors (float32/16, bfloat16)")
        if forced not in have:
            raise ValueError(f"{op}: backend {forced!r} is not implemented; it has {have}")
        if not available(forced, device_type):
            raise RuntimeError(f"{op}: backend {forced!r} cannot run on {device_type} tensors here")
        return forced
    order = _DEFAULT_ORDER.get(device_type, ("reference",))
    for b in order:
        if b in have and available(b, device_type):
            best = next(x for x in order if x in have)
            key = (op, device_type, b)
            if b != best and key not in _logged:
                _logged.add(key)
                logger.warning(
                    "%s: %s backend unavailable on %s; falling back to %s", op, best, device_type, b
                )
            return b
    return "reference"


def backend_info(device_type: str | None = None) -> dict:
    """What is available here and which backend each op uses.

    Args:
        device_type: "cpu" or "cuda"; default: "cuda" when a GPU is visible, else "cpu".
    Returns:
        ``{"cpu_ext", "cuda_ext_built", "cuda_ext", "triton", "device_type", "ops": {op: backend}}``;
        an op that cannot run under a forced backend reports ``"unavailable: <why>"``.
    """
    import torch

    forced_backend()  # a bad WARPED_FAST_BACKEND is an error here, not "unavailable" for every op
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "cpu_ext": _ext.has_cpu_ext(),
        "cuda_ext_built": _ext.cuda_ext_built(),
        "cuda_ext": _ext.has_cuda_ext(),
        "triton": _ext.has_triton(device_type),
        "device_type": device_type,
        "ops": {op: _reported(op, device_type) for op in sorted(OP_BACKENDS)},
    }


def _reported(op: str, device_type: str) -> str:
    try:
        return select(op, device_type)
    except (ValueError, RuntimeError) as e:
        return f"unavailable: {e}"
