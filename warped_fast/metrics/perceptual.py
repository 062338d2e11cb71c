"""Metrics computed by networks: LPIPS, FID, Inception score and CLIP score. Weights come from local
files only (nothing is downloaded); a missing or mismatched file is a clear error.

- LPIPS: AlexNet / VGG16 + the v0.1 linear heads (:mod:`.lpips_net`).
- FID and Inception score: pytorch-fid's Inception-v3 port of the 2015-12-05 TensorFlow graph
  (:mod:`.inception_net`); FID as in pytorch-fid (2048-d pool features), Inception score as in
  torch-fidelity (softmax of the bias-free 1008-way logits, ``splits`` groups).
- CLIP score: a local CLIP folder in transformers' format (needs ``transformers``),
  ``100 * max(cos(image, text), 0)`` averaged over frames, as torchmetrics defines it.

Frames are ``[T, 3, H, W]`` floats in [0, 1].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..ops._checks import OVERSHOOT, check_unit_range
from .inception_net import FIDInception
from .lpips_net import LPIPS
from .quality import _check_pair, check_tensor_frames
from .weights_file import need_weights


def _check_frames(name: str, x: torch.Tensor, min_frames: int = 1) -> torch.Tensor:
    check_tensor_frames(name, x)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected [T, 3, H, W] frames in [0, 1], got {list(x.shape)}")
    if x.shape[0] < min_frames:
        raise ValueError(f"{name}: expected at least {min_frames} frames, got {x.shape[0]}")
    check_unit_range(name, x, slack=OVERSHOOT)
    return x.float().clamp(0, 1)


def lpips(
    pred: torch.Tensor,
    target: torch.Tensor,
    weights: str | Path | list[str | Path] | None = None,
    net: str = "alex",
) -> torch.Tensor:
    """Per-frame LPIPS ``[T]`` from local weights: a whole lpips state dict, or the torchvision backbone
    file plus the lpips heads file (a list of paths), see :mod:`.lpips_net`."""
    files = weights if isinstance(weights, (list, tuple)) else [weights]
    paths = [need_weights("lpips", w) for w in files]
    _check_pair(pred, target)  # types, one [T, C, H, W] shape, value ranges
    if pred.shape[1] != 3:
        raise ValueError(f"pred: expected [T, 3, H, W] frames in [0, 1], got {list(pred.shape)}")
    a, b = pred.float().clamp(0, 1), target.float().clamp(0, 1)
    model = LPIPS.from_files(paths, net)
    with torch.no_grad():
        try:
            return model(a, b)
        except RuntimeError as e:  # a pooling layer of the backbone with nothing left to pool
            if "too small" not in str(e):
                raise
            raise ValueError(
                f"pred/target: {a.shape[-2]}x{a.shape[-1]} frames are too small for LPIPS ({net}'s pooling "
                "layers); upsample them or compare larger crops"
            ) from e


def inception_features(
    frames: torch.Tensor, net: FIDInception, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool features ``[T, 2048]`` and bias-free logits ``[T, 1008]`` (float64) of the FID Inception."""
    pools, logits = [], []
    with torch.no_grad():
        for chunk in frames.split(batch_size):
            p, lg = net(chunk)
            pools.append(p.double())
            logits.append(lg.double())
    return torch.cat(pools), torch.cat(logits)


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))`` of two Gaussians (float64; the trace of the
    square root from the eigenvalues of the symmetric ``C1^(1/2) C2 C1^(1/2)``)."""
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    w, v = torch.linalg.eigh(cov1)
    s1 = (v * w.clamp(min=0).sqrt()) @ v.T
    m = s1 @ cov2 @ s1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * tr_sqrt)


def fid(real: torch.Tensor, fake: torch.Tensor, weights: str | Path | None = None) -> float:
    """FID between two frame sets (each at least 2 frames; hundreds or more for a meaningful value)."""
    path = need_weights("fid", weights)
    r, f = _check_frames("real", real, 2), _check_frames("fake", fake, 2)
    net = FIDInception.from_file(path, "fid")
    fr, _ = inception_features(r, net)
    ff, _ = inception_features(f, net)
    return frechet_distance(fr.mean(0), torch.cov(fr.T), ff.mean(0), torch.cov(ff.T))


def inception_score_from_logits(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """``exp(E_x KL(p(y|x) || p(y)))`` per group of ``logits`` ``[T, K]``: (mean, std) over ``splits`` groups,
    as torch-fidelity computes it: the rows shuffled (``numpy.random.RandomState(2020)``, so that a video's
    neighbouring frames do not fill a group), group i being rows ``[i T // splits, (i + 1) T // splits)``."""
    n = logits.shape[0]
    if isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= n:
        raise ValueError(f"splits: expected an int in [1, {n}] (the number of frames), got {splits!r}")
    scores = []
    xlogy = torch.special.xlogy  # 0 log 0 = 0
    order = torch.from_numpy(np.random.RandomState(2020).permutation(n)).to(logits.device)
    p = logits[order].double().softmax(1)
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        kl = (xlogy(part, part) - xlogy(part, part.mean(0, keepdim=True))).sum(1)
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))


