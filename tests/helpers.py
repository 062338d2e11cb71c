"""Shared test helpers: comparisons that print max/mean errors, random flows away from discontinuities."""

from __future__ import annotations

import torch


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0, what: str = ""
):
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == e.shape, f"{what}: shape {list(a.shape)} != {list(e.shape)}"
    err = (a - e).abs()
    tol = atol + rtol * e.abs()
    bad = err > tol
    if bool(bad.any()):
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{err.numel()} elements off; max err {err.max().item():.3e}, "
            f"mean err {err.mean().item():.3e}, atol {atol:g}, rtol {rtol:g}"
        )


def smooth_flow(n: int, h: int, w: int, gen: torch.Generator, scale: float = 3.0, dtype=torch.float64):
    """Random flow ``[n, 2, h, w]`` whose sample positions stay >= 0.02 px away from integers, so
    bilinear weights, tap sets and the validity mask are away from their discontinuities."""
    f = torch.randn(n, 2, h, w, generator=gen, dtype=torch.float64) * scale
    frac = f - torch.floor(f)
    f = torch.floor(f) + 0.02 + 0.96 * frac
    return f.to(dtype)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-12)).item()
