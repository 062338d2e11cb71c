"""Resuming an interrupted restoration job: what identifies the job, and what it keeps beside its frames.

A job folder holds the frames (:class:`~warped_fast.io.FrameStore`), each finished frame's latent and
the sampler's predictions for the last finished frame (what guidance of the next frame needs). A run
resumes only the same job: its key covers the settings, the inputs (conditioning and flows), the
model's weights and options, the sampling schedule and the generator's state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import numbers
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..io.frames import save_tensors

logger = logging.getLogger("warped_fast")


def tensor_digest(*tensors: torch.Tensor | None) -> str:
    """SHA-256 (hex, 16 digits) of the dtypes, shapes and bytes of ``tensors``."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none;")
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{list(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def module_digest(module: torch.nn.Module) -> str:
    """Digest of a module's parameters and buffers: names, shapes, dtypes and, per tensor, its sum, sum of
    squares and a sum weighted by position (so permuted channels differ), in float64 (float32 on MPS)
    rounded to float32: one pass on the module's device, one transfer."""
    h = hashlib.sha256()
    sums = []
    named = sorted([*module.named_parameters(), *module.named_buffers()], key=lambda kv: kv[0])
    for name, t in named:
        h.update(f"{name}{list(t.shape)}{t.dtype};".encode())
        dt = torch.float32 if t.device.type == "mps" else torch.float64
        v = t.detach().to(dt).reshape(-1)
        pos = torch.arange(v.numel(), device=v.device, dtype=dt) % 251 + 1
        sums.append(torch.stack((v.sum(), v.square().sum(), (v * pos).sum())).float())
    if sums:
        h.update(torch.stack(sums).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def object_digest(obj) -> str:
    """Digest of an object's state one level deep: a module's parameters and buffers (see
    :func:`module_digest`), and each public attribute (private ones are caches) by :func:`value_digest`."""
    h = hashlib.sha256(type(obj).__qualname__.encode())
    if isinstance(obj, torch.nn.Module):
        h.update(module_digest(obj).encode())
    for name, v in sorted(vars(obj).items()):
        if not name.startswith("_"):
            h.update(f"{name}={value_digest(v)};".encode())
    return h.hexdigest()[:16]


def value_digest(v) -> str:
    """Modules and tensors by content, scalars and strings by value, dicts, lists and tuples by their
    items (SDXL's added conditions), objects with a diffusers ``config`` by that config, anything else
    by type."""
    if isinstance(v, torch.nn.Module):
        return module_digest(v)
    if isinstance(v, torch.Tensor):
        return tensor_digest(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return repr(v)
    if isinstance(v, dict):
        items = sorted(v.items(), key=lambda kv: repr(kv[0]))
        return "{" + ",".join(f"{k!r}:{value_digest(x)}" for k, x in items) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(value_digest(x) for x in v) + "]"
    if hasattr(v, "config"):
        # diffusers' own keys ("_use_default_values": a list built from a set, in another order in every
        # process) left out: one job's key must not depend on the process
        public = {k: x for k, x in dict(v.config).items() if not str(k).startswith("_")}
        return type(v).__qualname__ + value_digest(public)
    return type(v).__qualname__


def generator_key(generator) -> str | int | None:
    """An int seed as itself; a ``torch.Generator`` by a digest of its current state (so resuming needs
    a generator in the same state); None as None."""
    if isinstance(generator, torch.Generator):
        return f"{generator.device.type}:{tensor_digest(generator.get_state())}"
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return int(generator)  # numpy integers too (not JSON-able as they are)
    return generator


def options_key(options) -> str:
    """A canonical text of a job's options: keys sorted, numbers as floats, dataclasses (``RFFConfig``)
    by their fields; so ``sigma=2`` and ``sigma=2.0``, or options given in another order, are one job."""

    def canon(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return [type(v).__name__, canon(dataclasses.asdict(v))]
        if isinstance(v, dict):
            return {str(k): canon(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [canon(x) for x in v]
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, numbers.Real):
            return float(v)
        return repr(v)

    return json.dumps(canon(options or {}), sort_keys=True)


def noise_options_key(method: str, options: dict | None) -> str:
    """:func:`options_key` of a noise method's options without those given at the method's default (an
    option spelled out at its default is the same job as one left out; so is an ``rff`` of the default
    field settings, whose channels the noise's shape decides)."""
    from ..noise import METHODS, RFFConfig

    def canonical(v):
        if isinstance(v, RFFConfig):
            v = dataclasses.replace(v, channels=RFFConfig().channels)
            return None if v == RFFConfig() else v
        return v

    params = inspect.signature(METHODS[method]).parameters
    kept = {
        k: canonical(v)
        for k, v in (options or {}).items()
        if k not in params or options_key({k: canonical(v)}) != options_key({k: params[k].default})
    }
    return options_key(kept)


class JobState:
    """The latents of finished frames and the sampler state, in ``folder`` beside the frames.

    Files: ``latents/latent_00000.safetensors`` ... (with the frame's guidance losses, when guided) and
    ``sampler_state.safetensors`` (the predictions ``pred.k`` of every step of the last finished frame
    ``frame``; the frame before's in ``sampler_state.prev.safetensors``), each written atomically.
    After :meth:`resume`, ``losses`` holds the saved guidance losses of the frames before ``start``.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        (self.folder / "latents").mkdir(parents=True, exist_ok=True)
        self.state_path = self.folder / "sampler_state.safetensors"
        self.prev_state_path = self.folder / "sampler_state.prev.safetensors"
        self.losses: dict[int, list[float]] = {}

    def latent_path(self, j: int) -> Path:
        return self.folder / "latents" / f"latent_{j:05d}.safetensors"

    def save(
        self,
        j: int,
        latent: torch.Tensor,
        preds: list[torch.Tensor] | None,
        losses: list[float] | None = None,
    ) -> None:
        """Keep frame ``j``'s latent ``[C, h, w]`` (with its guidance ``losses``, one per guided step)
        and, when guided, its per-step predictions."""
        d = {"latent": latent.detach().cpu().contiguous()}
        if losses:
            d["guidance_loss"] = torch.tensor(losses, dtype=torch.float64)
        _save_atomic(d, self.latent_path(j))
        if preds is not None:
            d = {f"pred.{k}": p.detach().cpu().contiguous() for k, p in enumerate(preds)}
            d["frame"] = torch.tensor(j)
            if self.state_path.exists():  # kept: the state to resume from if this frame's files are lost
                self.state_path.replace(self.prev_state_path)
            _save_atomic(d, self.state_path)

    def resume(
        self, total: int, guided: bool, steps: int, device
    ) -> tuple[int, list[torch.Tensor], list[torch.Tensor] | None]:
        """Where to resume a job of ``total`` frames: after the saved latents (the first missing or
        damaged one ends them) and, when guided, after the frame whose predictions were saved last.

        Returns:
            start (the first frame to compute), the latents of frames ``< start`` and, when guided,
            the predictions of frame ``start - 1`` (None when start is 0 or unguided).
        """
        latents = []
        while len(latents) < total:
            z = _load(self.latent_path(len(latents)))
            if z is None or "latent" not in z:
                break
            if "guidance_loss" in z:
                self.losses[len(latents)] = z["guidance_loss"].tolist()
            latents.append(z["latent"])
        start, prev_pred = len(latents), None
        if start and guided:
            for s in (_load(self.state_path) or {}, _load(self.prev_state_path) or {}):
                f = int(s["frame"]) if "frame" in s else -1
                if 0 <= f < start and all(f"pred.{k}" in s for k in range(steps)):
                    break
            else:
                self.losses = {}
                return 0, [], None  # no usable predictions: start over (frames are rewritten identically)
            start = f + 1  # after a frame whose predictions were lost (a crash, a damaged latent), redo it
            prev_pred = [s[f"pred.{k}"].to(device) for k in range(steps)]
        self.losses = {j: v for j, v in self.losses.items() if j < start}
        return start, [z.to(device) for z in latents[:start]], prev_pred


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a safetensors file, or None when it is missing or damaged (it is then redone)."""
    if not path.exists():
        return None
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for truncated or garbled files
        logger.warning("resume: %s is damaged (%s); recomputing from there", path, e)
        return None


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_tensors(tensors, tmp)
    tmp.replace(path)
