"""FLUX.1 Fill (Black Forest Labs; diffusers' ``FluxFillPipeline``), a rectified-flow inpainting
transformer, as an x0-predictor ``D(u, sigma, cond)`` for the method's Euler sampler.

Rectified flow: ``x_t = (1 - t) x0 + t eps`` and the model predicts ``v = eps - x0``. With
``D = x_t - t v`` the flow's Euler step ``x_t' = x_t + (t' - t) v = x_t + (t' - t) (x_t - D) / t`` is the
method's step in ``(u, sigma) = (x_t, t)``, and the warped noise ``u = sigma_max * noise`` with
``sigma_max = 1`` is ``x_1 = eps`` exactly. The method's own coordinates are ``u = x_t / (1 - t)``,
``sigma = t / (1 - t)`` (where ``t = 1`` is ``sigma = inf``): its guidance term ``-lam g`` there is
``-lam (1 - t) (1 - t') g`` here with ``g`` the gradient with respect to ``x_t`` (``-lam (1 - t') g`` with the
Jacobian-free gradient, taken with respect to ``D`` in both), which :meth:`FluxFillDenoiser.guidance_weight`
gives the sampler, so ``lam`` means what it means for every other model. The sigmas are diffusers'
(``FlowMatchEulerDiscreteScheduler`` with the resolution-dependent shift ``mu``).

Latents ``[B, C, h, w]`` are packed into 2 x 2 patches for the transformer (``[B, h w / 4, 4 C]``), with the
conditioning beside them: the latent of the masked frame and the pixel mask, ``f x f`` values per latent
cell (the layout "fill": ``C + f^2`` channels at latent resolution). Text: the CLIP encoder's pooled output
and the T5 encoder's token embeddings; FLUX's distilled guidance is the transformer's ``guidance`` input
(``guidance_scale``), not classifier-free guidance.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..ops._checks import as_sigma, check_device, check_float_dtype, check_int, check_real
from ..sampling.schedules import SigmaSchedule
from .denoiser import rows_for_call
from .layouts import ConditioningLayout
from .unet_backends import UNetBackend, UNetRunner

# diffusers' FluxFillPipeline defaults
DEFAULT_GUIDANCE = 30.0
DEFAULT_MAX_SEQUENCE_LENGTH = 512


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, h w / 4, 4 C]``: 2 x 2 patches, channel-major (diffusers' ``_pack_latents``)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents`: ``[B, h w / 4, 4 C]`` -> ``[B, C, h, w]``."""
    b, _, c4 = p.shape
    return p.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


def latent_image_ids(h2: int, w2: int, device, dtype) -> torch.Tensor:
    """``[h2 w2, 3]`` the transformer's position ids of the packed patches (0, row, column)."""
    ids = torch.zeros(h2, w2, 3)
    ids[..., 1] += torch.arange(h2)[:, None]
    ids[..., 2] += torch.arange(w2)[None, :]
    return ids.reshape(h2 * w2, 3).to(device=device, dtype=dtype)


def flow_match_schedule(scheduler, num_steps: int, latent_size: tuple[int, int]) -> SigmaSchedule:
    """The sigmas (``t``, from 1 to 0) a ``FlowMatchEulerDiscreteScheduler`` takes for ``num_steps`` steps
    on latents of ``latent_size``, as ``FluxFillPipeline`` sets them: ``linspace(1, 1 / n, n)`` shifted by
    ``mu`` of the packed sequence length (dynamic shifting) or by the config's ``shift``; timesteps
    ``1000 t``."""
    cfg = scheduler.config
    seq = (latent_size[0] // 2) * (latent_size[1] // 2)
    lo, hi = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
    base, top = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
    mu = seq * (top - base) / (hi - lo) + base - (top - base) / (hi - lo) * lo
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu)
    sig = torch.as_tensor(np.asarray(scheduler.sigmas, dtype=np.float64))
    ts = torch.as_tensor(np.asarray(scheduler.timesteps, dtype=np.float64))
    return SigmaSchedule(sig, ts)


