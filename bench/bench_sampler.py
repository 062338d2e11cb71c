"""Benchmark the video sampler: per denoiser step and per frame, for plain, exact-guided and
Jacobian-free sampling, sequential vs wavefront, fused ops vs the unfused PyTorch reference ops,
eager vs compiled UNet, all in one run. Each row is the median of ``--repeats`` (3) whole-clip runs; its
ratio is to the same guidance mode with the eager UNet and the reference ops, sequential, in this run.

Models: a tiny UNet built in code or an SDXL-shaped random-weight UNet (``--model sdxl``, fp16 on a GPU,
128x128 latent: the cost depends on the shape, not the weights); by default the SDXL-shaped one on a
GPU without ``--quick``, else the tiny one.
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
from warped_fast.models import DiffusersDenoiser  # noqa: E402
from warped_fast.sampling import (
    FrameInput,
    GuidanceConfig,
    VideoSampler,
    VideoSamplerConfig,
    diffusers_schedule,
)  # noqa: E402


def build_unet(kind: str, device: str, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    if kind == "tiny":
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=16,
        )  # fmt: skip
        ctx, added = torch.randn(1, 8, 32), None
    else:  # SDXL-shaped (2.6B parameters)
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )  # fmt: skip
        ctx = torch.randn(1, 77, 2048)
        added = {
            "text_embeds": torch.randn(1, 1280),
            "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]]),
        }
    added = (
        None if added is None else {k: v.to(device, dtype) for k, v in added.items()}
    )  # no copies per call
    return unet.to(device, dtype).eval(), ctx.to(device, dtype), added


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        extra=lambda p: p.add_argument("--model", choices=["tiny", "sdxl"], help="the UNet (see above)"),
    )
    dev = args.device
    model = args.model or ("sdxl" if (dev.startswith("cuda") and not args.quick) else "tiny")
    dtype = torch.float16 if dev.startswith("cuda") else torch.float32
    size = 128 if model == "sdxl" else 32
    frames_n, steps = (16, 8) if dev.startswith("cuda") else (4, 6)
    if args.quick:
        frames_n, steps = 3, 4
    from diffusers import EulerDiscreteScheduler

    unet, ctx, added = build_unet(model, dev, dtype)
    sch = EulerDiscreteScheduler()
    sched = diffusers_schedule(sch, steps)
    field = wf.RFFField.sample(wf.RFFConfig(channels=4), 0, device=dev)
    flow = torch.zeros(2, size, size, device=dev)
    flow[0] = 0.5
    frames = [
        FrameInput(field(wf.identity_coords(size, size, device=dev, offset=(-0.5 * j, 0.0)))[0].to(dtype), None,
                   flow if j else None, -flow if j else None)
        for j in range(frames_n)
    ]  # fmt: skip
    table = Table("sampler", dev)
    shape = f"{model} 1x4x{size}x{size} {str(dtype)[6:]}, {frames_n} frames x {steps} steps"
    backends = ["eager"] + (["compile"] if dev.startswith("cuda") else [])
    max_batch = 8
    reps = args.repeats or 3
    ref_ms: dict[str, float] = {}  # per guidance mode: eager UNet, reference ops, sequential (the base)
    for unet_backend in backends:
        den = DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=ctx, added_cond_kwargs=added, backend=unet_backend,
                                compile_mode="max-autotune-no-cudagraphs" if unet_backend == "compile" else None)  # fmt: skip
        for mode in ("off", "exact", "jacobian_free"):
            for schedule in ("sequential", "wavefront"):
                for ops_backend in ("reference", None):
                    if ops_backend == "reference" and (schedule == "wavefront" or unet_backend == "compile"):
                        continue
                    cfg = VideoSamplerConfig(
                        schedule, max_batch=max_batch, guidance=GuidanceConfig(mode=mode)
                    )
                    sampler = VideoSampler(den, sched, cfg)
                    times = []
                    with wf.use_backend(ops_backend), wf.ops.value_checks(False):
                        # warm-up; compiled: the whole clip, so every batch shape is compiled before timing
                        sampler.sample(frames if unet_backend == "compile" else frames[:2])
                        for _ in range(reps):
                            sync(dev)
                            t0 = time.perf_counter()
                            sampler.sample(frames)
                            sync(dev)
                            times.append((time.perf_counter() - t0) * 1e3)
                    total = statistics.median(times)
                    per_step = total / (frames_n * steps)
                    if ops_backend == "reference":
                        ref_ms[mode] = per_step
                    name = f"{unet_backend} unet, {'fused' if ops_backend is None else 'reference'} ops"
                    note = f"median of {reps}; {total / frames_n:.1f} ms/frame, {1e3 * frames_n / total:.2f} frames/s"
                    if unet_backend == "compile":
                        note += f", compile {den.runner.total_compile_seconds:.0f} s"
                    table.add(f"{mode} {schedule}", shape, name, per_step, ref_ms.get(mode), note)
    table.finish()


if __name__ == "__main__":
    main()
