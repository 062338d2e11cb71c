"""``WarpedDiffusionPipeline``: video inpainting and x8 super-resolution with an image diffusion model,
temporally consistent through GP noise warping and equivariance self-guidance (the whole method).

input video -> flows (on the degraded frames, pixel resolution) -> latent-grid flows -> warped noise per
frame -> conditioning latents -> video sampler (Algorithm 1, sequential or wavefront) -> decoded frames.
Finished frames are written as they complete when ``output_dir`` is given, and an interrupted run resumes.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from ..flow import estimate_flow, flow_to_latent
from ..flow.dis import Preset
from ..io import FrameStore, iter_masks, iter_video, load_mask, read_video
from ..io.frames import check_writable
from ..io.masks import check_mask_source
from ..models.autoencoder import DiffusersVAE, IdentityAutoencoder
from ..models.default import (
    default_model_dir,
    load_pretrained,
    load_unet_folder,
    trained_lengthscale,
    trained_noise,
    trained_options,
)
from ..models.denoiser import DiffusersDenoiser, config_value, takes_class_labels, text_conditioned
from ..models.layouts import frame_condition
from ..models.noise_augmentation import NoiseAugmentation, augmentation_generator
from ..models.prompts import PromptEmbeddings, encode_prompt
from ..noise import RFFConfig, make_noise_warper
from ..noise.base import check_generator
from ..ops._checks import check_device, check_finite, check_float_dtype, check_int
from ..sampling import FrameInput, GuidanceConfig, VideoSampler, VideoSamplerConfig
from ..sampling.guidance import check_gradients_allowed
from .resume import JobState, generator_key, noise_options_key, object_digest, options_key, tensor_digest

logger = logging.getLogger("warped_fast")
Task = Literal["inpaint", "sr"]


@dataclass
class PipelineOutput:
    """frames: ``[T, 3, H, W]`` in [0, 1] (or PIL images / numpy, per ``output_type``), on the pipeline's
    device (on the CPU for a job with ``output_dir``: a long job's frames need not fit on the device); latents
    ``[T, C, h, w]``; flows on the latent grid (fwd, back) ``[T-1, 2, h, w]``; the noise ``[T, C, h, w]``;
    guidance_losses: ``{frame: [loss at each guided step]}`` (a resumed job's earlier frames' from its
    folder)."""

    frames: object
    latents: torch.Tensor
    latent_flows: tuple[torch.Tensor, torch.Tensor] | None
    noise: torch.Tensor
    guidance_losses: dict = field(default_factory=dict)


class WarpedDiffusionPipeline:
    """Video inverse problems with an image diffusion model (Warped Diffusion, Daras et al. 2024).

    Args:
        denoiser: a :class:`DiffusersDenoiser` (UNet + scheduler; an inpainting or SR conditioning layout:
            "inpaint", "sr", or "sr_image" for an image-conditioned upscaler such as Stable Diffusion's x4).
        autoencoder: :class:`DiffusersVAE` or :class:`IdentityAutoencoder` (pixel-space models).
        task: "inpaint" or "sr"; default from the denoiser's layout.
        sr_factor: super-resolution factor (8).
        prompt: the text conditioning of a text-conditioned UNet
            (:func:`warped_fast.models.encode_prompt`), set on the denoiser for each job's frame size (SDXL's
            size micro-conditioning); None: the denoiser's own.
        noise_augmentation: an image-conditioned upscaler's (layout "sr_image"; required there, refused
            elsewhere): the low-resolution frames are noised to its level, with noise drawn by the job's
            noise method and warped along the flow like the latent noise, and a UNet with class embeddings
            gets the level as its class label (as diffusers' ``StableDiffusionUpscalePipeline``).
        trained_noise: the noise the model was trained with ("gp" or "white"; :meth:`from_pretrained` reads
            it from the folder), for a warning when a job's noise does not fit it; None: not known.
        trained_lengthscale: the GP lengthscale (pixels of the noise grid) of a model trained on GP noise
            (:meth:`from_pretrained` reads it from a trained folder's ``train_config.json``): GP noise of a
            job whose ``noise_options`` give no ``rff`` takes it; None: the paper's 2/pi.
    """

    def __init__(
        self,
        denoiser: DiffusersDenoiser,
        autoencoder=None,
        task: Task | None = None,
        sr_factor: int = 8,
        prompt: PromptEmbeddings | None = None,
        noise_augmentation: NoiseAugmentation | None = None,
        trained_noise: str | None = None,
        trained_lengthscale: float | None = None,
    ):
        self.denoiser = denoiser
        if trained_noise not in (None, "gp", "white"):
            raise ValueError(f"trained_noise: expected 'gp', 'white' or None, got {trained_noise!r}")
        self.trained_noise = trained_noise
        if trained_lengthscale is not None:
            RFFConfig(lengthscale=trained_lengthscale)  # a clear error for a bad value, naming lengthscale
        self.trained_lengthscale = trained_lengthscale
        self._noise_warned = False
        self.autoencoder = autoencoder or IdentityAutoencoder()
        kind = denoiser.layout.kind
        model_task = _LAYOUT_TASKS.get(kind)
        self.task: Task = task or model_task or "sr"
        if self.task not in ("inpaint", "sr"):
            raise ValueError(f"task: expected 'inpaint' or 'sr', got {self.task!r}")
        if model_task is None:  # before any work, not at the first UNet call
            raise ValueError(
                f"denoiser: its UNet's conditioning layout is {kind!r} ({denoiser.layout.cond_channels} "
                f"conditioning channels beside {denoiser.latent_channels} latent ones); the pipeline needs an "
                "inpaint (mask + masked-image latent), fill (FLUX Fill's), sr (low-resolution latent), "
                "sr_image (low-resolution frame) or control (a ControlNet's image) layout"
            )
        if model_task != self.task:
            raise ValueError(
                f"task: {self.task!r}, but the model is conditioned for {kind!r} "
                f"({denoiser.layout.cond_channels} conditioning channels): choose {_A_MODEL[self.task]}"
            )
        self.sr_factor = check_int("sr_factor", sr_factor, 1)
        if kind == "control" and denoiser.control_factor != self.autoencoder.factor:
            raise ValueError(
                f"autoencoder: factor {self.autoencoder.factor}, but the ControlNet takes an image "
                f"{denoiser.control_factor}x the latent's size"
            )
        if denoiser.latent_channels != self.autoencoder.latent_channels:
            raise ValueError(
                f"autoencoder: {self.autoencoder.latent_channels} latent channels, the UNet has {denoiser.latent_channels}"
            )
        if prompt is not None and not isinstance(prompt, PromptEmbeddings):
            raise TypeError(f"prompt: expected PromptEmbeddings or None, got {type(prompt).__name__}")
        if prompt is not None and not denoiser.conditional:
            raise ValueError("prompt: the denoiser's UNet is not text-conditioned")
        if prompt is not None and kind == "fill":
            raise ValueError(
                "prompt: a FluxFillDenoiser holds its own text (warped_fast.models.encode_flux_prompt); leave "
                "prompt out"
            )
        self.prompt = prompt
        if noise_augmentation is not None and not isinstance(noise_augmentation, NoiseAugmentation):
            raise TypeError(
                f"noise_augmentation: expected a NoiseAugmentation or None, got {type(noise_augmentation).__name__}"
            )
        if (kind == "sr_image") != (noise_augmentation is not None):
            raise ValueError(
                "noise_augmentation: an image-conditioned upscaler (layout 'sr_image') needs one: "
                "NoiseAugmentation.from_folder(its pipeline folder) or NoiseAugmentation(noise_level, "
                "alphas_cumprod of its low_res_scheduler)"
                if noise_augmentation is None
                else f"noise_augmentation: for an image-conditioned upscaler; this model's layout is {kind!r}"
            )
        self.noise_augmentation = noise_augmentation
        if noise_augmentation is not None:
            _check_level(denoiser.unet.config, noise_augmentation.noise_level)
        # checked against the UNet now, not at the first job; set again at each job (a shared denoiser)
        self._fit_conditioning(*_native_size(denoiser.unet, self.autoencoder.factor))

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        task: Task | None = None,
        device=None,
        dtype=torch.float32,
        prompt: str | PromptEmbeddings | None = None,
        negative_prompt: str | None = None,
        noise_level: int | None = None,
        sr_factor: int = 8,
        **kw,
    ):
        """From a local folder: a diffusers UNet folder, or a pipeline folder with ``unet/`` (and ``vae/``)
        subfolders. Safetensors only; nothing is downloaded.

        A text-conditioned UNet (Stable Diffusion, SDXL) needs ``prompt``: a str, encoded with the folder's
        text encoders (:func:`warped_fast.models.encode_prompt`; ``''`` for no text), or a
        :class:`~warped_fast.models.PromptEmbeddings` from that function (for its other options);
        ``negative_prompt`` is the text classifier-free guidance (``guidance_scale``) steers away from.
        SDXL's size micro-conditioning follows the frames of each job.

        An image-conditioned upscaler's folder (a ``low_res_scheduler/``: Stable Diffusion's x4 upscaler)
        noises the low-resolution frames to ``noise_level`` (None: diffusers' default, 20; at most the
        folder's ``max_noise_level``), see :class:`~warped_fast.models.NoiseAugmentation`; ``sr_factor`` 4
        is its native scale, 8 (the default) upsamples the frames 2x (bicubic) first.

        ``controlnet`` (in ``kw``): a ControlNet's folder (or a ``ControlNetModel``) for SR with a
        text-to-image model, e.g. SDXL with a tile ControlNet: the control image is each frame upsampled by
        ``sr_factor`` (bicubic); ``controlnet_scale`` weighs its residuals. ``kw``:
        :class:`DiffusersDenoiser`'s arguments (``guidance_scale``, ``backend``, ...).

        A FLUX Fill folder (``transformer/``) loads as :class:`~warped_fast.models.flux.FluxFillDenoiser`:
        ``prompt`` a str; ``kw`` may give ``guidance_scale`` (its distilled guidance, default 30),
        ``prompt_2`` (the T5 encoder's text), ``max_sequence_length`` (512), ``backend``, ``compile_mode``."""
        device, dtype = check_device("device", device), check_float_dtype("dtype", dtype)
        folder = Path(folder).resolve()  # "." inside a unet/ folder: its name, for the files beside it
        flux_root = folder.parent if folder.name == "transformer" else folder
        if (flux_root / "transformer").is_dir() and not (flux_root / "unet").is_dir():
            return cls._from_flux(
                flux_root, task, device, dtype, prompt, negative_prompt, noise_level, sr_factor, kw
            )
        unet_dir = folder / "unet" if (folder / "unet").is_dir() else folder
        # a pipeline folder, or its unet/ folder: the scheduler, VAE and text encoders sit beside unet/
        root = folder.parent if unet_dir.name == "unet" and unet_dir == folder else folder
        if negative_prompt is not None and not isinstance(prompt, str):
            raise ValueError("negative_prompt: needs a text prompt (prompt as a str)")
        if negative_prompt is not None and kw.get("guidance_scale", 1.0) == 1.0:
            raise ValueError(
                "negative_prompt: steers classifier-free guidance, which guidance_scale 1 turns off; set "
                "guidance_scale (e.g. 5) or leave the negative prompt out"
            )
        given = sorted(set(kw) & _TEXT_KWARGS)
        if prompt is not None and given:
            raise ValueError(f"prompt: give prompt or {', '.join(given)}, not both (the prompt sets them)")
        unet, scheduler = load_unet_folder(unet_dir, device, dtype, scheduler_dir=root / "scheduler")
        if isinstance(kw.get("controlnet"), (str, os.PathLike)):  # a ControlNet's folder
            from diffusers import ControlNetModel

            where = Path(kw["controlnet"])
            if not (where / "config.json").is_file():
                raise ValueError(f"controlnet: {where} is not a ControlNet folder (no config.json)")
            net = load_pretrained(ControlNetModel, where, "controlnet", torch_dtype=dtype)
            kw = {**kw, "controlnet": net}
        if kw.get("controlnet") is not None:  # the pipeline's device and dtype, as the UNet
            kw = {**kw, "controlnet": kw["controlnet"].to(device=device, dtype=dtype)}
        ae = IdentityAutoencoder()
        if (root / "vae").is_dir():
            from diffusers import AutoencoderKL

            vae = load_pretrained(AutoencoderKL, root / "vae", "folder", torch_dtype=dtype)
            ae = DiffusersVAE(vae.to(device))
        text = prompt
        conditional = text_conditioned(unet.config)
        if prompt is not None and not conditional:
            raise ValueError(f"prompt: the UNet in {unet_dir} is not text-conditioned (a UNet2DModel)")
        if conditional and prompt is None and "prompt_embeds" not in kw:
            raise ValueError(
                f"prompt: the UNet in {unet_dir} is text-conditioned; give prompt (a str, '' for no text) or "
                "prompt_embeds"
            )
        if isinstance(prompt, str):
            text = encode_prompt(
                root, prompt, negative_prompt, unet_config=unet.config, device=device, dtype=dtype
            )
        elif prompt is not None and not isinstance(prompt, PromptEmbeddings):
            raise TypeError(f"prompt: expected a str or PromptEmbeddings, got {type(prompt).__name__}")
        if text is not None:  # the UNet's own sample size until a job gives the frames'
            kw = {**text.denoiser_kwargs(*_native_size(unet, ae.factor)), **kw}
        augmentation = None
        if noise_level is not None or (root / "low_res_scheduler").is_dir():
            augmentation = NoiseAugmentation.from_folder(root, noise_level)
            if "class_labels" in kw:
                raise ValueError(
                    "class_labels: an upscaler's class label is its noise_level; set noise_level"
                )
            if takes_class_labels(unet.config):
                _check_level(unet.config, augmentation.noise_level)
                kw = {"class_labels": augmentation.class_labels(), **kw}
        elif takes_class_labels(unet.config) and "class_labels" not in kw:
            raise ValueError(
                f"class_labels: the UNet in {unet_dir} has class embeddings; an upscaler's folder has a "
                f"low_res_scheduler/ (its noise level is the label), {root} has none; or give class_labels"
            )
        denoiser = DiffusersDenoiser(unet, scheduler=scheduler, **trained_options(unet_dir, kw))
        return cls(
            denoiser, ae, task, sr_factor, prompt=text, noise_augmentation=augmentation,
            trained_noise=trained_noise(unet_dir), trained_lengthscale=trained_lengthscale(unet_dir),
        )  # fmt: skip

    @classmethod
    def _from_flux(cls, root: Path, task, device, dtype, prompt, negative_prompt, noise_level, sr_factor, kw):
        """:meth:`from_pretrained` of a FLUX Fill folder."""
        from ..models.flux import load_flux_fill

        if prompt is None:
            raise ValueError(
                f"prompt: the FLUX model in {root} is text-conditioned; give prompt (a str, '' for no text)"
            )
        if not isinstance(prompt, str):
            raise TypeError(
                f"prompt: a FLUX model takes its text as a str (embeddings of encode_flux_prompt go to "
                f"FluxFillDenoiser itself), got {type(prompt).__name__}"
            )
        if negative_prompt is not None:
            raise ValueError(
                "negative_prompt: FLUX takes distilled guidance (guidance_scale), not classifier-free "
                "guidance; leave the negative prompt out"
            )
        if noise_level is not None:
            raise ValueError("noise_level: for an image-conditioned upscaler, not a FLUX model")
        options = set(inspect.signature(load_flux_fill).parameters) - {"root", "device", "dtype", "prompt"}
        extra = sorted(set(kw) - options)
        if extra:
            raise ValueError(f"{extra[0]}: not an option of a FLUX model")
        denoiser, ae = load_flux_fill(root, device, dtype, prompt, **kw)
        return cls(denoiser, ae, task, sr_factor, trained_noise="white")

    @classmethod
    def from_default(cls, task: Task = "inpaint", device=None, **kw):
        """The model shipped with the package for ``task`` (pixel space)."""
        return cls.from_pretrained(default_model_dir(task), task, device, **kw)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.unet.parameters()).device

    # -- inputs ----------------------------------------------------------------------------------

    def prepare(self, video, mask=None, max_frames: int | None = None):
        """The frames the flow is estimated on and the conditioning latents.

        Returns:
            flow_frames ``[T, 3, H, W]`` (the degraded input at output resolution) and cond ``[T, Cc, h, w]``.
        """
        return self._prepare(video, mask, max_frames)[:2]

    def _prepare(self, video, mask=None, max_frames: int | None = None):
        """:meth:`prepare`'s (flow_frames, cond), and for inpainting the mask ``[T, 1, H, W]`` (1: generated),
        else None."""
        self._check_mask(mask)
        frames = read_video(video, max_frames=max_frames)
        t, _, h, w = frames.shape
        self._check_frame_size(h, w)
        m = load_mask(mask, t, h, w) if self.task == "inpaint" else None
        return *self._condition(frames, m), m

    def _check_mask(self, mask) -> None:
        if self.task == "inpaint" and mask is None:
            raise ValueError("mask: required for inpainting (a path, an image, a tensor or a shape name)")
        check_mask_source(mask)
        if self.task == "sr" and mask is not None:
            raise ValueError(f"mask: the sr task takes no mask, got {type(mask).__name__}")

    def _check_frame_size(self, h: int, w: int) -> None:
        if self.task == "inpaint":
            self._check_size(h, w, "frame size")
        else:
            self._check_size(h * self.sr_factor, w * self.sr_factor, "output size")

    def _condition(self, frames: torch.Tensor, m: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(flow_frames, cond) of input frames ``[T, 3, H, W]`` (and for inpainting their masks ``[T, 1, H, W]``):
        the degraded frames at output resolution, which the flow is estimated on, and the conditioning
        latents ``[T, Cc, h, w]`` (:func:`warped_fast.models.layouts.frame_condition`)."""
        kind = self.denoiser.layout.kind
        return frame_condition(self.task, frames, m, self.autoencoder, self.sr_factor, kind)

    def _augmenter(self, noise_method: str, noise_options: dict | None, generator, device):
        """Per frame in order, ``(cond [Cc, h, w], back, fwd) -> cond`` (flows on the latent grid, None for
        frame 0): an image-conditioned upscaler's noise augmentation, its noise drawn by the job's noise
        method and warped along the flow from a seed of its own (:func:`augmentation_generator`); other
        models' conditioning unchanged."""
        aug = self.noise_augmentation
        if aug is None:
            return lambda cond, back, fwd: cond
        warper = make_noise_warper(noise_method, **(noise_options or {}))
        gen = augmentation_generator(generator)

        def apply(cond: torch.Tensor, back, fwd) -> torch.Tensor:
            n = warper.reset(tuple(cond.shape), gen, device) if back is None else warper.step(back, fwd)
            return aug.augment(cond, n)

        return apply

    def _noise_options(self, noise_method: str, noise_options: dict | None) -> dict:
        """``noise_options`` completed with the model's trained GP lengthscale: GP noise (``"gp"``, or a
        warper of a GP base) with no ``rff`` of the job's own takes the lengthscale the model saw."""
        opts = dict(noise_options or {})
        gp = noise_method == "gp" or opts.get("base") == "gp"
        ls = self.trained_lengthscale
        if gp and opts.get("rff") is None and ls is not None and ls != RFFConfig().lengthscale:
            opts["rff"] = RFFConfig(lengthscale=ls)
        return opts

    def _check_noise_fits(self, noise_method: str, noise_options: dict | None) -> None:
        """Warn once when GP noise meets a model trained on white noise (the paper fine-tunes on GP noise
        first; white-noise warpers keep a white-noise model's noise white)."""
        gp = noise_method == "gp" or (noise_options or {}).get("base") == "gp"
        if gp and self.trained_noise == "white" and not self._noise_warned:
            self._noise_warned = True
            logger.warning(
                "noise: GP noise (noise_method %r) for a model trained on white noise, which it has not seen; "
                "the method fine-tunes the model on GP noise first (warped-fast train). Off the shelf, a "
                "white-noise warper keeps its noise white: noise_method 'gwtf', 'infres' or 'hiwyn'",
                noise_method,
            )

    def _fit_conditioning(self, h: int, w: int) -> None:
        """The denoiser's conditioning for a job on output frames ``h x w`` pixels: the text (SDXL's time
        ids) and an upscaler's class label (its noise level), which another pipeline sharing the denoiser
        may have changed."""
        aug = self.noise_augmentation
        if aug is not None and takes_class_labels(self.denoiser.unet.config):
            self.denoiser.set_class_labels(aug.class_labels())
        if self.prompt is not None:
            self.denoiser.set_text_conditioning(**self.prompt.denoiser_kwargs(h, w))

    def _check_size(self, h: int, w: int, what: str) -> None:
        """The model's frames: a multiple of the autoencoder's factor times the UNet's downsampling."""
        f = self.autoencoder.factor
        m = f * self.denoiser.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"video: {what} {h}x{w} must be a multiple of {m} (the autoencoder's factor {f} x the "
                f"UNet's downsampling {self.denoiser.size_multiple}); resize or crop the video"
            )

    # -- the main job ----------------------------------------------------------------------------

    def _job_settings(
        self, steps, guidance, noise_method, noise_options, frame_schedule, max_batch, generator, flow_preset,
        output_type, keep_known, callback, progress,
    ):  # fmt: skip
        """The job's arguments checked before any work: (guidance, steps, schedule, sampler config, warper,
        the noise options completed by :meth:`_noise_options`)."""
        if guidance is not None and not isinstance(guidance, GuidanceConfig):
            raise TypeError(
                f"guidance: expected a GuidanceConfig (e.g. GuidanceConfig(mode='exact', lam=1.0)) or None, "
                f"got {type(guidance).__name__}"
            )
        if noise_options is not None and not isinstance(noise_options, dict):
            raise TypeError(
                f"noise_options: expected a dict of the noise method's options or None, got {type(noise_options).__name__}"
            )
        guidance = guidance or GuidanceConfig()
        if steps is None:  # the paper's: 50 with guidance, 25 without (lambda = 0 included)
            steps = 25 if guidance.mode == "off" or guidance.lam == 0 else 50
        check_int("num_inference_steps", steps, 1)
        if output_type not in _OUTPUT_TYPES:
            raise ValueError(f"output_type: expected one of {_OUTPUT_TYPES}, got {output_type!r}")
        check_generator(generator)
        if flow_preset not in get_args(Preset):
            raise ValueError(f"flow_preset: expected one of {get_args(Preset)}, got {flow_preset!r}")
        if callback is not None and not callable(callback):
            raise TypeError(
                f"callback_on_step_end: expected a callable (frame, step, u, D) or None, got {type(callback).__name__}"
            )
        schedule = self.denoiser.sampling_schedule(steps)  # a bad step count: before any work
        sampler_cfg = VideoSamplerConfig(frame_schedule, max_batch, guidance, progress)
        noise_options = self._noise_options(noise_method, noise_options)
        warper = make_noise_warper(noise_method, **noise_options)
        if keep_known and self.task != "inpaint":
            raise ValueError(f"keep_known: for inpainting; the {self.task!r} task has no known pixels")
        self._check_noise_fits(noise_method, noise_options)
        return guidance, steps, schedule, sampler_cfg, warper, noise_options

    @torch.no_grad()
    def __call__(
        self,
        video,
        mask=None,
        *,
        num_inference_steps: int | None = None,
        guidance: GuidanceConfig | None = None,
        noise_method: str = "gp",
        noise_options: dict | None = None,
        frame_schedule: Literal["sequential", "wavefront"] = "sequential",
        max_batch: int = 8,
        flows: tuple[torch.Tensor, torch.Tensor] | None = None,
        flow_preset: str = "medium",
        generator: torch.Generator | int | None = 0,
        output_type: Literal["pt", "np", "pil", "latent"] = "pt",
        output_dir: str | Path | None = None,
        max_frames: int | None = None,
        keep_known: bool = False,
        callback_on_step_end=None,
        progress: bool = True,
    ) -> PipelineOutput:
        """Restore ``video``.

        Args:
            video: path (mp4/gif/folder of frames), list of PIL images, array or tensor ``[T, 3, H, W]``.
            mask: inpainting mask (path, image, video, tensor, or a shape name such as "box").
            num_inference_steps: Euler steps; default as in the paper: 50 with guidance, 25 without
                (mode "off" or lam 0).
            guidance: :class:`GuidanceConfig` (default: exact guidance, lambda 1).
            noise_method: any method of :mod:`warped_fast.noise` ("gp", "fixed", "resample", "nearest",
                "bilinear", "hiwyn", "infres", "gwtf"); ``noise_options`` are passed to it.
            frame_schedule, max_batch: sequential or wavefront (the same result up to the float rounding
                of batched UNet calls, ~1e-6 in float32), batch of frames per call (a batch that runs out
                of GPU memory is retried in halves, the smaller size kept for the job).
            flows: pixel-resolution (fwd, back) flows ``[T-1, 2, H_out, W_out]``; default: OpenCV DIS on
                the degraded frames (``flow_preset``).
            generator: seed or ``torch.Generator`` of the noise (None: seed 0; a job is reproducible, and
                an interrupted one resumable, by default).
            output_type: "pt" ``[T, 3, H, W]``, "np" ``[T, H, W, 3]`` uint8, "pil", or "latent".
            output_dir: write finished frames there as they complete (PNG) and resume an interrupted run.
            keep_known: inpainting: the output frames keep the input's pixels outside the mask (the model
                regenerates whole frames: without it the known pixels come back close, not equal).
                Latents (``output_type="latent"``) are the model's either way.
            callback_on_step_end: ``callback(frame, step, u, D)``.
        """
        if flows is not None:
            flows = _as_flow_pair(flows)
        guidance, num_inference_steps, schedule, sampler_cfg, warper, noise_options = self._job_settings(
            num_inference_steps, guidance, noise_method, noise_options, frame_schedule, max_batch, generator,
            flow_preset, output_type, keep_known, callback_on_step_end, progress,
        )  # fmt: skip
        if output_dir is not None:
            if not isinstance(output_dir, (str, os.PathLike)):
                raise TypeError(
                    f"output_dir: expected a folder path or None, got {type(output_dir).__name__}"
                )
            check_writable(output_dir, keep=False)
        flow_frames, cond, mask_px = self._prepare(video, mask, max_frames)
        if mask_px is not None and not bool(mask_px.any()):
            logger.warning(
                "mask: no pixel of any frame is masked (values above 0.5 are): nothing is generated"
            )
        self._fit_conditioning(*flow_frames.shape[-2:])
        keep = _known_pixels(flow_frames, mask_px) if keep_known else None
        t = cond.shape[0]
        if t > 1 and guidance.differentiates(num_inference_steps):
            check_gradients_allowed()  # before the flow is estimated
        dev = self.device
        cond = cond.to(dev)
        lat_shape = (self.denoiser.latent_channels, *cond.shape[-2:])
        schedule = _sized_schedule(self.denoiser, num_inference_steps, lat_shape[-2:], schedule)
        if t > 1:
            fwd, back = flows if flows is not None else estimate_flow(flow_frames, flow_preset)
            if fwd.shape != (t - 1, 2, *flow_frames.shape[-2:]) or back.shape != fwd.shape:
                raise ValueError(
                    f"flows: expected two [{t - 1}, 2, {flow_frames.shape[-2]}, {flow_frames.shape[-1]}] tensors, "
                    f"got {list(fwd.shape)} and {list(back.shape)}"
                )
            for k, fl in enumerate((fwd, back)):
                check_finite(f"flows[{k}]", fl)
            fwd_l = flow_to_latent(fwd.float(), self.autoencoder.factor).to(dev)
            back_l = flow_to_latent(back.float(), self.autoencoder.factor).to(dev)
        else:
            fwd_l = back_l = None

        noises: list[torch.Tensor] = []

        def inputs(start: int) -> Iterator[FrameInput]:
            n = warper.reset(lat_shape, generator, dev)
            augment = self._augmenter(noise_method, noise_options, generator, dev)
            for j in range(t):
                if j > 0:
                    n = warper.step(back_l[j - 1], fwd_l[j - 1])
                noises.append(n)  # every frame's, also of frames finished before a resume
                fl = None if j == 0 else fwd_l[j - 1]
                bl = None if j == 0 else back_l[j - 1]
                c = augment(cond[j], bl, fl)  # every frame's too: its noise follows the flow
                if j >= start:
                    yield FrameInput(n, c, fl, bl)

        store = job = None
        start, latents, prev_pred = 0, [], None
        guided = guidance.mode != "off"
        if output_dir is not None:
            flow_inputs = tuple(flows) if flows is not None else (flow_frames,)
            params = {"key_format": JOB_KEY_FORMAT, "task": self.task, "sr_factor": self.sr_factor, "steps": num_inference_steps,
                      "noise": noise_method, "noise_options": noise_options_key(noise_method, noise_options), "guidance": options_key(guidance),
                      "frames": t, "schedule": frame_schedule, "max_batch": max_batch,
                      # the device: noise drawn there, and the model's numerics, differ between devices
                      "device": dev.type,
                      "generator": generator_key(generator), "inputs": tensor_digest(cond),
                      "flows": [tensor_digest(*flow_inputs), None if flows is not None else flow_preset],
                      "model": [object_digest(self.denoiser), object_digest(self.autoencoder)],
                      "sigmas": tensor_digest(schedule.sigmas, schedule.timesteps)}  # fmt: skip
            if keep_known:  # the frames written differ, not the latents (absent: as older jobs)
                params["keep_known"] = True
            if self.noise_augmentation is not None:
                params["noise_augmentation"] = self.noise_augmentation.key()
            if getattr(self.denoiser, "class_labels", None) is not None:  # absent: as older jobs
                params["class_labels"] = self.denoiser.class_labels.tolist()
            if getattr(self.denoiser, "controlnet", None) is not None:  # its weights: the model digest
                params["controlnet_scale"] = self.denoiser.controlnet_scale
            # max_batch changes the batching of the UNet calls only (rounding): a resumed job may change it
            store = FrameStore(output_dir, params, t, free=("max_batch",))
            job = JobState(output_dir)
            start, latents, prev_pred = job.resume(t, guided, num_inference_steps, dev)
            if start:
                logger.info("resuming at frame %d of %d from %s", start, t, output_dir)

        decoded: dict[int, torch.Tensor] = {}
        for j in range(start):  # a finished frame's PNG missing or damaged (a crash before it was written)
            if not store.intact(j):
                decoded[j] = _paste(self.autoencoder.decode(latents[j][None]).cpu(), keep, j)[0]
                store.write(j, decoded[j])
        preds: dict[int, list[torch.Tensor]] = {}

        def on_step(j, step, u, d):
            if store is not None and guided:  # kept only to save the sampler state for resuming
                preds.setdefault(j, []).append(_off_device(d.detach()))
            if callback_on_step_end is not None:
                callback_on_step_end(j, step, u, d)

        if frame_schedule == "wavefront":  # up to one frame in flight per step
            self.denoiser.reserve_cache(min(t, num_inference_steps) + 2)
        sampler = VideoSampler(self.denoiser, schedule, sampler_cfg, callback_on_step_end=on_step)
        for j, z in enumerate(sampler.stream(inputs(start), start, prev_pred), start):
            latents.append(z)
            if store is not None:
                if guided and dev.type == "cuda":
                    torch.cuda.current_stream(dev).synchronize()  # the predictions' copies have landed
                # the latent first: a frame implies it (with the frame's losses, complete once it is out)
                job.save(j, z, preds[j] if guided else None, sampler.losses.get(j) if guided else None)
                decoded[j] = _paste(self.autoencoder.decode(z[None]).cpu(), keep, j)[0]
                store.write(j, decoded[j])
            preds.pop(j - 1, None)
        lat = torch.stack(latents) if latents else torch.zeros(0, *lat_shape)
        if store is not None:
            store.finish()
            # The decoded frames as without output_dir (the PNGs hold 8 bits); an earlier run's from
            # their latents. On the CPU: a long job's frames need not fit on the device.
            frames = torch.stack(
                [decoded.pop(j) if j in decoded else _paste(self.autoencoder.decode(lat[j : j + 1]).cpu(), keep, j)[0]
                 for j in range(t)]
            )  # fmt: skip
        else:
            frames = _paste(self.autoencoder.decode(lat), keep)
        return PipelineOutput(
            frames=_convert(frames, lat, output_type),
            latents=lat,
            latent_flows=None if fwd_l is None else (fwd_l, back_l),
            noise=torch.stack(noises) if noises else torch.zeros(0, *lat_shape),
            guidance_losses={**(job.losses if job is not None else {}), **sampler.losses},
        )

    def stream(
        self,
        video,
        mask=None,
        *,
        num_inference_steps: int | None = None,
        guidance: GuidanceConfig | None = None,
        noise_method: str = "gp",
        noise_options: dict | None = None,
        frame_schedule: Literal["sequential", "wavefront"] = "sequential",
        max_batch: int = 8,
        flow_preset: str = "medium",
        flow_fn=None,
        generator: torch.Generator | int | None = 0,
        output_type: Literal["pt", "np", "pil", "latent"] = "pt",
        max_frames: int | None = None,
        keep_known: bool = False,
        callback_on_step_end=None,
        progress: bool = False,
    ) -> Iterator:
        """Restore ``video`` frame by frame, for live video and low-latency services.

        Frames are taken as the sampler needs them (a video file is decoded as it goes; any iterable of
        frames works, a camera's say), each pair's flow is estimated when its second frame arrives, and
        each restored frame is yielded as soon as it is finished: with the sequential schedule right after
        its own sampling, one frame behind the input, in memory that does not grow with the clip. The
        frames are :meth:`__call__`'s for the same arguments, to the float rounding of decoding one frame at
        a time, on the pipeline's device. Nothing is written to disk (for a resumable job, :meth:`__call__`
        with ``output_dir``).

        Args:
            video: a path (decoded as consumed), a tensor or array ``[T, 3, H, W]``, a list of images, or
                any iterable of frames (each a ``[3, H, W]`` tensor in [0, 1], an ``[H, W, 3]`` uint8
                array or a PIL image).
            mask: inpainting: a fixed mask, a mask video, or one mask per frame
                (:func:`warped_fast.io.iter_masks`).
            flow_fn: the flow of each pair, ``flow_fn(pair) -> (fwd, back)`` with ``pair`` the two
                degraded frames ``[2, 3, H, W]`` the flow is estimated on and the flows ``[1, 2, H, W]`` in
                pixels (e.g. RAFT on a GPU: ``lambda p: warped_fast.flow.estimate_flow_raft(p, weights)``);
                default OpenCV DIS with ``flow_preset``.
            The other arguments: as for :meth:`__call__` (the progress bar, off by default, counts frames,
                or ticks with the wavefront schedule).
        Returns:
            An iterator of the frames in order: ``[3, H, W]`` in [0, 1] ("pt"), ``[H, W, 3]`` uint8 ("np"),
            a PIL image ("pil"), or its latent ``[C, h, w]`` ("latent"). The arguments are checked when
            ``stream`` is called, the frames' sizes and masks as they arrive.
        """
        self._check_mask(mask)
        if max_frames is not None:
            check_int("max_frames", max_frames, 1)
        if flow_fn is not None and not callable(flow_fn):
            raise TypeError(
                f"flow_fn: expected a callable (pair [2, 3, H, W]) -> (fwd, back), got {type(flow_fn).__name__}"
            )
        if flow_fn is None:
            flow_fn = functools.partial(estimate_flow, preset=flow_preset)
        guidance, steps, schedule, sampler_cfg, warper, noise_options = self._job_settings(
            num_inference_steps, guidance, noise_method, noise_options, frame_schedule, max_batch, generator,
            flow_preset, output_type, keep_known, callback_on_step_end, progress,
        )  # fmt: skip
        augment = self._augmenter(noise_method, noise_options, generator, self.device)
        guided_exact = guidance.differentiates(steps)
        if guided_exact:
            check_gradients_allowed()  # here, and again before the first flow (the frames may come later)
        sampler = VideoSampler(
            self.denoiser, schedule, sampler_cfg, callback_on_step_end=callback_on_step_end
        )
        return self._stream(
            _frames_of(video, max_frames),
            mask,
            steps,
            guided_exact,
            sampler,
            warper,
            augment,
            flow_fn,
            generator,
            output_type,
            keep_known,
        )

    @torch.no_grad()
    def _stream(
        self, video, mask, steps, guided_exact, sampler, warper, augment, flow_fn, generator, output_type,
        keep_known,
    ) -> Iterator:  # fmt: skip
        """:meth:`stream`'s frames, its arguments checked (``video``: :func:`_frames_of`'s iterator)."""
        dev, factor = self.device, self.autoencoder.factor
        known: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # keep_known: the frames in flight's
        size: list[int] = []  # the output frames' (h, w), for the text conditioning

        def inputs() -> Iterator[FrameInput]:
            masks = first = prev = None
            for j, frame in enumerate(video):
                if j == 0:
                    first = frame.shape
                    self._check_frame_size(*first[-2:])
                    masks = iter_masks(mask, *first[-2:]) if self.task == "inpaint" else None
                elif frame.shape != first:
                    raise ValueError(f"video: frame {j} is {list(frame.shape)}, frame 0 {list(first)}")
                m = None if masks is None else next(masks, None)
                if masks is not None and m is None:
                    raise ValueError(f"mask: masks for {j} frames, but the video has more")
                flow_frame, cond = self._condition(frame[None], m)
                if j == 0:
                    size[:] = flow_frame.shape[-2:]
                    self._fit_conditioning(*size)
                    sampler.set_schedule(
                        _sized_schedule(self.denoiser, steps, cond.shape[-2:], sampler.schedule)
                    )
                if keep_known:
                    known[j] = _known_pixels(flow_frame, m)
                if j == 0:
                    fl = bl = None
                    n = warper.reset((self.denoiser.latent_channels, *cond.shape[-2:]), generator, dev)
                else:
                    if j == 1 and guided_exact:
                        check_gradients_allowed()  # before the first flow is estimated
                    fwd, back = _pair_flow(flow_fn, torch.cat([prev, flow_frame]), j)
                    fl = flow_to_latent(fwd.float(), factor)[0].to(dev)
                    bl = flow_to_latent(back.float(), factor)[0].to(dev)
                    n = warper.step(bl, fl)
                prev = flow_frame
                yield FrameInput(n, augment(cond[0].to(dev), bl, fl), fl, bl)

        if sampler.config.frame_schedule == "wavefront":  # up to one frame in flight per step
            self.denoiser.reserve_cache(steps + 2)
        for j, z in enumerate(sampler.stream(inputs())):
            sampler.pop_losses(j)  # nothing kept per frame: memory stays flat on a live stream
            frame = _paste(self.autoencoder.decode(z[None]), known.pop(j, None))
            yield _convert(frame, z[None], output_type)[0]
            self._fit_conditioning(*size)  # another job on this pipeline may have run meanwhile


_OUTPUT_TYPES = ("pt", "np", "pil", "latent")
# The version of a job's key (its digests): a folder from an earlier one is "another version", not
# "another model".
JOB_KEY_FORMAT = 3


_A_MODEL = {"inpaint": "an inpainting model", "sr": "a super-resolution model"}
# the task each conditioning layout serves
_LAYOUT_TASKS = {"inpaint": "inpaint", "sr": "sr", "sr_image": "sr", "fill": "inpaint", "control": "sr"}
# DiffusersDenoiser's text conditioning, which from_pretrained's prompt sets
_TEXT_KWARGS = {"prompt_embeds", "negative_prompt_embeds", "added_cond_kwargs", "negative_added_cond_kwargs"}


def _sized_schedule(denoiser, steps: int, latent_size, schedule):
    """The schedule for latents of ``latent_size`` where the denoiser's depends on it (its
    ``schedule_depends_on_size``: FLUX's shift), else ``schedule``, the one it gave before."""
    if not getattr(denoiser, "schedule_depends_on_size", False):
        return schedule
    return denoiser.sampling_schedule(steps, tuple(latent_size))


def _check_level(unet_config, level: int) -> None:
    """An upscaler's noise level, its UNet's class label: within its class embeddings (checked here to name
    ``noise_level``, before the denoiser checks the label)."""
    n = config_value(unet_config, "num_class_embeds")
    if n and level >= n:
        raise ValueError(f"noise_level: the UNet has {n} class embeddings (levels 0 to {n - 1}), got {level}")


def _native_size(unet, factor: int) -> tuple[int, int]:
    """The output size in pixels a UNet was trained at: its ``sample_size`` times the autoencoder's factor."""
    size = getattr(unet.config, "sample_size", None) or 128
    h, w = (size, size) if isinstance(size, int) else size
    return h * factor, w * factor


def _frames_of(video, max_frames: int | None) -> Iterator[torch.Tensor]:
    """The frames ``[3, H, W]`` (float32 in [0, 1]) of a video source, one at a time: paths, arrays,
    tensors and lists as :func:`warped_fast.io.iter_video` reads them, any other iterable item by item."""
    if isinstance(video, (str, os.PathLike, torch.Tensor, np.ndarray, list, tuple)):
        return iter_video(video, max_frames=max_frames)  # a missing file raises here
    try:
        items = iter(video)
    except TypeError:
        raise TypeError(
            f"video: expected a path, frames or an iterable of frames, got {type(video).__name__}"
        ) from None
    return (_one_frame(k, item) for k, item in enumerate(itertools.islice(items, max_frames)))


def _pair_flow(flow_fn, pair: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``flow_fn(pair)`` checked: two finite floating-point flows ``[1, 2, H, W]`` (or ``[2, H, W]``)."""
    out = flow_fn(pair)
    shape = (1, 2, *pair.shape[-2:])
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError(
            f"flow_fn: expected a pair (fwd, back) for frames {j - 1}, {j}; got {type(out).__name__}"
        )
    flows = []
    for k, f in enumerate(out):
        if not (
            isinstance(f, torch.Tensor) and f.is_floating_point() and tuple(f.shape) in (shape, shape[1:])
        ):
            got = list(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(
                f"flow_fn: expected floating-point flows {list(shape)} for frames {j - 1}, {j}; got {got}"
            )
        check_finite(f"flow_fn(frames {j - 1}, {j})[{k}]", f)
        flows.append(f.reshape(shape))
    return flows[0], flows[1]


def _one_frame(k: int, item) -> torch.Tensor:
    """Frame ``k`` of a stream (a tensor, an array, an image or an image file) as ``[3, H, W]``, or an
    error naming it."""
    if isinstance(item, (torch.Tensor, np.ndarray)) and item.ndim == 4 and item.shape[0] == 1:
        item = item[0]  # a batch of one frame
    try:
        return read_video([item])[0]
    except (TypeError, ValueError, OSError) as e:
        raise type(e)(f"video: frame {k}: {str(e).removeprefix('video: ')}") from e


def _known_pixels(degraded: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the input's known pixels, zero where generated, ``[T, 3, H, W]``; the mask ``[T, 1, H, W]``) from
    the degraded input (masked pixels grey) and the mask (1: generated)."""
    return degraded - 0.5 * mask, mask


def _paste(frames: torch.Tensor, keep, j: int | None = None) -> torch.Tensor:
    """Decoded ``frames`` ``[B, 3, H, W]`` (frame ``j`` when B = 1, else every frame) with the known
    pixels of ``keep`` (:func:`_known_pixels`) pasted back outside the mask; unchanged when None."""
    if keep is None:
        return frames
    known, mask = (k if j is None else k[j : j + 1] for k in keep)
    known, mask = known.to(frames.device, frames.dtype), mask.to(frames.device, frames.dtype)
    return frames * mask + known


def _off_device(d: torch.Tensor) -> torch.Tensor:
    """A copy of ``d`` in host memory, for the job state: a wavefront keeps every step's prediction of
    each frame in flight (about S^2 / 2 for S steps), too many for the GPU. From CUDA into pinned memory,
    asynchronously: the sampler does not wait for it."""
    if d.device.type != "cuda":
        return d.clone()
    return torch.empty(d.shape, dtype=d.dtype, pin_memory=True).copy_(d, non_blocking=True)


def _as_flow_pair(flows) -> tuple[torch.Tensor, torch.Tensor]:
    """``flows`` as two tensors (numpy arrays converted; tensors stay on their device), else a clear error."""
    from ..flow.io import as_flow

    if not isinstance(flows, (tuple, list)) or len(flows) != 2:
        raise ValueError(
            f"flows: expected a pair (fwd, back) of [T-1, 2, H, W] flows, got {type(flows).__name__}"
        )
    out = []
    for k, f in enumerate(flows):
        if isinstance(f, np.ndarray):
            f = as_flow(f)
        if not isinstance(f, torch.Tensor) or not f.is_floating_point():
            raise TypeError(f"flows[{k}]: expected a floating-point tensor or array, got {type(f).__name__}")
        out.append(f)
    return out[0], out[1]


def _convert(frames: torch.Tensor, latents: torch.Tensor, output_type: str):
    if output_type == "pt":
        return frames
    if output_type == "latent":
        return latents
    a = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return a
    if output_type == "pil":
        from PIL import Image

        return [Image.fromarray(x) for x in a]
    raise ValueError(f"output_type: expected 'pt', 'np', 'pil' or 'latent', got {output_type!r}")
