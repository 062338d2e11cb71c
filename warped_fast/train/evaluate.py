"""Held-out evaluation of inpainting / x8 super-resolution models against simple baselines.

Baselines: mean fill, nearest fill, push-pull fill and harmonic fill (inpainting; the last two are the
bases of residual models), bicubic (SR). Model: an Euler ODE sample from GP noise, the one-step
posterior-mean estimate ``D(sigma_max * xi)``, and its average over ``draws`` GP draws ``xi`` (at
sigma_max the noisy input carries no information, so the average is a Monte Carlo estimate of the same
posterior mean with less of the network's sensitivity to its noise input). Images are compared in
[0, 1] with PSNR and SSIM (torchmetrics), known pixels pasted back for inpainting.
"""

from __future__ import annotations

import torch
from scipy import ndimage

from ..models.hole_fill import HOLE_FILLS
from ..noise.rff import RFFConfig, RFFField, identity_coords
from ..sampling.euler import sample_image
from .data import heldout_crops
from .tasks import downsample, inpaint_inputs, random_masks, upsample


def psnr_ssim(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM ``[B]`` of ``[B, 3, H, W]`` images in [-1, 1] (compared in [0, 1])."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    p, t = ((pred.clamp(-1, 1) + 1) / 2).double(), ((target + 1) / 2).double()
    psnr = peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
    return psnr, ssim


def paired_margin(a: dict, b: dict, metric: str) -> tuple[float, float, int]:
    """Paired comparison of two methods' per-crop scores (``evaluate`` entries): mean of ``a - b``, its
    standard error over the crops, and the number of crops where ``a`` is better."""
    d = torch.tensor(a["per_crop"][metric], dtype=torch.float64) - torch.tensor(b["per_crop"][metric])
    se = float(d.std() / d.numel() ** 0.5) if d.numel() > 1 else float("inf")
    return float(d.mean()), se, int((d > 0).sum())


def mean_fill(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    known = 1 - mask
    mean = (x * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1)
    return x * known + mean * mask


def nearest_fill(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    for i in range(x.shape[0]):
        m = mask[i, 0].numpy() > 0.5
        if m.all():
            out[i] = 0
            continue
        _, (iy, ix) = ndimage.distance_transform_edt(m, return_indices=True)
        out[i] = x[i][:, torch.from_numpy(iy), torch.from_numpy(ix)]
    return out


def gp_noise_batch(n: int | list[int], size: int, seed: int, channels: int = 3) -> torch.Tensor:
    """GP noise ``[len(idx), C, size, size]``: item ``i`` is the window at ``(4096 i, 0)`` of one field, so a
    subset of indices gets exactly the noise it gets in the full batch. ``n``: a count or the indices."""
    field = RFFField.sample(RFFConfig(channels, shared_features=True), seed)
    idx = range(n) if isinstance(n, int) else n
    return torch.cat([field(identity_coords(size, size, offset=(4096.0 * i, 0.0))) for i in idx])


@torch.no_grad()
def evaluate(
    model,
    task: str,
    size: int = 64,
    steps: int = 20,
    seed: int = 0,
    per_image: int = 4,
    draws: int = 8,
    subset: list[int] | None = None,
) -> dict:
    """Scores on held-out crops: ``{method: {"psnr": dB, "ssim": x, "per_crop": {...}}}``.

    Args:
        model: a :class:`warped_fast.models.DiffusersDenoiser` of the task's layout.
        task: "inpaint" or "sr".
        subset: evaluate only these crop indices; each crop gets the same mask and noise as in the full
            evaluation, so its scores match the full run's per-crop scores (a fast check of a card).
    """
    crops = heldout_crops(size, per_image)
    idx = list(range(crops.shape[0])) if subset is None else list(subset)
    x = crops[idx]
    if task == "inpaint":
        g = torch.Generator().manual_seed(seed)
        mask = random_masks(crops.shape[0], size, size, g, p_full=0.0)[idx]  # all drawn: same mask per crop
        masked = inpaint_inputs(x, mask)
        cond = torch.cat([mask, masked], 1)
        base = {
            "mean fill": mean_fill(x, mask),
            "nearest fill": nearest_fill(x, mask),
            **{f"{name.replace('_', '-')} fill": fill(masked, mask) for name, fill in HOLE_FILLS.items()},
        }
    else:
        cond = upsample(downsample(x), (size, size))
        base = {"bicubic": cond}
    sched = model.sampling_schedule(steps)
    noise = gp_noise_batch(idx, size, seed)
    sample = sample_image(model, noise, sched, cond)
    s_max = torch.full((x.shape[0],), sched.sigma_max)
    mmse = model(noise * sched.sigma_max, s_max, cond)
    mean = mmse + sum(
        model(gp_noise_batch(idx, size, seed + k) * sched.sigma_max, s_max, cond) for k in range(1, draws)
    )
    outs = {
        **base,
        "model (ODE sample)": sample,
        "model (one-step MMSE)": mmse,
        f"model (MMSE, mean of {draws} draws)": mean / draws,
    }
    res = {}
    for name, y in outs.items():
        if task == "inpaint":
            y = x * (1 - mask) + y * mask
        p, s = psnr_ssim(y, x)
        res[name] = {
            "psnr": round(float(p.mean()), 3),
            "ssim": round(float(s.mean()), 4),
            "per_crop": {"psnr": [round(float(v), 3) for v in p], "ssim": [round(float(v), 4) for v in s]},
        }
    res["_meta"] = {"crops": len(idx), "size": size, "steps": steps, "seed": seed, "draws": draws}
    return res


def scores_table(res: dict) -> str:
    rows = ["| method | PSNR (dB) | SSIM |", "|---|---|---|"]
    rows += [f"| {k} | {v['psnr']:.2f} | {v['ssim']:.4f} |" for k, v in res.items() if not k.startswith("_")]
    return "\n".join(rows)