def fill_channels(config) -> tuple[int, int]:
    """``(C, f)`` of a FLUX Fill transformer's config: ``4 C`` packed latent channels out and
    ``4 (2 C + f^2)`` in (the latent, the masked-image latent and an ``f x f`` pixel mask per cell)."""
    get = config.get if hasattr(config, "get") else lambda k: getattr(config, k, None)
    c4_in = get("in_channels") or 0
    c4_out = get("out_channels") or c4_in
    c = c4_out // 4
    f2 = c4_in // 4 - 2 * c
    f = math.isqrt(max(f2, 0))
    if c4_out % 4 or c4_in % 4 or f2 < 1 or f * f != f2:
        raise ValueError(
            f"transformer: {c4_in} inputs and {c4_out} outputs are not a Fill model's (4 C packed latent "
            "channels out; 4 (2 C + f^2) in: latent, masked-image latent and an f x f pixel mask)"
        )
    return c, f


class FluxFillDenoiser(torch.nn.Module):
    """x0-predictor around a diffusers ``FluxTransformer2DModel`` with Fill conditioning.

    Args:
        transformer: the model (FLUX.1 Fill: 64 packed latent channels in and out, 320 conditioning).
        scheduler: its ``FlowMatchEulerDiscreteScheduler`` (the sigmas and their shift).
        prompt_embeds: ``[1 or B, L, D]`` the T5 token embeddings; pooled_prompt_embeds: ``[1 or B, P]``
            the CLIP pooled output (:func:`encode_flux_prompt`).
        guidance_scale: the distilled guidance the transformer takes (FLUX Fill: 30).
        backend, compile_mode: as :class:`~warped_fast.models.DiffusersDenoiser`'s.

    ``unet`` is the transformer (the name the pipeline reads the model's device and config under).
    The transformer's parameters are frozen: guidance needs input gradients only.
    """

    size_multiple = 2  # the 2 x 2 patches
    conditional = True
    schedule_depends_on_size = True  # the shift of its sigmas (sampling_schedule's latent_size)

    def __init__(
        self,
        transformer: torch.nn.Module,
        scheduler,
        prompt_embeds: torch.Tensor,
        pooled_prompt_embeds: torch.Tensor,
        guidance_scale: float = DEFAULT_GUIDANCE,
        backend: UNetBackend = "eager",
        compile_mode: str | None = None,
    ):
        super().__init__()
        c, f = fill_channels(transformer.config)
        if not hasattr(scheduler, "config") or "shift" not in scheduler.config:
            raise ValueError(
                f"scheduler: expected a FlowMatchEulerDiscreteScheduler, got {type(scheduler).__name__}"
            )
        self.unet = transformer.requires_grad_(False)
        self.runner = UNetRunner(transformer, backend, compile_mode)
        self.scheduler = scheduler
        self.latent_channels, self.mask_factor = c, f
        self.layout = ConditioningLayout("fill", c, c + f * f)
        self.guidance_scale = check_real("guidance_scale", guidance_scale)
        self.set_text_conditioning(prompt_embeds, pooled_prompt_embeds)

    def set_text_conditioning(self, prompt_embeds: torch.Tensor, pooled_prompt_embeds: torch.Tensor) -> None:
        """Replace the text conditioning (the constructor's arguments, checked the same way)."""
        cfg = self.unet.config
        for name, e, dims, width in (
            ("prompt_embeds", prompt_embeds, 3, cfg.joint_attention_dim),
            ("pooled_prompt_embeds", pooled_prompt_embeds, 2, cfg.pooled_projection_dim),
        ):
            if not isinstance(e, torch.Tensor) or e.dim() != dims or e.shape[-1] != width:
                got = list(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
                want = "[B, L, " if dims == 3 else "[B, "
                raise ValueError(f"{name}: expected {want}{width}] for this transformer, got {got}")
        if pooled_prompt_embeds.shape[0] != prompt_embeds.shape[0]:
            raise ValueError(
                f"pooled_prompt_embeds: {pooled_prompt_embeds.shape[0]} rows, prompt_embeds {prompt_embeds.shape[0]}"
            )
        self.prompt_embeds, self.pooled_prompt_embeds = prompt_embeds, pooled_prompt_embeds

    def sampling_schedule(self, num_steps: int, latent_size: tuple[int, int] | None = None) -> SigmaSchedule:
        """The scheduler's ``num_steps`` sigmas for latents of ``latent_size`` (None: the model's native
        128 x 128, FLUX's 1024 x 1024 pixels), see :func:`flow_match_schedule`."""
        check_int("num_inference_steps", num_steps, 1)
        return flow_match_schedule(self.scheduler, num_steps, latent_size or (128, 128))

    def guidance_weight(self, sigma: torch.Tensor, sigma_next: torch.Tensor, mode: str) -> torch.Tensor:
        """``[B]`` the factor of the guidance gradient at a step ``t -> t'`` (``sigma``, ``sigma_next``
        ``[B]``), the method's guidance in its coordinates ``u = x_t / (1 - t)``: ``(1 - t) (1 - t')`` for the
        gradient with respect to ``x_t`` ("exact"), ``1 - t'`` for the gradient with respect to ``D``
        ("jacobian_free")."""
        w = 1 - sigma_next
        return w * (1 - sigma) if mode == "exact" else w

    def clear_cache(self) -> None:
        """Nothing is cached per frame (the interface of :class:`~warped_fast.models.DiffusersDenoiser`)."""

    def reserve_cache(self, frames: int) -> None:
        """Nothing is cached per frame (the interface of :class:`~warped_fast.models.DiffusersDenoiser`)."""

    def forward(self, u: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """D(u, sigma): ``u`` ``[B, C, h, w]`` (h, w even), ``sigma`` ``[B]`` (or one float), ``cond``
        ``[B, C + f^2, h, w]`` -> ``[B, C, h, w]``."""
        b, _, h, w = u.shape
        if h % 2 or w % 2:
            raise ValueError(f"u: the latent's height and width must be even (2 x 2 patches), got {h}x{w}")
        dtype = (
            sigma.dtype if isinstance(sigma, torch.Tensor) and sigma.is_floating_point() else torch.float32
        )
        sigma = as_sigma("sigma", sigma, b, u.device, dtype)
        self.layout.check(cond, b, h, w)
        p_dtype = next(self.unet.parameters()).dtype
        x = pack_latents(torch.cat([u, cond.to(u.dtype)], 1)).to(p_dtype)
        # the scheduler's timestep 1000 t (float32) in the model's dtype, divided by 1000 there, as
        # FluxFillPipeline does
        t = (sigma.detach().to(torch.float32) * 1000).to(p_dtype) / 1000
        guidance = None
        if self.unet.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance_scale, device=u.device, dtype=torch.float32)
        ehs = rows_for_call(self.prompt_embeds, b, "prompt_embeds").to(u.device, p_dtype)
        out = self.runner(
            hidden_states=x,
            timestep=t,
            guidance=guidance,
            pooled_projections=rows_for_call(self.pooled_prompt_embeds, b, "pooled_prompt_embeds").to(
                u.device, p_dtype
            ),
            encoder_hidden_states=ehs,
            txt_ids=torch.zeros(ehs.shape[1], 3, device=u.device, dtype=p_dtype),
            img_ids=latent_image_ids(h // 2, w // 2, u.device, p_dtype),
            return_dict=False,
        )[0]
        v = unpack_latents(out.to(u.dtype), h, w)
        return u - sigma.to(u.dtype).view(-1, 1, 1, 1) * v


def encode_flux_prompt(
    folder: str | Path,
    prompt: str,
    prompt_2: str | None = None,
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLUX's text conditioning from a local pipeline folder, as ``FluxFillPipeline.encode_prompt``:
    ``(prompt_embeds [1, L, D], pooled_prompt_embeds [1, P])``, the T5 encoder's (``text_encoder_2/``,
    ``tokenizer_2/``; ``prompt_2``, None or '' for ``prompt``, padded to ``max_sequence_length``) and the CLIP
    encoder's pooled output (``text_encoder/``, ``tokenizer/``)."""
    from .prompts import _load_text_pair, _tokens

    device, dtype = check_device("device", device), check_float_dtype("dtype", dtype)
    for name, text in (("prompt", prompt), ("prompt_2", prompt_2)):
        if text is not None and not isinstance(text, str):
            raise TypeError(f"{name}: expected a str, got {type(text).__name__}")
    if prompt is None:
        raise ValueError("prompt: required (a str; '' for no text)")
    ok = isinstance(max_sequence_length, int) and not isinstance(max_sequence_length, bool)
    if not ok or not 1 <= max_sequence_length <= DEFAULT_MAX_SEQUENCE_LENGTH:
        raise ValueError(f"max_sequence_length: expected an int in [1, 512], got {max_sequence_length!r}")
    folder = Path(folder)
    clip = _load_text_pair(folder, "", device, dtype)
    t5 = _load_text_pair(folder, "_2", device, dtype, encoders=("T5EncoderModel",))
    if clip is None or t5 is None:
        raise FileNotFoundError(
            f"folder: {folder} needs text_encoder/ + tokenizer/ (CLIP) and text_encoder_2/ + tokenizer_2/ (T5)"
        )
    with torch.no_grad():
        ids, _ = _tokens(clip[0], prompt, clip[0].model_max_length, clip[1])
        pooled = clip[1](ids, output_hidden_states=False).pooler_output
        ids, _ = _tokens(t5[0], prompt_2 or prompt, max_sequence_length, t5[1])  # diffusers': '' is prompt
        embeds = t5[1](ids, output_hidden_states=False)[0]
    return embeds.to(device, dtype), pooled.to(device, dtype)


def load_flux_fill(
    root: Path,
    device,
    dtype,
    prompt: str,
    prompt_2: str | None = None,
    max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
    guidance_scale: float = DEFAULT_GUIDANCE,
    backend: UNetBackend = "eager",
    compile_mode: str | None = None,
):
    """``(FluxFillDenoiser, DiffusersVAE)`` of a local FLUX Fill pipeline folder (``transformer/``,
    ``scheduler/``, ``vae/``, the two text encoders and tokenizers). Safetensors only; nothing downloaded."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from ..io.frames import read_json
    from .autoencoder import DiffusersVAE
    from .default import load_pretrained

    for sub in ("transformer", "scheduler", "vae"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"folder: {root} has transformer/ but no {sub}/ (a FLUX pipeline folder)")
    cfg = read_json(root / "transformer" / "config.json", "folder")
    kind = cfg.get("_class_name")
    if kind != "FluxTransformer2DModel":
        raise ValueError(
            f"folder: {root / 'transformer'} holds a {kind}; of the transformer models, FLUX Fill "
            "(FluxTransformer2DModel) is taken (SD3 and others have no inpainting or SR conditioning)"
        )
    fill_channels(cfg)  # before any weights are loaded
    transformer = load_pretrained(FluxTransformer2DModel, root / "transformer", "folder", torch_dtype=dtype)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(root / "scheduler", local_files_only=True)
    vae = load_pretrained(AutoencoderKL, root / "vae", "folder", torch_dtype=dtype)
    ae = DiffusersVAE(vae.to(device))
    embeds, pooled = encode_flux_prompt(root, prompt, prompt_2, max_sequence_length, device, dtype)
    den = FluxFillDenoiser(
        transformer.to(device), scheduler, embeds, pooled, guidance_scale, backend, compile_mode
    )
    if den.mask_factor != ae.factor:
        raise ValueError(
            f"folder: the transformer takes a {den.mask_factor} x {den.mask_factor} pixel mask per latent cell, "
            f"the VAE's factor is {ae.factor}"
        )
    return den, ae
