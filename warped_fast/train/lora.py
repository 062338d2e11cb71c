"""Low-rank adaptation (LoRA, Hu et al. 2022) of a UNet's attention projections for fine-tuning large
models: each ``to_q``, ``to_k``, ``to_v`` and ``to_out.0`` linear layer ``W`` becomes ``W + up @ down``
with ``down`` ``[r, in]`` (Gaussian, std 1 / r) and ``up`` ``[out, r]`` (zeros, so training starts at the
pretrained model), the layers diffusers' SDXL LoRA training adapts. Only ``down`` and ``up`` train; the
export merges them into ``W``, so the result is a plain diffusers UNet. With an EMA, the export merges the
averaged factors, ``ema(up) @ ema(down)`` (not the average of the products; close while they move slowly).

Written here rather than taken from peft: peft brings accelerate, which changes how every diffusers model
loads (its low-memory path), for four small matrices per layer.
"""

from __future__ import annotations

import torch

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class LoRALinear(torch.nn.Module):
    """``base(x) + (x @ down.T) @ up.T`` around a frozen ``base`` linear layer.

    Args:
        base: the pretrained layer (kept, frozen). rank: ``r``. generator: draws ``down``.
    """

    def __init__(self, base: torch.nn.Linear, rank: int, generator: torch.Generator):
        super().__init__()
        self.base = base.requires_grad_(False)
        w = base.weight
        down = torch.randn(rank, w.shape[1], generator=generator) / rank
        self.down = torch.nn.Parameter(down.to(w.device, w.dtype))
        self.up = torch.nn.Parameter(torch.zeros(w.shape[0], rank, device=w.device, dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + torch.nn.functional.linear(torch.nn.functional.linear(x, self.down), self.up)


def add_lora(unet: torch.nn.Module, rank: int, seed: int) -> list[str]:
    """Freeze ``unet`` and wrap its attention projections in :class:`LoRALinear`; returns the wrapped
    layers' names. Raises if there are none."""
    unet.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    names = [n for n, m in unet.named_modules() if n.endswith(TARGETS) and isinstance(m, torch.nn.Linear)]
    if not names:
        raise ValueError(
            f"lora_rank: {type(unet).__name__} has no attention projections ({', '.join(TARGETS)}) to adapt"
        )
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, g))
    return names


def frozen_fingerprint(model: torch.nn.Module) -> str:
    """A digest of the frozen weights of a LoRA model (names, shapes, dtypes and up to 4096 evenly spaced
    values of each): a resumed run checks it against the checkpoint's, as the base is not stored there."""
    import hashlib

    h = hashlib.sha256()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, t in sorted(model.state_dict().items()):
        if name in trained:
            continue
        flat = t.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)][:4096].float().cpu()
        h.update(f"{name}:{list(t.shape)}:{t.dtype};".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def merged_state_dict(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """A LoRA UNet's state dict (``name.base.weight``, ``name.down``, ``name.up``) as the plain UNet's:
    ``name.weight = base.weight + up @ down`` (in float32), the bias as it was."""
    out = dict(state)
    for name in names:
        base, down, up = out.pop(f"{name}.base.weight"), out.pop(f"{name}.down"), out.pop(f"{name}.up")
        out[f"{name}.weight"] = (base.float() + up.float() @ down.float()).to(base.dtype)
        if f"{name}.base.bias" in out:
            out[f"{name}.bias"] = out.pop(f"{name}.base.bias")
    return out
