"""Benchmark the main job with the shipped default models: guided Warped Diffusion on 8 frames of Big Buck
Bunny at 72x128 (inpainting a box; x8 super-resolution from 9x16), 20 Euler steps, fused ops vs the
PyTorch reference ops in the same run, and Jacobian-free guidance (fused ops). Flow (OpenCV DIS) is
estimated once and timed on its own row. A last row per task: the latency of ``pipe.stream`` (live video),
from a frame taken to its restored frame (its pair's flow included), against the whole-clip ms per frame.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import Table, parse_args, sync  # noqa: E402

import warped_fast as wf  # noqa: E402
from warped_fast.flow import estimate_flow  # noqa: E402
from warped_fast.io import resize_frames  # noqa: E402
from warped_fast.pipelines import WarpedDiffusionPipeline  # noqa: E402
from warped_fast.pipelines.demo import bigbuckbunny  # noqa: E402
from warped_fast.sampling import GuidanceConfig  # noqa: E402


def main():
    args = parse_args(__doc__.splitlines()[0])
    dev = args.device
    frames_n, size, steps = (4, (72, 128), 10) if args.quick else (8, (72, 128), 20)
    repeats = args.repeats or 3
    clip = bigbuckbunny(frames_n, size)
    table = Table("default_model", dev)
    for task in ("inpaint", "sr"):
        pipe = WarpedDiffusionPipeline.from_default(task, device=dev)
        video = clip if task == "inpaint" else resize_frames(clip, (size[0] // 8, size[1] // 8))
        mask = "box" if task == "inpaint" else None
        flow_frames, _ = pipe.prepare(video, mask)
        t0 = time.perf_counter()
        flows = estimate_flow(flow_frames, "medium")
        flow_ms = (time.perf_counter() - t0) * 1e3
        shape = f"{task} {frames_n}x3x{size[0]}x{size[1]}, {steps} steps, guided"
        table.add(f"{task}: DIS flow", shape, "opencv", flow_ms, None, "once per clip, not in the rows below")

        def run(n=frames_n, k=steps, mode="exact"):
            fl = (flows[0][: n - 1], flows[1][: n - 1])
            pipe.denoiser.clear_cache()  # every timed run computes its frames' fills anew
            pipe(video[:n], mask, num_inference_steps=k,
                 guidance=GuidanceConfig(mode=mode), flows=fl, progress=False)  # fmt: skip
            sync(dev)

        ref_ms = None
        # exact guidance with reference ops (the baseline), then fused ops; Jacobian-free guidance
        # (no backward through the UNet, method section 5) with fused ops
        for backend, mode in (("reference", "exact"), (None, "exact"), (None, "jacobian_free")):
            with wf.use_backend(backend):
                run(2, 2, mode)  # warm-up
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    run(mode=mode)
                    times.append((time.perf_counter() - t0) * 1e3)
            ms = statistics.median(times)
            ref_ms = ref_ms or ms
            name = f"{'reference' if backend else 'fused'} ops, {mode.replace('_', '-')} guidance"
            table.add(f"{task}: Warped Diffusion", shape, name, ms, ref_ms,
                      f"{ms / 1e3:.1f} s/clip, {ms / frames_n:.0f} ms/frame; median of {repeats} "
                      f"({min(times) / 1e3:.1f} to {max(times) / 1e3:.1f} s)")  # fmt: skip
            if backend is None and mode == "exact":
                fused_frame_ms = ms / frames_n
        # live video: from a frame taken by pipe.stream (flow of its pair included) to its restored frame
        taken: list[float] = []

        def source():
            for f in video:
                taken.append(time.perf_counter())
                yield f

        pipe.denoiser.clear_cache()
        lat = []
        for j, _ in enumerate(pipe.stream(source(), mask, num_inference_steps=steps)):
            sync(dev)
            lat.append((time.perf_counter() - taken[j]) * 1e3)
        table.add(f"{task}: stream, per frame", shape, "fused ops, exact guidance, sequential",
                  statistics.median(lat[1:]), fused_frame_ms,
                  f"latency: frame in -> frame out (frame 0: {lat[0]:.0f} ms); ref = whole-clip ms/frame")  # fmt: skip
    table.finish()


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
