"""Host-to-device copies that do not wait for the device (the sampler's per-tick path stays sync-free)."""

from __future__ import annotations

import torch


def copy_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the CPU) on ``device``. A CUDA copy goes through pinned memory, non-blocking: a plain
    ``.to("cuda")`` of pageable memory synchronizes the stream, so the host stops queueing work."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
