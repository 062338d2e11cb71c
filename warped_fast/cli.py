"""``warped-fast``: command-line entry points."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys

# The methods of warped_fast.noise and their options other than the GP field's ``rff`` (kept here so that
# --help does not import torch; a test keeps them in step with the classes), and the RFF field settings
# a --noise-option may name for the methods that take an ``rff``.
NOISE_METHOD_OPTIONS = {
    "bilinear": ("base",),
    "fixed": ("base",),
    "gp": ("occlusion", "sigma", "cuda_graph"),
    "gwtf": ("normalize_weights", "upsample"),
    "hiwyn": ("upsample", "max_extent"),
    "infres": ("missing", "min_area"),
    "nearest": ("base",),
    "resample": ("base",),
}
NOISE_METHODS = tuple(NOISE_METHOD_OPTIONS)
RFF_KEYS = ("num_features", "lengthscale", "truncation", "shared_features")
# OpenCV DIS presets (warped_fast.flow.dis.Preset; here so that --help does not import torch)
FLOW_PRESETS = ("ultrafast", "fast", "medium")
FLOW_PRESET_HELP = "OpenCV DIS preset of the optical flow (default: medium, the most accurate)"
NOISE_OPTION_HELP = (
    "an option of the noise method as KEY=VALUE, repeatable; VALUE is read as JSON (3000, 2.5, true), "
    "else as text. Keys: "
    + "; ".join(f"{m}: {', '.join(o)}" for m, o in NOISE_METHOD_OPTIONS.items())
    + f"; and, for the GP field of gp and of base=gp, {', '.join(RFF_KEYS)}"
)


class CliError(Exception):
    """A bad command-line value found after parsing: printed without a traceback, exit status 2."""


def _check_out(folder, flag: str, shown) -> None:
    """``folder`` writable before any work (and left as it was), else a CliError naming ``flag``."""
    from .io.frames import check_writable

    try:
        check_writable(folder, keep=False)
    except PermissionError as e:
        raise CliError(f"{flag}: cannot write to {shown} ({e.__cause__})") from e


def _train(args) -> int:
    from .train import TrainConfig, Trainer

    over = {"steps": args.steps, "output_dir": args.output_dir, "task": args.task}
    cfg = (
        TrainConfig.from_file(args.config, **over)
        if args.config
        else TrainConfig(**{k: v for k, v in over.items() if v is not None})
    )
    _check_out(cfg.output_dir, "output_dir", cfg.output_dir)  # before the model and the data are built
    folder = Trainer(cfg, device=args.device).train(max_minutes=args.max_minutes)
    print(f"model written to {folder}")
    return 0


def _release(args) -> int:
    from .train.release import release_default_model

    card = release_default_model(args.task, args.run, dest=args.dest)
    print(json.dumps(card["eval"], indent=2))
    return 0


def _info(args) -> int:
    import torch

    from . import backend_info

    if args.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: this torch has no CUDA device (torch.cuda.is_available() is False)")

    print(json.dumps(backend_info(args.device), indent=2))
    return 0


def _pipeline(args, task):
    from pathlib import Path

    import torch

    from .pipelines import WarpedDiffusionPipeline

    text = {} if args.prompt is None else {"prompt": args.prompt, "negative_prompt": args.negative_prompt}
    if args.negative_prompt is not None and args.prompt is None:
        raise CliError("--negative-prompt: goes with --prompt")
    if args.negative_prompt is not None and (Path(args.model) / "transformer").is_dir():
        raise CliError(
            "--negative-prompt: a FLUX model takes distilled guidance (--cfg-scale), no negative prompt"
        )
    if args.negative_prompt is not None and args.cfg_scale in (None, 1.0):
        raise CliError("--negative-prompt: steers classifier-free guidance; set --cfg-scale (e.g. 5)")
    if args.cfg_scale == 1.0 and args.prompt is None:
        args.cfg_scale = None  # the default, given: no guidance for a model without text
    if args.cfg_scale is not None:  # given (1 included: FLUX's distilled guidance 1 is not its default)
        if args.prompt is None:
            raise CliError(
                "--cfg-scale: classifier-free guidance needs --prompt (and a text-conditioned --model)"
            )
        text["guidance_scale"] = args.cfg_scale
    text["dtype"] = getattr(torch, args.dtype)
    if task == "sr":
        text["sr_factor"] = args.sr_factor
        if args.noise_level is not None:
            text["noise_level"] = args.noise_level
        if args.controlnet is not None:
            if not (Path(args.controlnet) / "config.json").is_file():
                raise CliError(f"--controlnet: {args.controlnet} is not a ControlNet folder (no config.json)")
            scale = 1.0 if args.controlnet_scale is None else args.controlnet_scale
            text.update(controlnet=args.controlnet, controlnet_scale=scale)
        elif args.controlnet_scale is not None:
            raise CliError("--controlnet-scale: goes with --controlnet")
    if args.compile:
        text["backend"] = "compile"
    if args.model != "default" and not Path(args.model).exists():
        raise CliError(f"--model: {args.model} does not exist (a local diffusers folder, or 'default')")
    try:
        if args.model == "default":
            return WarpedDiffusionPipeline.from_default(task, device=args.device, **text)
        return WarpedDiffusionPipeline.from_pretrained(args.model, task, device=args.device, **text)
    except ValueError as e:  # the library's prompt errors, in the command line's words
        what = "the default model" if args.model == "default" else f"the model in {args.model}"
        if str(e).startswith("prompt:") and "is text-conditioned" in str(e):
            raise CliError(f"--prompt: {what} is text-conditioned; give --prompt ('' for no text)") from None
        if str(e).startswith("prompt:") and "is not text-conditioned" in str(e):
            raise CliError(f"--prompt: {what} is not text-conditioned; leave --prompt out") from None
        if str(e).startswith("noise_level:"):
            if "no low_res_scheduler" in str(e):
                raise CliError(
                    f"--noise-level: {what} is not an image-conditioned upscaler (a folder with a "
                    "low_res_scheduler/, such as Stable Diffusion's x4 upscaler); leave --noise-level out"
                ) from None
            raise CliError(f"--noise-level: {str(e).removeprefix('noise_level: ')}") from None
        raise


def _noise_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of --noise-option: VALUE read as JSON where it parses, else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as occlusion=true, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def noise_options(
    method: str, pairs: list[tuple[str, object]] | None, lengthscale: float | None = None
) -> dict:
    """The keyword options of noise ``method`` from --noise-option pairs, checked by building the warper
    once: the RFF field settings become its ``rff`` (an RFFConfig; ``lengthscale``, a model's trained one,
    when the pairs give none). Raises CliError on a bad option."""
    import inspect

    from .noise import METHODS, RFFConfig, make_noise_warper

    opts = dict(pairs or [])
    rff = {k: opts.pop(k) for k in RFF_KEYS if k in opts}
    if rff and lengthscale is not None:
        rff.setdefault("lengthscale", lengthscale)
    try:
        if rff:
            known = list(inspect.signature(METHODS[method]).parameters)
            if "rff" not in known:
                raise ValueError(
                    f"{', '.join(rff)}: GP field settings; the {method!r} method has none (its options: {known})"
                )
            opts["rff"] = RFFConfig(**rff)
        make_noise_warper(method, **opts)
    except (TypeError, ValueError) as e:
        raise CliError(f"--noise-option: {e}") from None
    return opts


def _restore(args, task) -> int:
    import itertools
    from pathlib import Path

    from .io import iter_video, load_mask, resize_frames, video_fps, write_video
    from .io.masks import SHAPES, check_mask_source
    from .io.video import VIDEO_SUFFIXES, collect_frames
    from .sampling import GuidanceConfig

    # before any work: the options, the output folder, the mask file, the model; then the video is decoded
    options = noise_options(args.noise, args.noise_option)
    out = Path(args.out)
    if out.suffix.lower() in VIDEO_SUFFIXES and not out.is_dir():
        raise CliError(
            f"--out: a folder (its frames/ and {task}.mp4 are written there), got the video file name {args.out!r}"
        )
    _check_out(out / "frames", "--out", out)
    if not Path(args.input).exists():
        raise CliError(f"input: {args.input} does not exist")
    mask = args.mask if task == "inpaint" else None
    try:  # a shape name, or a mask file or folder that exists
        check_mask_source(mask)
    except FileNotFoundError as e:
        raise CliError(f"--{e}") from None
    try:
        guidance = GuidanceConfig(mode=args.guidance, lam=args.lam)
    except ValueError as e:
        raise CliError(f"--lam: {str(e).removeprefix('lam: ')}") from None
    pipe = _pipeline(args, task)
    options = noise_options(
        args.noise, args.noise_option, pipe.trained_lengthscale
    )  # the model's lengthscale
    if args.steps is not None:  # a step count the model's schedule cannot take: before decoding
        try:
            pipe.denoiser.sampling_schedule(args.steps)
        except ValueError as e:
            raise CliError(f"--steps: {e}") from None
    size = tuple(args.size) if args.size else None
    frames = iter_video(args.input, max_frames=args.max_frames)
    first = next(frames, None)
    if first is None:
        raise CliError(f"input: no frames in {args.input}")
    h0, w0 = first.shape[-2:]
    if mask is not None and mask not in SHAPES:  # a mask file of another size: before the video is decoded
        load_mask(mask, 1, h0, w0)
    fps = args.fps or video_fps(args.input) or 8.0  # now: the input may move during a long job
    # decoded a frame at a time, each resized as it comes: the input never held at its full size
    fit = (lambda f: f) if size is None else (lambda f: resize_frames(f[None], size)[0])  # noqa: E731
    video = collect_frames(itertools.chain([fit(first)], (fit(f) for f in frames)))
    if size is not None and mask is not None and mask not in SHAPES:  # read at the input's size, resized
        mask = load_mask(mask, video.shape[0], h0, w0, size=size)
    res = pipe(
        video, mask, num_inference_steps=args.steps,
        guidance=guidance, noise_method=args.noise, noise_options=options,
        frame_schedule=args.schedule, generator=args.seed, output_dir=out / "frames", progress=not args.quiet,
        flow_preset=args.flow_preset,
        keep_known=getattr(args, "keep_known", False),
    )  # fmt: skip
    path = write_video(res.frames, out / f"{task}.mp4", fps=fps)
    print(f"wrote {path} and {len(res.frames)} frames in {out / 'frames'}")
    return 0


def _warp_noise(args) -> int:
    """Streams the video: one decoded frame and its predecessor in memory, the flows of each pair (DIS)
    and the noise of each frame computed as it arrives; only the latent-size outputs accumulate."""
    from pathlib import Path

    import torch

    from .flow import estimate_flow, flow_to_latent
    from .io import iter_video, resize_frames
    from .io.frames import save_tensors
    from .noise import make_noise_warper

    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"--out: {args.out} is a folder; expected a file path (.safetensors)")
    if out.suffix.lower() != ".safetensors":
        raise CliError(f"--out: expected a .safetensors file path, got {args.out!r}")
    tmp = out.with_name(out.name + ".partial")
    _check_out(out.parent, "--out", out)
    options = noise_options(args.method, args.noise_option)
    f = args.factor
    warper = make_noise_warper(args.method, **options)
    frames = iter_video(args.input, max_frames=args.max_frames)  # bad input: exit 2 by main()
    noise, fwds, backs, prev = [], [], [], None
    for frame in frames:
        frame = resize_frames(frame[None], args.size) if args.size else frame[None]
        if prev is None:
            h, w = frame.shape[-2:]
            if f < 1 or h % f or w % f:
                raise CliError(
                    f"the frames are {h}x{w}; --factor {f} must be >= 1 and divide both (choose --size or --factor)"
                )
            noise.append(warper.reset((args.channels, h // f, w // f), args.seed, args.device))
        else:
            pair = torch.cat([prev, frame])
            fwd, back = (flow_to_latent(fl, f)[0] for fl in estimate_flow(pair, args.flow_preset))
            noise.append(warper.step(back.to(warper.device), fwd.to(warper.device)))
            fwds.append(fwd)
            backs.append(back)
        prev = frame
    latent = noise[0].shape[-2:]
    flows = [torch.stack(fl) if fl else torch.zeros(0, 2, *latent) for fl in (fwds, backs)]
    tensors = {"noise": torch.stack(noise).cpu(), "fwd_flow": flows[0], "back_flow": flows[1]}
    out.parent.mkdir(parents=True, exist_ok=True)  # the early check left no folder behind
    save_tensors({k: v.contiguous() for k, v in tensors.items()}, tmp)
    tmp.replace(out)  # whole or not at all
    print(f"wrote noise {list(tensors['noise'].shape)} ({args.method}) to {out}")
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
            help="mask image/video path (the input's size; white: generated) or a shape: box (the default), "
            "center, left, right, top, bottom, stripe",
        )
        p.add_argument(
            "--keep-known",
            action="store_true",
            help="keep the input's pixels outside the mask (the model regenerates whole frames)",
        )
    if task == "sr":
        p.add_argument("--sr-factor", type=_at_least(1), default=8, help="the upscaling factor (default: 8)")
        p.add_argument(
            "--controlnet",
            help="a ControlNet folder (e.g. an SDXL tile ControlNet) for SR with a text-to-image --model: its "
            "control image is each frame upsampled by --sr-factor",
        )
        p.add_argument("--controlnet-scale", type=_finite, help="the ControlNet's weight (default: 1)")
        p.add_argument(
            "--noise-level",
            type=_at_least(0),
            help="an image-conditioned upscaler's (Stable Diffusion's x4) noise augmentation of the input, "
            "0 to the model's max_noise_level (default: 20)",
        )
    p.add_argument(
        "--out", required=True, help="output folder (frames/, the mp4); an interrupted run resumes"
    )
    p.add_argument("--model", default="default", help="'default' or a local diffusers folder")
    p.add_argument(
        "--prompt", help="text of a text-conditioned model (Stable Diffusion, SDXL, FLUX); '' for none"
    )
    p.add_argument("--negative-prompt", help="the text classifier-free guidance steers away from")
    p.add_argument(
        "--cfg-scale",
        type=_finite,
        help="classifier-free guidance scale (default: 1, none); a FLUX Fill model: its distilled guidance "
        "(default: 30)",
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default="float32",
        help="the model's weights and compute (float16 for SDXL-class models on a GPU; default: float32)",
    )
    p.add_argument("--compile", action="store_true", help="run the UNet through torch.compile")
    p.add_argument("--steps", type=_at_least(1), help="Euler steps (default: 50 with guidance, 25 without)")
    p.add_argument("--guidance", choices=["exact", "jacobian_free", "off"], default="exact")
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--noise", choices=NOISE_METHODS, default="gp", help="noise method")
    p.add_argument(
        "--noise-option", type=_noise_option, action="append", metavar="KEY=VALUE", help=NOISE_OPTION_HELP
    )
    p.add_argument("--schedule", choices=["sequential", "wavefront"], default="sequential")
    p.add_argument("--flow-preset", choices=FLOW_PRESETS, default="medium", help=FLOW_PRESET_HELP)
    p.add_argument("--size", type=_size, help="resize the input to HxW first")
    p.add_argument("--max-frames", type=_at_least(1), help="read at most this many frames")
    p.add_argument("--seed", type=_seed, default=0, help="the noise's seed (default: 0)")
    p.add_argument(
        "--fps",
        type=_fps,
        help="frame rate of the written video (default: the input video's, else 8)",
    )
    p.add_argument("--device", type=_device, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=lambda a: _restore(a, task))


def _fps(text: str) -> float:
    """A frame rate write_video takes: a finite number in [MIN_FPS, MAX_FPS)."""
    from .io.video import MAX_FPS, MIN_FPS

    v = _finite(text)
    if not MIN_FPS <= v < MAX_FPS:
        raise argparse.ArgumentTypeError(
            f"expected frames per second in [{MIN_FPS:g}, {MAX_FPS:g}), got {text!r}"
        )
    return v


def _finite(text: str) -> float:
    """A finite number."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _at_least(least: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if v < least:
            raise argparse.ArgumentTypeError(f"expected an int >= {least}, got {v}")
        return v

    return parse


