"""Per-item memo of what a model reads off its conditioning alone.

A sampler calls the denoiser with the same frames' conditioning at every step, often re-batched (a
wavefront of frames is concatenated anew each step), while a residual model's base and gain depend on the
conditioning only. :class:`ConditioningCache` keeps the results of the last few conditioning items and
matches them by exact value, so neither tensor identity nor batch composition matters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class ConditioningCache:
    """Memoize ``fn(cond)`` per batch item.

    Args:
        fn: ``cond`` ``[B, ...]`` -> a tuple of tensors, each with leading dimension ``B``, item ``i``
            depending on ``cond[i]`` only.
        capacity: items kept (most recently used first).

    Calls with a ``cond`` that requires grad are computed and not kept.
    """

    def __init__(self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], capacity: int = 32):
        if capacity < 1:
            raise ValueError(f"capacity: expected >= 1, got {capacity}")
        self.fn, self.capacity = fn, capacity
        self._items: list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = []

    def clear(self) -> None:
        self._items.clear()

    def _find(self, c: torch.Tensor) -> int | None:
        for j, (key, _) in enumerate(self._items):
            if (
                key.shape == c.shape
                and key.dtype == c.dtype
                and key.device == c.device
                and torch.equal(key, c)
            ):
                return j
        return None

    def __call__(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if torch.is_grad_enabled() and cond.requires_grad:
            return self.fn(cond)
        found = [self._find(cond[i]) for i in range(cond.shape[0])]
        vals = {i: self._items[j][1] for i, j in enumerate(found) if j is not None}
        used = {j for j in found if j is not None}  # move to the front, in their old order
        self._items = [e for j, e in enumerate(self._items) if j in used] + [
            e for j, e in enumerate(self._items) if j not in used
        ]
        miss = [i for i, j in enumerate(found) if j is None]
        if miss:
            with torch.no_grad():
                out = self.fn(cond[miss])
            if not vals:
                self._store(cond, miss, out)
                return out
            for k, i in enumerate(miss):
                vals[i] = tuple(t[k] for t in out)
            self._store(cond, miss, out)
        return tuple(
            torch.stack(parts) for parts in zip(*(vals[i] for i in range(cond.shape[0])), strict=True)
        )

    def _store(self, cond: torch.Tensor, miss: list[int], out: tuple[torch.Tensor, ...]) -> None:
        for k, i in enumerate(miss):
            self._items.insert(0, (cond[i].detach().clone(), tuple(t[k] for t in out)))
        del self._items[self.capacity :]
