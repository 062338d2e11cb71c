"""Eager calls that skip the dispatcher when it would add nothing.

A ``torch.library.custom_op`` call costs tens of microseconds of host time before its implementation
runs, often more than the kernel itself on a GPU. When nothing needs the dispatcher (no compile or jit
trace, no dispatch or function mode, no functorch transform, plain CPU/CUDA tensors and no autograd),
``call`` runs the implementation directly; otherwise it goes through ``torch.ops.warped_fast.<op>``,
so ``torch.compile``, fake tensors, ``opcheck`` and autograd see the registered op. Ops are declared
with :func:`custom_op`, which registers both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.autograd.forward_ad as _fwad
from torch.utils._python_dispatch import _get_current_dispatch_mode

_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
_direct = True
_impls: dict[str, Callable] = {}


def custom_op(name: str):
    """Decorator: ``impl`` becomes the op ``warped_fast::<name>`` (the returned op takes
    ``register_fake`` / ``register_autograd``) and the body :func:`call` runs directly."""

    def register(impl: Callable):
        _impls[name] = impl
        return torch.library.custom_op(f"warped_fast::{name}", mutates_args=())(impl)

    return register


def set_direct_calls(enabled: bool) -> None:
    """Allow (default) or forbid eager calls that bypass the dispatcher."""
    global _direct
    _direct = bool(enabled)


def direct_ok(args) -> bool:
    """Whether an eager call with ``args`` may run the implementation directly."""
    if (
        not _direct
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or _get_current_dispatch_mode() is not None
        or torch._C._is_torch_function_mode_enabled()
    ):
        return False
    grad = torch.is_grad_enabled()
    for a in args:
        if isinstance(a, torch.Tensor):
            if type(a) is not torch.Tensor or not (a.is_cpu or a.is_cuda) or (grad and a.requires_grad):
                return False
            # a lazy negation or conjugation (torch._neg_view, .conj()): the kernels read raw memory,
            # which holds the values before it; the dispatcher's fallback materializes it
            if a.is_neg() or a.is_conj():
                return False
            if _is_wrapped is not None and _is_wrapped(a):
                return False
    return True


def call(name: str, *args):
    """The op ``name``'s body on ``args`` when ``direct_ok(args)``, else the registered op. Forward-mode
    AD through it is an error (the ops have reverse-mode autograd only: a tangent would come out zero)."""
    if _fwad._current_level >= 0:  # inside torch.autograd.forward_ad.dual_level()
        _refuse_forward_ad(name, any(_fwad.unpack_dual(a).tangent is not None for a in _tensors(args)))
    if direct_ok(args):
        return _impls[name](*args)
    if (
        _is_wrapped is not None
        and not torch.compiler.is_compiling()
        and any(map(_is_wrapped, _tensors(args)))
    ):
        stack = torch._C._functorch.get_interpreter_stack() or []  # torch.func.jvp / jacfwd: a Jvp transform
        _refuse_forward_ad(name, any(i.key() == torch._C._functorch.TransformType.Jvp for i in stack))
    return getattr(torch.ops.warped_fast, name).default(*args)


def _tensors(args) -> list[torch.Tensor]:
    return [a for a in args if isinstance(a, torch.Tensor)]


def _refuse_forward_ad(name: str, dual: bool) -> None:
    if dual:
        raise NotImplementedError(
            f"{name}: forward-mode AD (torch.func.jvp / jacfwd, torch.autograd.forward_ad) is not supported; "
            "the warped_fast ops differentiate in reverse mode, with torch.autograd (backward, torch.autograd.grad)"
        )