def _seed(text: str) -> int:
    """A seed: an int of 64 bits (as torch.Generator.manual_seed takes)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
    if not -(2**63) <= v < 2**64:
        raise argparse.ArgumentTypeError(f"expected a seed of 64 bits, got {text}")
    return v


def _device(text: str) -> str:
    """A torch device this process can use (checked before any work)."""
    from .ops._checks import check_device

    try:
        check_device("device", text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("device: ")) from None
    return text


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
    t.add_argument("--device", type=_device)
    t.add_argument("--max-minutes", type=float, help="stop, checkpoint and export after this long")
    t.set_defaults(fn=_train)

    r = sub.add_parser(
        "release-model",
        help="export a training run as the shipped default model (replaces this install's; --dest: elsewhere)",
    )
    r.add_argument("--task", choices=["inpaint", "sr"], required=True)
    r.add_argument("--run", required=True, help="the run's output_dir")
    r.add_argument(
        "--dest",
        help="write the fp16 export, its card.json and pictures to this folder instead; the shipped model stays",
    )
    r.set_defaults(fn=_release)

    _add_restore_args(sub.add_parser("inpaint", help="video inpainting"), "inpaint")
    _add_restore_args(sub.add_parser("sr", help="x8 video super-resolution"), "sr")

    w = sub.add_parser(
        "warp-noise",
        help="export warped noise for a video (safetensors)",
        description="Optical flow (OpenCV DIS) of the video mapped to the latent grid, then one noise "
        "method's noise for every frame. Writes noise [T, C, H/f, W/f] and the flows fwd_flow, back_flow "
        "[T-1, 2, H/f, W/f] (latent pixels) to one safetensors file.",
    )
    w.add_argument("input", help="video file (mp4, gif) or folder of frames")
    w.add_argument("--out", required=True, help="the .safetensors file to write")
    w.add_argument("--method", choices=NOISE_METHODS, default="gp", help="noise method (default: gp)")
    w.add_argument(
        "--noise-option", type=_noise_option, action="append", metavar="KEY=VALUE", help=NOISE_OPTION_HELP
    )
    w.add_argument("--factor", type=_at_least(1), default=8, help="latent downsampling factor f (default: 8)")
    w.add_argument("--flow-preset", choices=FLOW_PRESETS, default="medium", help=FLOW_PRESET_HELP)
    w.add_argument("--channels", type=_at_least(1), default=4, help="noise channels C (default: 4)")
    w.add_argument("--size", type=_size, help="resize the input to HxW first")
    w.add_argument("--max-frames", type=_at_least(1), help="read at most this many frames")
    w.add_argument("--seed", type=_seed, default=0, help="the noise's seed (default: 0)")
    w.add_argument("--device", type=_device, help="device of the noise (default: the CPU)")
    w.set_defaults(fn=_warp_noise)

    e = sub.add_parser("eval", help="the paper's protocols at small scale with the default models")
    e.add_argument(
        "--out", default="eval_out", help="folder of results.json/.md and the plot; a rerun keeps done rows"
    )
    e.add_argument(
        "--frames",
        type=_at_least(2),
        default=16,
        help="frames of the inpainting protocol; SR takes half (at least 2)",
    )
    e.add_argument("--steps", type=_at_least(1), default=20, help="Euler steps per frame")
    e.add_argument("--quick", action="store_true", help="fewer methods")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(fn=_eval)

    d = sub.add_parser("demo", help="bigbuckbunny inpainting demo (restored video, noise video, plot)")
    d.add_argument("--out", default="demo_out", help="folder of the videos, plot and frames")
    d.add_argument("--frames", type=_at_least(2), default=8, help="frames of the clip")
    d.add_argument("--steps", type=_at_least(1), default=20, help="Euler steps per frame")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(fn=_demo)

    b = sub.add_parser("bench", help="run the benchmarks (from a source tree)")
    b.add_argument("--quick", action="store_true")
    b.set_defaults(fn=_bench)

    i = sub.add_parser("info", help="available backends and which one each op uses")
    i.add_argument("--device", choices=["cpu", "cuda"])
    i.set_defaults(fn=_info)
    for sp in sub.choices.values():  # -v also after the subcommand
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    return p


# Optional packages and the extra that installs them.
_EXTRAS = {"skimage": "data", "sklearn": "data", "skvideo": "data", "transformers": "text", "triton": "gpu"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.fn(args)
    except CliError as e:
        print(f"warped-fast {args.command}: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError) as e:  # bad input or paths: the library names the argument
        if args.verbose:
            raise
        print(f"warped-fast {args.command}: {e} (--verbose shows the traceback)", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # a training run that diverged: not bad input, a failed run
        if args.verbose:
            raise
        print(f"warped-fast {args.command}: {e} (--verbose shows the traceback)", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:  # an optional dependency (the extras of pyproject.toml)
        if args.verbose:
            raise
        extra = _EXTRAS.get((e.name or "").split(".")[0])
        hint = f"pip install 'warped_fast[{extra}]'" if extra else f"install the {e.name} package"
        print(f"warped-fast {args.command}: needs {e.name}, which is not installed ({hint})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = " (the same command resumes it)" if args.command in ("inpaint", "sr", "train", "eval") else ""
        print(f"warped-fast {args.command}: interrupted{again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
