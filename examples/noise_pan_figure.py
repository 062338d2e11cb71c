"""Render every noise method over 4 frames of a sub-pixel pan into docs/noise_methods.png.

Usage: ``python examples/noise_pan_figure.py [--out docs/noise_methods.png] [--shift 0.37]``
(needs matplotlib). Channel 0, a 64x64 crop; each cell's title gives the frame's variance, and the
last column the correlation between frame 3 and frame 0 moved by the true pan (1 for noise that
follows the motion exactly, 0 for unrelated noise).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from warped_fast import warp
from warped_fast.noise import warp_noise_video

ROWS = [
    ("gp", {}, "GP warp (Warped Diffusion)"),
    ("fixed", {}, "fixed"),
    ("resample", {}, "resample"),
    ("nearest", {}, "nearest (white)"),
    ("bilinear", {}, "bilinear (white)"),
    ("bilinear", {"base": "gp"}, "bilinear (GP)"),
    ("hiwyn", {}, "HIWYN (k=8)"),
    ("infres", {}, "InfRes (particles)"),
    ("gwtf", {}, "Go-with-the-Flow"),
    ("gwtf", {"upsample": 8}, "Go-with-the-Flow (8x grid)"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "noise_methods.png"))
    p.add_argument("--shift", type=float, default=0.37, help="pan in pixels per frame (x)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, c, size, crop = 4, 4, 96, 64
    s = args.shift
    fwd = torch.zeros(t - 1, 2, size, size)
    fwd[:, 0] = s  # the content moves right by s per frame
    back = -fwd
    o = (size - crop) // 2
    fig, axes = plt.subplots(len(ROWS), t + 1, figsize=(1.9 * (t + 1), 1.95 * len(ROWS)))
    for r, (method, opts, label) in enumerate(ROWS):
        v = warp_noise_video(method, (c, size, size), back, fwd, generator=args.seed, **opts)
        # frame 0 moved by the true pan (3 s), bilinear: a reference for "follows the motion"
        moved, valid = warp(
            v[:1], torch.full((1, 2, size, size), 0.0).index_fill_(1, torch.tensor([0]), -(t - 1) * s)
        )
        m = valid[0, 0, o : o + crop, o : o + crop]
        a = v[t - 1, 0, o : o + crop, o : o + crop][m]
        b = moved[0, 0, o : o + crop, o : o + crop][m]
        corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        for j in range(t):
            ax = axes[r, j]
            img = v[j, 0, o : o + crop, o : o + crop]
            ax.imshow(img.numpy(), cmap="gray", vmin=-2.5, vmax=2.5, interpolation="nearest")
            ax.set_title(f"frame {j}  var {v[j].var().item():.2f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
        ax = axes[r, t]
        diff = (v[t - 1, 0] - moved[0, 0])[o : o + crop, o : o + crop]
        ax.imshow(diff.numpy(), cmap="RdBu", vmin=-2.5, vmax=2.5, interpolation="nearest")
        ax.set_title(f"f3 - f0 moved; corr {corr:.2f}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"Noise of each method over a pan of {s} px/frame (channel 0, {crop}x{crop} crop)", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