def inception_score(
    frames: torch.Tensor, weights: str | Path | None = None, splits: int = 10
) -> tuple[float, float]:
    """Inception score (mean, std over ``splits`` groups of the frames; at least ``splits`` frames)."""
    path = need_weights("inception_score", weights)
    x = _check_frames("frames", frames, splits)
    _, logits = inception_features(x, FIDInception.from_file(path, "inception_score"))
    return inception_score_from_logits(logits, splits)


_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(frames: torch.Tensor, size: int, mean=_CLIP_MEAN, std=_CLIP_STD) -> torch.Tensor:
    """CLIP's image transform in torch: bicubic resize of the short side to ``size``, centre crop,
    normalization. ``[T, 3, H, W]`` in [0, 1] -> ``[T, 3, size, size]``."""
    h, w = frames.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(frames, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size].clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def clip_score(frames: torch.Tensor, text: str | list[str], model_dir: str | Path | None = None) -> float:
    """CLIP score of frames against one caption (or one per frame), from a local CLIP folder
    (transformers ``CLIPModel`` with its tokenizer; ``preprocessor_config.json`` gives mean/std): the mean
    over frames of ``100 max(cos, 0)``, clamped per frame as Hessel et al. define CLIP-S (torchmetrics'
    ``CLIPScore`` clamps the mean instead: the two differ only where a frame's cosine is negative)."""
    p = need_weights("clip_score", model_dir, "model_dir")
    x = _check_frames("frames", frames)
    texts = [text] * x.shape[0] if isinstance(text, str) else list(text)
    if len(texts) != x.shape[0]:
        raise ValueError(f"text: expected one caption or {x.shape[0]}, got {len(texts)}")
    try:
        from transformers import AutoTokenizer, CLIPModel
    except ImportError as e:
        raise ImportError("clip_score: needs transformers (pip install transformers)") from e
    model = CLIPModel.from_pretrained(str(p), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    mean, std = _CLIP_MEAN, _CLIP_STD
    if (p / "preprocessor_config.json").exists():
        cfg = json.loads((p / "preprocessor_config.json").read_text())
        mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
    pixels = clip_preprocess(x, model.config.vision_config.image_size, mean, std)
    ids = tok(
        texts,
        padding=True,
        truncation=True,
        max_length=model.config.text_config.max_position_embeddings,
        return_tensors="pt",
    )
    with torch.no_grad():
        img = _embeds(model.get_image_features(pixel_values=pixels))
        txt = _embeds(model.get_text_features(**ids))
    cos = F.cosine_similarity(img, txt, dim=-1)
    return float((100 * cos.clamp(min=0)).mean())


def _embeds(out) -> torch.Tensor:
    """transformers returns a tensor or (newer versions) an output object with ``pooler_output``."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
