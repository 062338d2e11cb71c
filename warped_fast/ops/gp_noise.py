"""GP noise by random Fourier features, evaluated at arbitrary coordinates (method section 2).

``out[n, c] (x) = sqrt(2 / J) * sum_j w[c, j] * cos(<z[c', j], X_n(x)> + b[c', j])``, with
``c' = c`` (independent channels, ``z: [C, J, 2]``) or ``c' = 0`` (shared features, ``z: [1, J, 2]``).
Fused: the ``[pixels, J]`` matrix is never materialized. Math in float32.
"""

from __future__ import annotations

import contextlib
import contextvars
import os

import torch

from .. import reference
from . import _cpu, _eager
from ._checks import as_f32, check_finite, check_nonempty, check_tensor, fake_like
from ._dispatch import ContextSetting, register, register_autograd, select

register("gp_noise", ("cuda", "cpu", "reference"))

# CUDA kernels for shared-feature fields (independent channels always run the FMA kernel):
#   fma:          one FMA per channel per cosine (measured on the H100, see docs/benchmarks_h100.md)
#   tensor_cores: phases and channel sums on tensor cores in split-tf32 (float32 accuracy), sm_80+;
#                 slower on the H200 (1.27 against 1.09 ms at 1x4x1024x1024, J = 3000)
#   auto:         the FMA kernel
GP_CUDA_KERNELS = {"auto": 0, "fma": 1, "tensor_cores": 2}
GP_CUDA_SPLITS = (1, 2, 4, 8)
_cuda_choice: contextvars.ContextVar[tuple[str | None, int]] = contextvars.ContextVar(
    "warped_fast_gp_kernel", default=(None, 0)
)


def _check_kernel(name: str, what: str) -> str:
    if name not in GP_CUDA_KERNELS:
        raise ValueError(f"{what}: expected one of {tuple(GP_CUDA_KERNELS)}, got {name!r}")
    return name


def gp_noise_cuda_kernel(name: str | None, split: int | None = None) -> ContextSetting:
    """Run ``gp_noise`` calls on CUDA tensors from now on (or, in a ``with`` block, inside it) with the
    given kernel choice.

    Args:
        name: kernel for shared-feature fields (see ``GP_CUDA_KERNELS``); None: the environment
            variable ``WARPED_FAST_GP_CUDA_KERNEL``, else "auto".
        split: feature slices per thread block, one of ``GP_CUDA_SPLITS`` (a tuning knob for
            benchmarks); None: the launcher's choice (the smallest split giving 4 blocks per SM).
    """
    if name is not None:
        _check_kernel(name, "gp_noise_cuda_kernel")
    if split is not None and split not in GP_CUDA_SPLITS:
        raise ValueError(f"split: expected one of {GP_CUDA_SPLITS} or None, got {split!r}")
    return ContextSetting(_cuda_choice, (name, split or 0))


def _kernel_choice() -> tuple[int, int]:
    """(kernel code, split) for the CUDA launcher (split 0: automatic)."""
    name, split = _cuda_choice.get()
    name = name or os.environ.get("WARPED_FAST_GP_CUDA_KERNEL") or "auto"
    return GP_CUDA_KERNELS[_check_kernel(name, "WARPED_FAST_GP_CUDA_KERNEL")], split


def _cuda_workspace(device: torch.device, sizes: tuple, kernel: int) -> torch.Tensor | None:
    """Device scratch of the CUDA kernel on the current device (the tensor-core kernel's packed
    operands), or None. sizes: (N, H, W, C, Cz, J)."""
    if kernel != GP_CUDA_KERNELS["tensor_cores"]:
        return None
    nbytes = _cpu.lib().gp_noise_cuda_workspace(*sizes, kernel)
    return torch.empty(nbytes, dtype=torch.uint8, device=device) if nbytes else None


# Frames per CUDA launch (a grid dimension).
_CUDA_MAX_FRAMES = 65535

# The current CUDA stream of a device as a raw handle (what compiled graphs use); None if absent.
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


