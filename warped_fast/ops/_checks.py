"""Input checks at the public boundary: clear errors naming the argument, expected and actual values."""

from __future__ import annotations

import contextlib
import math
import numbers

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_value_checks = True


def set_value_checks(enabled: bool) -> None:
    """Enable/disable checks that read tensor values (NaN/inf scans; a device sync on GPU)."""
    global _value_checks
    _value_checks = _as_bool(enabled)


def value_checks_on() -> bool:
    """Whether checks that read tensor values run now (on, and not while compiling)."""
    return _value_checks and not torch.compiler.is_compiling()


def check_bool(name: str, v) -> None:
    """``v`` is True or False (not a number or a string), else a TypeError naming ``name``."""
    if not isinstance(v, bool):
        raise TypeError(f"{name}: expected True or False, got {v!r}")


def _as_bool(enabled) -> bool:
    if not isinstance(enabled, int):  # bool is an int; a string or None is refused
        raise TypeError(f"enabled: expected True or False, got {enabled!r}")
    return bool(enabled)


@contextlib.contextmanager
def value_checks(enabled: bool):
    """Temporarily enable/disable value checks."""
    global _value_checks
    old, _value_checks = _value_checks, _as_bool(enabled)
    try:
        yield
    finally:
        _value_checks = old


def check_int(name: str, v, least: int) -> int:
    """An integer argument (not a bool; numpy integers too) of at least ``least``, as an int, else a
    ValueError naming it."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < least:
        raise ValueError(f"{name}: expected an int >= {least}, got {v!r}")
    return int(v)


def check_real(name: str, v, least: float | None = None) -> float:
    """A finite real number (not a bool) of at least ``least`` (None: any), else a ValueError naming it."""
    if (
        isinstance(v, bool)
        or not isinstance(v, numbers.Real)
        or not math.isfinite(v)
        or (least is not None and v < least)
    ):
        bound = "" if least is None else f" >= {least:g}"
        raise ValueError(f"{name}: expected a finite number{bound}, got {v!r}")
    return float(v)


def check_device(name: str, device) -> torch.device:
    """``device`` (a torch.device, a string such as "cuda:1", or None: the CPU) as a torch.device this
    process can use, else a ValueError naming it."""
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{name}: expected cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name}: expected cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}: {device!r}, but this torch has no CUDA device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{name}: {device!r}, but there are only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}: {device!r}, but this torch has no MPS device")
    return dev


def check_float_dtype(name: str, dtype) -> torch.dtype | None:
    """A floating torch dtype (torch.float32, torch.float16, ...) or None (a model's own), else a
    TypeError naming it."""
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"{name}: expected a floating torch dtype such as torch.float16, got {dtype!r}")
    return dtype


# How far past [0, 1] a model's output frames may go (they are clamped): frames on another scale, 0..255
# or [-1, 1], lie further out and are refused.
OVERSHOOT = 0.5


def check_unit_range(name: str, t: torch.Tensor, slack: float = 1e-3, what: str = "frames") -> None:
    """Values of ``t`` within ``[-slack, 1 + slack]``, else a ValueError naming ``name``: frames on another
    scale (0..255, or a model's [-1, 1]) would give meaningless scores or pictures."""
    if t.numel() == 0:
        return
    lo, hi = t.min().item(), t.max().item()
    if not (lo >= -slack and hi <= 1 + slack):  # NaN fails too
        raise ValueError(
            f"{name}: expected {what} in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
            "(0..255 values: divide by 255; [-1, 1] values: (x + 1) / 2)"
        )


def check_tensor(
    name: str,
    t,
    shape: tuple | None = None,
    dtypes: tuple = FLOAT_DTYPES,
    device: torch.device | None = None,
) -> None:
    """Check type, rank/shape (None entries are wildcards), dtype and device of an argument."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if shape is not None:
        got = t.shape  # a plain loop: this runs on every eager call (host time per op)
        ok = len(got) == len(shape)
        if ok:
            for s, a in zip(shape, got, strict=True):
                if s is not None and s != a:
                    ok = False
                    break
        if not ok:
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name}: expected shape {want}, got {list(got)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got {t.device}")


def as_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` as a contiguous tensor of ``dtype``: ``t`` itself when it already is (no call into torch,
    which costs microseconds of host time per op); a negated view is materialized."""
    if t.dtype == dtype and t.is_contiguous() and (torch.compiler.is_compiling() or not t.is_neg()):
        return t  # compiling: the op boundary materializes negated views (and dynamo cannot trace is_neg)
    # a negated view (torch._neg_view) holds the un-negated values: the kernels read raw memory
    return t.to(dtype).contiguous().resolve_neg()


def fake_like(t: torch.Tensor) -> torch.Tensor:
    """A fake kernel's output of ``t``'s shape and dtype, contiguous as every real kernel returns it
    (``torch.empty_like`` would keep a channels-last or permuted input's strides)."""
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def as_f32(t: torch.Tensor) -> torch.Tensor:
    """``t`` as contiguous float32 (itself when it already is)."""
    return as_dtype(t, torch.float32)


def check_nonempty(name: str, t: torch.Tensor, dims: tuple[int, ...], what: str = "frame") -> None:
    if any(t.shape[d] == 0 for d in dims):
        raise ValueError(f"{name}: empty {what} (shape {list(t.shape)})")


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise when ``t`` holds NaN or inf (skipped while compiling or when value checks are off)."""
    if not value_checks_on() or t.numel() == 0:
        return
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: expected finite values, found {bad} NaN/inf entries")


def as_sigma(
    name: str, s, n: int, device: torch.device, dtype=torch.float32, allow_zero: bool = False
) -> torch.Tensor:
    """A noise level as a ``[n]`` tensor of ``dtype`` (from a float, a 0-d or an ``[n]`` tensor), > 0
    (>= 0 with ``allow_zero``, for the last step's target)."""
    if isinstance(s, torch.Tensor) and (s.is_complex() or s.dtype == torch.bool):
        raise TypeError(f"{name}: expected a real noise level, got a {s.dtype} tensor")
    try:
        t = torch.as_tensor(s, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name}: expected a float or a tensor of shape [{n}], got {type(s).__name__}") from e
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name}: expected a float or a tensor of shape [{n}], got shape {list(t.shape)}")
    if value_checks_on():
        ok = (t >= 0) if allow_zero else (t > 0)
        if not bool((ok & torch.isfinite(t)).all()):
            raise ValueError(
                f"{name}: expected finite noise levels {'>=' if allow_zero else '>'} 0, got {t.tolist()}"
            )
    return t.contiguous()
