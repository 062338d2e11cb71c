"""LPIPS (Zhang et al. 2018, v0.1) in plain PyTorch: AlexNet or VGG16 features (torchvision's layer
layout) with the learned 1x1 linear heads, loaded from local files only.

Accepted weight layouts (safetensors or ``.pth``; one file or several whose keys are merged):
- a whole ``lpips.LPIPS(net=...)`` state dict: ``net.slice{1..5}.<i>.*`` and ``lin{0..4}.model.1.weight``;
- torchvision's backbone file (``features.<i>.*``, e.g. ``alexnet-owt-7be5be79.pth``) together with
  the lpips package's heads file (``weights/v0.1/alex.pth``: ``lin{0..4}.model.1.weight``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from .weights_file import load_state_dict, load_strict

# (layers of torchvision's `features`, indices whose ReLU outputs LPIPS compares)
_ALEX = (
    [
        ("conv", 3, 64, 11, 4, 2),
        ("relu",),
        ("pool",),
        ("conv", 64, 192, 5, 1, 2),
        ("relu",),
        ("pool",),
        ("conv", 192, 384, 3, 1, 1),
        ("relu",),
        ("conv", 384, 256, 3, 1, 1),
        ("relu",),
        ("conv", 256, 256, 3, 1, 1),
        ("relu",),
    ],
    (1, 4, 7, 9, 11),
)
_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def _vgg_layers():
    layers, c = [], 3
    for v in _VGG_CFG:
        if v == "M":
            layers.append(("pool",))
        else:
            layers += [("conv", c, v, 3, 1, 1), ("relu",)]
            c = v
    return layers, (3, 8, 15, 22, 29)


class LPIPS(nn.Module):
    """``forward(x, y)``: ``[N, 3, H, W]`` pairs in [0, 1] -> ``[N]`` distances."""

    shift = (-0.030, -0.088, -0.188)
    scale = (0.458, 0.448, 0.450)

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in ("alex", "vgg"):
            raise ValueError(f"net: expected 'alex' or 'vgg', got {net!r}")
        self.net_type = net
        spec, self.taps = _ALEX if net == "alex" else _vgg_layers()
        mods: list[nn.Module] = []
        for s in spec:
            if s[0] == "conv":
                mods.append(nn.Conv2d(s[1], s[2], s[3], stride=s[4], padding=s[5]))
            elif s[0] == "relu":
                mods.append(nn.ReLU())
            else:
                mods.append(nn.MaxPool2d(3, 2) if net == "alex" else nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*mods)
        # each tap is the ReLU right after a convolution
        self.lins = nn.ModuleList(nn.Conv2d(mods[t - 1].out_channels, 1, 1, bias=False) for t in self.taps)
        self.register_buffer("_shift", torch.tensor(self.shift).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_scale", torch.tensor(self.scale).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (2 * x - 1 - self._shift) / self._scale
        for i, m in enumerate(self.features[: self.taps[-1] + 1]):
            h = m(h)
            if i in self.taps:
                out.append(h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self._feats(x), self._feats(y)
        return sum(
            lin((a - b).square()).mean((2, 3)) for lin, a, b in zip(self.lins, fx, fy, strict=True)
        ).view(-1)

    @classmethod
    def from_files(cls, paths: list[Path], net: str = "alex") -> LPIPS:
        """Build and load strictly from one or more local weight files (layouts in the module doc)."""
        model = cls(net)
        sd: dict[str, torch.Tensor] = {}
        for p in paths:
            sd.update(load_state_dict("lpips", p))
        mapped = {}
        for k, v in sd.items():
            if k.startswith("scaling_layer."):
                continue  # fixed constants, built in
            if m := re.fullmatch(r"net\.slice[1-5]\.(\d+)\.(.+)", k):
                k = f"features.{m.group(1)}.{m.group(2)}"  # lpips keeps torchvision's layer indices
            elif m := re.fullmatch(r"lin([0-4])\.model\.1\.weight", k):
                k = f"lins.{m.group(1)}.weight"
            elif k.startswith("classifier."):
                continue  # torchvision's classifier head: not used
            mapped[k] = v
        load_strict("lpips", model, mapped, ", ".join(str(p) for p in paths))
        return model
