"""Checkpoints as safetensors (model, EMA, optimizer tensors, RNG states) plus a JSON of the rest (step,
optimizer scalars, GradScaler state). No pickles: resuming never runs ``torch.load`` on a file. Saving is
crash-safe: a complete checkpoint exists at every moment and :func:`recover_checkpoint` finds it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..io.frames import save_tensors, write_json_atomic

logger = logging.getLogger("warped_fast")


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{idx}.{k}"] = v.contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for key, v in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _complete(folder: Path) -> bool:
    """A checkpoint folder is complete once its ``state.json`` exists (written last, by a rename)."""
    return (folder / "state.safetensors").is_file() and (folder / "state.json").is_file()


def save_checkpoint(
    path: Path, model, ema, opt, step: int, extra: dict, scaler=None, model_keys: set[str] | None = None
) -> None:
    """Write ``path/state.safetensors`` and ``path/state.json``, crash-safe: a complete ``path.tmp`` is
    written first, then ``path`` -> ``path.old``, ``path.tmp`` -> ``path``, and ``path.old`` is removed;
    at every moment a complete checkpoint exists (see :func:`recover_checkpoint`). ``scaler``: a
    ``GradScaler``, saved when enabled. ``model_keys``: save only these entries of the model's state dict
    (LoRA: the adapters; the frozen rest comes from the pretrained weights on resume)."""
    tmp, old = _sibling(path, "tmp"), _sibling(path, "old")
    shutil.rmtree(tmp, ignore_errors=True)  # a partial one from a crash
    tmp.mkdir(parents=True)
    state = model.state_dict()
    if model_keys is not None:
        state = {k: state[k] for k in sorted(model_keys)}
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in state.items()}
    tensors.update({f"ema.{k}": v.detach().contiguous() for k, v in ema.items()})
    ot, ometa = _flatten_optimizer(opt)
    tensors.update(ot)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on CUDA draws from these
        tensors.update({f"rng.cuda.{i}": st for i, st in enumerate(torch.cuda.get_rng_state_all())})
    save_tensors(tensors, tmp / "state.safetensors")
    meta = {"step": step, "optimizer": ometa, **extra}
    if model_keys is not None:
        meta["partial_model"] = True
    if scaler is not None and scaler.is_enabled():
        meta["scaler"] = scaler.state_dict()
    write_json_atomic(tmp / "state.json", meta)  # last: it marks the folder complete
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def recover_checkpoint(path: Path) -> bool:
    """Make ``path`` the newest complete checkpoint after a crash inside :func:`save_checkpoint`: when
    ``path`` is missing, a complete ``path.tmp`` (newer) or else ``path.old`` takes its place. Returns
    whether ``path`` holds a checkpoint."""
    if not path.exists():
        for src in (_sibling(path, "tmp"), _sibling(path, "old")):
            if _complete(src):
                src.rename(path)
                break
    if path.exists() and not _complete(path):
        raise FileNotFoundError(f"checkpoint: {path} lacks state.safetensors or state.json")
    return path.exists()


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.name}.{suffix}")


def load_checkpoint(path: Path, model, ema: dict, opt, scaler=None) -> dict:
    """Restore what :func:`save_checkpoint` wrote; returns the JSON metadata (with ``step``). A partial
    model state (``model_keys``) restores those entries and leaves the rest of ``model`` as it is."""
    tensors = load_file(str(path / "state.safetensors"))
    meta = json.loads((path / "state.json").read_text())
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    if meta.get("partial_model"):
        unexpected = sorted(set(state) - set(model.state_dict()))
        if unexpected:
            raise ValueError(f"checkpoint: {path} holds weights the model lacks: {unexpected[:5]}")
        model.load_state_dict(state, strict=False)
    else:
        model.load_state_dict(state)
    for k in ema:
        ema[k].copy_(tensors[f"ema.{k}"])
    _unflatten_optimizer(opt, tensors, meta["optimizer"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if scaler is not None and scaler.is_enabled():
        if "scaler" in meta:
            scaler.load_state_dict(meta["scaler"])
        else:
            logger.warning("checkpoint %s has no GradScaler state: the fp16 loss scale starts afresh", path)
    return meta
