"""``warped-fast``: command-line entry points."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _train(args) -> int:
    from .train import TrainConfig, Trainer

    over = {"steps": args.steps, "output_dir": args.output_dir, "task": args.task}
    cfg = (
        TrainConfig.from_file(args.config, **over)
        if args.config
        else TrainConfig(**{k: v for k, v in over.items() if v is not None})
    )
    folder = Trainer(cfg, device=args.device).train(max_minutes=args.max_minutes)
    print(f"model written to {folder}")
    return 0


def _release(args) -> int:
    from .train.release import release_default_model

    card = release_default_model(args.task, args.run)
    print(json.dumps(card["eval"], indent=2))
    return 0


def _info(args) -> int:
    from . import backend_info

    print(json.dumps(backend_info(args.device), indent=2))
    return 0


def _pipeline(args, task):
    from .pipelines import WarpedDiffusionPipeline

    if args.model == "default":
        return WarpedDiffusionPipeline.from_default(task, device=args.device)
    return WarpedDiffusionPipeline.from_pretrained(args.model, task, device=args.device)


def _restore(args, task) -> int:
    from pathlib import Path

    from .io import load_mask, read_video, resize_frames, write_video
    from .io.masks import SHAPES
    from .sampling import GuidanceConfig

    video = read_video(args.input, max_frames=args.max_frames)
    mask = args.mask if task == "inpaint" else None
    if args.size:
        h, w = args.size
        if mask is not None and mask not in SHAPES:  # a mask file: read at the input's size, resized with it
            mask = resize_frames(load_mask(mask, video.shape[0], *video.shape[-2:]), (h, w))
        video = resize_frames(video, (h, w))
    pipe = _pipeline(args, task)
    out = Path(args.out)
    res = pipe(
        video, mask, num_inference_steps=args.steps,
        guidance=GuidanceConfig(mode=args.guidance, lam=args.lam), noise_method=args.noise,
        frame_schedule=args.schedule, generator=args.seed, output_dir=out / "frames", progress=not args.quiet,
    )  # fmt: skip
    path = write_video(res.frames, out / f"{task}.mp4", fps=args.fps)
    print(f"wrote {path} and {len(res.frames)} frames in {out / 'frames'}")
    return 0


def _warp_noise(args) -> int:
    from pathlib import Path

    from safetensors.torch import save_file

    from .flow import estimate_flow, flow_to_latent
    from .io import read_video, resize_frames
    from .noise import warp_noise_video

    video = read_video(args.input, max_frames=args.max_frames)
    if args.size:
        video = resize_frames(video, args.size)
    h, w = video.shape[-2:]
    if args.factor < 1 or h % args.factor or w % args.factor:
        print(
            f"warp-noise: the frames are {h}x{w}; --factor {args.factor} must be >= 1 and divide both "
            "(choose --size or --factor)",
            file=sys.stderr,
        )
        return 2
    fwd, back = estimate_flow(video)
    fwd, back = flow_to_latent(fwd, args.factor), flow_to_latent(back, args.factor)
    noise = warp_noise_video(args.method, (args.channels, *fwd.shape[-2:]), back, fwd, generator=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"noise": noise.contiguous(), "fwd_flow": fwd.contiguous(), "back_flow": back.contiguous()}, str(out)
    )
    print(f"wrote noise {list(noise.shape)} ({args.method}) to {out}")
    return 0


def _eval(args) -> int:
    from .pipelines.evaluate import evaluate_all, table

    rows = evaluate_all(
        args.out, frames=args.frames, steps=args.steps, quick=args.quick, progress=not args.quiet
    )
    print(table(rows))
    print(f"results and plot in {args.out}")
    return 0


def _demo(args) -> int:
    from .pipelines.demo import run_demo

    res = run_demo(args.out, frames=args.frames, steps=args.steps, progress=not args.quiet)
    print(json.dumps(res, indent=2))
    return 0


def _bench(args) -> int:
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "run_all.py"
    if not script.exists():
        print("the benchmarks ship with the source tree (bench/); run from a clone", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *(["--quick"] if args.quick else [])])


def _add_restore_args(p, task):
    p.add_argument("input", help="video file (mp4, gif), folder of frames")
    if task == "inpaint":
        p.add_argument(
            "--mask",
            default="box",
            help="mask image/video path or a shape: box, center, left, right, top, bottom, stripe",
        )
    p.add_argument(
        "--out", required=True, help="output folder (frames/, the mp4); an interrupted run resumes"
    )
    p.add_argument("--model", default="default", help="'default' or a local diffusers folder")
    p.add_argument("--steps", type=int, help="Euler steps (default: 50 with guidance, 25 without)")
    p.add_argument("--guidance", choices=["exact", "jacobian_free", "off"], default="exact")
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument(
        "--noise",
        default="gp",
        help="noise method: gp, fixed, resample, nearest, bilinear, hiwyn, infres, gwtf",
    )
    p.add_argument("--schedule", choices=["sequential", "wavefront"], default="sequential")
    p.add_argument("--size", type=_size, help="resize the input to HxW first")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--device")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=lambda a: _restore(a, task))


def _size(text: str) -> tuple[int, int]:
    """``--size HxW`` as (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 64x96, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="warped-fast", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train / fine-tune a UNet with GP noise")
    t.add_argument("--config", help="a .toml or .json TrainConfig file")
    t.add_argument("--task", choices=["inpaint", "sr"])
    t.add_argument("--steps", type=int)
    t.add_argument("--output-dir")
    t.add_argument("--device")
    t.add_argument("--max-minutes", type=float, help="stop, checkpoint and export after this long")
    t.set_defaults(fn=_train)

    r = sub.add_parser("release-model", help="export a training run as the shipped default model")
    r.add_argument("--task", choices=["inpaint", "sr"], required=True)
    r.add_argument("--run", required=True, help="the run's output_dir")
    r.set_defaults(fn=_release)

    _add_restore_args(sub.add_parser("inpaint", help="video inpainting"), "inpaint")
    _add_restore_args(sub.add_parser("sr", help="x8 video super-resolution"), "sr")

    w = sub.add_parser("warp-noise", help="export warped noise for a video (safetensors)")
    w.add_argument("input")
    w.add_argument("--out", required=True)
    w.add_argument("--method", default="gp")
    w.add_argument("--factor", type=int, default=8, help="latent downsampling factor")
    w.add_argument("--channels", type=int, default=4)
    w.add_argument("--size", type=_size, help="resize the input to HxW first")
    w.add_argument("--max-frames", type=int)
    w.add_argument("--seed", type=int, default=0)
    w.set_defaults(fn=_warp_noise)

    e = sub.add_parser("eval", help="the paper's protocols at small scale with the default models")
    e.add_argument("--out", default="eval_out")
    e.add_argument("--frames", type=int, default=16)
    e.add_argument("--steps", type=int, default=20)
    e.add_argument("--quick", action="store_true", help="fewer methods")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(fn=_eval)

    d = sub.add_parser("demo", help="bigbuckbunny inpainting demo (restored video, noise video, plot)")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--frames", type=int, default=8)
    d.add_argument("--steps", type=int, default=20)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(fn=_demo)

    b = sub.add_parser("bench", help="run the benchmarks (from a source tree)")
    b.add_argument("--quick", action="store_true")
    b.set_defaults(fn=_bench)

    i = sub.add_parser("info", help="available backends and which one each op uses")
    i.add_argument("--device", choices=["cpu", "cuda"])
    i.set_defaults(fn=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