@_eager.custom_op("gp_noise")
def _gp_noise(coords: torch.Tensor, z: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    backend = select("gp_noise", coords.device.type)
    if backend == "reference":
        return reference.gp_noise(coords, z, b, w)
    n, h, wd, _ = coords.shape
    c, j = w.shape
    out = torch.empty(n, c, h, wd, dtype=torch.float32, device=coords.device)
    args = (
        _cpu.ptr(coords),
        _cpu.ptr(z),
        _cpu.ptr(b),
        _cpu.ptr(w),
        _cpu.ptr(out),
        n,
        h,
        wd,
        c,
        z.shape[0],
        j,
    )
    if backend == "cpu":
        _cpu.lib().gp_noise_cpu(*args, _cpu.threads())
    else:  # cuda: launch on the tensors' device and its current stream
        if coords.data_ptr() % 8:  # the kernels read (x, y) as one 8-byte float2
            coords = coords.clone()
        idx, (kernel, split) = coords.device.index, _kernel_choice()
        # on the current device: its stream as a raw handle, no device guard or Stream object (~us of host time)
        here = _raw_stream is not None and idx == torch.cuda.current_device()
        with contextlib.nullcontext() if here else torch.cuda.device(idx):
            stream = _raw_stream(idx) if here else torch.cuda.current_stream(idx).cuda_stream
            work = _cuda_workspace(coords.device, args[5:], kernel)  # per feature tile: any batch size
            nbytes = 0 if work is None else work.numel()
            for f0 in range(0, n, _CUDA_MAX_FRAMES):  # the batch is a grid dimension: at most 65535
                nf = min(_CUDA_MAX_FRAMES, n - f0)
                part = (_cpu.ptr(coords[f0:]), *args[1:4], _cpu.ptr(out[f0:]), nf, *args[6:])
                _cpu.lib().gp_noise_cuda(*part, stream, kernel, split, _cpu.ptr(work), nbytes)
    return out


@_gp_noise.register_fake
def _(coords, z, b, w):
    n, h, wd, _ = coords.shape
    return coords.new_empty((n, w.shape[0], h, wd), dtype=torch.float32)


@torch.library.custom_op("warped_fast::gp_noise_backward", mutates_args=())
def _gp_noise_vjp(
    coords: torch.Tensor,
    z: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    grad: torch.Tensor,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # The exact field's derivative in float64, chunked over pixels (reference.gp_noise_vjp), on every
    # backend; an op of its own so a traced backward holds one node, not one per chunk. Inputs not in
    # `needs` get a 0-element tensor.
    grads = reference.gp_noise_vjp(coords, z, b, w, grad, tuple(needs))
    return tuple(t.new_empty(0) if g is None else g for g, t in zip(grads, (coords, z, b, w), strict=True))


@_gp_noise_vjp.register_fake
def _(coords, z, b, w, grad, needs):
    return tuple(
        fake_like(t) if nd else t.new_empty(0) for t, nd in zip((coords, z, b, w), needs, strict=True)
    )


def _gp_noise_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _gp_noise_backward(ctx, grad):
    needs = list(ctx.needs_input_grad)
    grads = torch.ops.warped_fast.gp_noise_backward(*ctx.saved_tensors, grad.contiguous(), needs)
    return tuple(g if nd else None for g, nd in zip(grads, needs, strict=True))


register_autograd(_gp_noise, _gp_noise_backward, _gp_noise_setup)


def gp_noise(
    coords: torch.Tensor,
    z: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Evaluate the RFF Gaussian-process field at coordinates.

    Args:
        coords: ``[N, H, W, 2]`` positions (x, y) in pixels, any float dtype (used as float32).
        z: ``[Cz, J, 2]`` frequencies in radians per pixel, ``Cz`` = C (independent) or 1 (shared).
        b: ``[Cz, J]`` phases.
        w: ``[C, J]`` weights.
        dtype: output dtype (the field is computed in float32, then cast).
    Returns:
        ``[N, C, H, W]`` noise; unit variance per pixel for ``w ~ N(0, 1)``, ``b ~ U(0, 2 pi)``.

    The C++ and CUDA kernels take phases relative to an integer anchor per block of pixels, so their
    error stays ~1e-5 far from the origin; a block whose coordinates lie far apart (an occlusion edge
    beside the far-away fresh-noise tile) takes absolute float32 phases instead, as the PyTorch reference
    (the fallback where no kernel is built) does everywhere: ~5e-3 off at 16384 px.

    Differentiable in all four inputs (first order). The backward, on every backend, is the exact
    field's derivative in float64 PyTorch, chunked over pixels (``reference.gp_noise_vjp``, as the
    op ``warped_fast::gp_noise_backward``): correct at coordinates far from the origin, but far
    slower than the forward's kernels.
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    check_tensor("coords", coords, (None, None, None, 2))
    check_nonempty("coords", coords, (1, 2))
    check_tensor("w", w, (None, None), device=coords.device)
    c, j = w.shape
    if j == 0:
        raise ValueError("w: expected at least one feature (J >= 1), got J = 0")
    if c == 0:
        raise ValueError("w: expected at least one channel, got C = 0")
    check_tensor("z", z, (None, j, 2), device=coords.device)
    if z.shape[0] not in (1, c):
        raise ValueError(f"z: expected {c} (independent) or 1 (shared) feature sets, got {z.shape[0]}")
    check_tensor("b", b, (z.shape[0], j), device=coords.device)
    check_finite("coords", coords)
    f32 = [as_f32(t) for t in (coords, z, b, w)]
    out = _eager.call("gp_noise", *f32)
    return out if dtype == torch.float32 else out.to(dtype)
