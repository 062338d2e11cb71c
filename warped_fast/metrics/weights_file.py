"""Loading metric-network weights from local files (never downloaded): safetensors, or a PyTorch
state-dict file (``.pth`` / ``.pt``, loaded with ``weights_only=True``) as the upstream projects ship them."""

from __future__ import annotations

from pathlib import Path

import torch


def need_weights(metric: str, weights: str | Path | None, argument: str = "weights") -> Path:
    """The local path of ``metric``'s weights (given as ``argument``), or a clear error when there is none."""
    what = "folder" if argument.endswith("dir") else "file"
    if weights is None:
        raise FileNotFoundError(
            f"{metric}: needs network weights, which are never downloaded here; pass {argument}=<local {what}>"
        )
    p = Path(weights)
    if not p.exists():
        raise FileNotFoundError(f"{metric}: {argument} {p} does not exist")
    return p


def load_state_dict(metric: str, path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or ``torch.save``d state-dict file (a ``state_dict`` entry is unwrapped)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{metric}: cannot read {path} as safetensors or a torch state dict: {e}") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{metric}: {path} does not hold a state dict")
    return sd


def load_strict(metric: str, module: torch.nn.Module, sd: dict[str, torch.Tensor], path) -> None:
    """Load ``sd`` into ``module``, naming the missing / unexpected / mis-shaped keys on failure
    (BatchNorm's ``num_batches_tracked`` counters may be absent)."""
    want = module.state_dict()
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in want if k not in sd and not k.endswith("num_batches_tracked")]
    extra = [k for k in sd if k not in want]
    shapes = [k for k in sd if k in want and sd[k].shape != want[k].shape]
    if missing or extra or shapes:
        raise ValueError(
            f"{metric}: {path} does not match the network: missing {missing[:4]}, unexpected {extra[:4]}, "
            f"wrong shapes {[(k, list(sd[k].shape), list(want[k].shape)) for k in shapes[:4]]}"
        )
    module.load_state_dict(sd, strict=False)
