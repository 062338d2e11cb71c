"""Denoiser adapters: a diffusers UNet (epsilon, v or sample prediction) as an x0-predictor
``D(u, sigma, cond)`` for the EDM Euler sampler (method section 4).

Input scaling ``c_in = 1 / sqrt(sigma^2 + 1)`` and the timestep of each sigma follow diffusers'
``EulerDiscreteScheduler`` (``0.25 log sigma`` for its continuous-time v-prediction models);
``D = u - sigma * eps`` (epsilon), ``D = -sigma / sqrt(sigma^2 + 1) * v + u / (sigma^2 + 1)``
(v_prediction), ``D = out`` (sample). EDM models (a scheduler with ``sigma_data``, e.g.
``EDMEulerScheduler``) take Karras et al.'s preconditioning instead: ``c_in = 1 / sqrt(sigma^2 +
sigma_data^2)``, timestep ``0.25 log sigma``, ``D = c_skip u + c_out F``. Classifier-free guidance runs
the uncond and cond halves in one batch and combines them before the x0 conversion (equivalent, being
affine).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..ops._checks import as_sigma, check_real
from ..sampling.schedules import (
    SigmaSchedule,
    diffusers_schedule,
    log_training_sigmas,
    timesteps_from_log_sigmas,
)
from .cond_cache import ConditioningCache
from .hole_fill import check_hole_fill
from .layouts import ConditioningLayout
from .residual import residual_frame
from .unet_backends import UNetBackend, UNetRunner

PredictionType = Literal["epsilon", "v_prediction", "sample"]


def x0_from_model_output(
    out: torch.Tensor,
    u: torch.Tensor,
    sigma: torch.Tensor,
    kind: PredictionType,
    sigma_data: float | None = None,
) -> torch.Tensor:
    """x0 prediction from a model output, as diffusers' EulerDiscreteScheduler computes it, or with
    ``sigma_data`` as its EDM schedulers do (Karras et al. 2022: ``c_skip u + c_out out``).

    Args:
        out, u: ``[B, C, H, W]``; sigma: ``[B]``.
    """
    if kind == "sample":
        return out
    # the scalings in float32 at least: sigma^2 overflows float16 past 256 (a half-precision u)
    wide = torch.promote_types(u.dtype, torch.float32)
    s = sigma.to(wide).view(-1, *([1] * (u.dim() - 1)))
    if sigma_data is not None:
        sd2 = sigma_data**2
        c_out = s * sigma_data / (s**2 + sd2) ** 0.5
        if kind not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type: an EDM model predicts epsilon or v_prediction, got {kind!r}")
        d = u * (sd2 / (s**2 + sd2)) + (c_out if kind == "epsilon" else -c_out) * out
    elif kind == "epsilon":
        d = u - s * out
    elif kind == "v_prediction":
        d = out * (-s / (s**2 + 1) ** 0.5) + u / (s**2 + 1)
    else:
        raise ValueError(f"prediction_type: expected epsilon, v_prediction or sample, got {kind!r}")
    return d.to(u.dtype)


def rescale_guided(guided: torch.Tensor, cond: torch.Tensor, fraction: float) -> torch.Tensor:
    """``guided`` rescaled to ``cond``'s standard deviation per item, mixed in by ``fraction`` (Lin et al.,
    "Common Diffusion Noise Schedules and Sample Steps are Flawed", 2023, section 3.4; as diffusers'
    ``rescale_noise_cfg``). ``guided``, ``cond``: ``[B, C, H, W]`` model outputs."""
    dims = list(range(1, guided.dim()))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return fraction * rescaled + (1 - fraction) * guided


def config_value(cfg, key: str):
    """A model config's ``key`` (a diffusers config, or a plain dict read from ``config.json``), or None."""
    return cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key, None)


def text_conditioned(cfg) -> bool:
    """Whether a UNet's config is a text-conditioned one (a cross-attention width: UNet2DConditionModel)."""
    return config_value(cfg, "cross_attention_dim") is not None


def embedding_width(cfg) -> int | None:
    """The width of the token embeddings a UNet takes: ``encoder_hid_dim`` where it projects them
    (text_proj), else ``cross_attention_dim``; None where its config does not say one."""
    dim = config_value(cfg, "encoder_hid_dim") or config_value(cfg, "cross_attention_dim")
    return dim if isinstance(dim, int) else None


def rows_for_call(x: torch.Tensor | None, n: int, name: str) -> torch.Tensor | None:
    """A conditioning tensor ``[1 or n, ...]`` as ``[n, ...]`` for a call with ``n`` items (one row shared
    by every item and frame, or one per item); ``name`` names it in the error."""
    if x is None:
        return None
    if x.shape[0] not in (1, n):
        raise ValueError(
            f"{name}: {x.shape[0]} rows do not fit a call with {n} items: give one row (shared by every "
            "item and frame) or one per item"
        )
    return x.expand(n, *x.shape[1:]) if x.shape[0] == 1 else x


def takes_class_labels(cfg) -> bool:
    """Whether a UNet's config has class embeddings, whose labels every call needs (the Stable Diffusion
    x4 upscaler's noise level)."""
    return bool(config_value(cfg, "num_class_embeds")) or config_value(cfg, "class_embed_type") is not None


def continuous_v_timesteps(scheduler_config) -> bool:
    """Whether a diffusers scheduler is a continuous-time v-prediction one, whose model takes the timestep
    ``0.25 log sigma``."""
    cfg = scheduler_config or {}
    return cfg.get("timestep_type") == "continuous" and cfg.get("prediction_type") == "v_prediction"


class DiffusersDenoiser(torch.nn.Module):
    """x0-predictor around a diffusers ``UNet2DConditionModel`` or ``UNet2DModel``.

    Args:
        unet: the model.
        scheduler: a diffusers scheduler (gives ``alphas_cumprod`` and ``prediction_type``), or
        alphas_cumprod: ``[T_train]`` cumulative alphas of the model's training schedule.
        prediction_type: overrides the scheduler's.
        layout: conditioning layout; default guessed from ``unet.config.in_channels``.
        prompt_embeds: ``[1 or B, L, D]`` text conditioning (UNet2DConditionModel).
        negative_prompt_embeds: same shape; enables classifier-free guidance with ``guidance_scale``.
        added_cond_kwargs / negative_added_cond_kwargs: SDXL's ``text_embeds`` and ``time_ids``. A
            key missing from the negative ones takes diffusers' SDXL defaults: the positive ``time_ids``
            (same original and target sizes) and zero ``text_embeds``.
        guidance_scale: CFG scale (1 = no CFG).
        guidance_rescale: with CFG, rescale the guided output toward the conditional one's standard
            deviation by this fraction (Lin et al., 2023, section 3.4; diffusers' ``guidance_rescale``).
        backend: "eager" or "compile" (``compile_mode`` e.g. "reduce-overhead" for CUDA graphs).
        schedule: the sampling schedule, so its sigmas map to the scheduler's exact timesteps.
        residual: the UNet models ``residual_scale * (x - base(cond))``
            (:mod:`warped_fast.models.residual`); needs an inpaint or sr layout. With scale ``k``:
            ``D(u, sigma) = base + D_k(k (u - base), k sigma) / k``.
        residual_normalize: contrast-normalized residual model (``residual_frame``): per item the gain is
            ``k * CONTRAST_REF / c`` and the network sees the conditioning in units of ``c``.
        residual_fill: the hole fill of an inpainting model's base ("push_pull" or "harmonic",
            :mod:`warped_fast.models.hole_fill`).
        controlnet: a diffusers ``ControlNetModel`` (e.g. an SDXL tile ControlNet for SR) whose residuals the
            UNet adds; its control image, ``[B, 3, f h, f w]`` in [0, 1], is the conditioning, pixel-unshuffled
            to the latent grid (the "control" layout, ``3 f^2`` channels; ``f`` the ControlNet's
            downsampling, 8). controlnet_scale: its residuals' weight (diffusers'
            ``controlnet_conditioning_scale``).
        class_labels: ``[1 or B]`` int64 class labels of a UNet with class embeddings (``num_class_embeds``
            or ``class_embed_type``): the Stable Diffusion x4 upscaler's noise level
            (:class:`~warped_fast.models.NoiseAugmentation`); required by such a UNet, refused by others.

    What a residual model reads off the conditioning (the base, the gain) is memoized per item
    (:class:`~warped_fast.models.cond_cache.ConditioningCache`): a sampler passes the same frames'
    conditioning at every step, and the harmonic fill is an iterative solve.

    The UNet's parameters are frozen (``requires_grad_(False)``): guidance needs input gradients only.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler=None,
        alphas_cumprod: torch.Tensor | None = None,
        prediction_type: PredictionType | None = None,
        layout: ConditioningLayout | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        negative_added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        backend: UNetBackend = "eager",
        compile_mode: str | None = None,
        schedule: SigmaSchedule | None = None,
        residual: bool = False,
        residual_scale: float = 1.0,
        residual_normalize: bool = False,
        residual_fill: str = "push_pull",
        class_labels: torch.Tensor | None = None,
        controlnet: torch.nn.Module | None = None,
        controlnet_scale: float = 1.0,
    ):
        super().__init__()
        if scheduler is None and alphas_cumprod is None:
            raise ValueError(
                "scheduler / alphas_cumprod: one of them is required (the timestep of each sigma)"
            )
        sch_cfg = getattr(scheduler, "config", {})
        # An EDM scheduler (no alphas_cumprod, a sigma_data): Karras et al.'s preconditioning
        self.sigma_data = None
        if alphas_cumprod is None and not hasattr(scheduler, "alphas_cumprod"):
            if sch_cfg.get("sigma_data") is None:
                raise ValueError(
                    f"scheduler: {type(scheduler).__name__} has neither alphas_cumprod (DDPM family, e.g. "
                    "EulerDiscreteScheduler) nor sigma_data (EDM, e.g. EDMEulerScheduler): flow-matching "
                    "models are not supported"
                )
            self.sigma_data = check_real("scheduler.config.sigma_data", sch_cfg["sigma_data"], 0)
            if self.sigma_data == 0:
                raise ValueError("scheduler.config.sigma_data: expected > 0, got 0")
        # Sampling never needs parameter gradients; freezing them also keeps the compiled backward of
        # the input gradient correct (with parameter grads on, torch 2.13's compiled CPU backward of a
        # diffusers UNet returned wrong input gradients).
        self.unet = unet.requires_grad_(False)
        self.runner = UNetRunner(unet, backend, compile_mode)
        self.scheduler = scheduler
        ac = alphas_cumprod if alphas_cumprod is not None else getattr(scheduler, "alphas_cumprod", None)
        # float64, a plain attribute, not a buffer, so casting the module (.half()) leaves the timesteps
        # exact; copied to the sigmas' device on first use (_tables_on). None for an EDM model.
        self.alphas_cumprod = None if ac is None else torch.as_tensor(ac).detach().to("cpu", torch.float64)
        kind = prediction_type or (scheduler.config.prediction_type if scheduler is not None else "epsilon")
        kind = "sample" if kind == "original_sample" else kind  # diffusers' Euler takes both names
        kinds = (
            ("epsilon", "v_prediction")
            if self.sigma_data is not None
            else ("epsilon", "v_prediction", "sample")
        )
        if kind not in kinds:
            raise ValueError(f"prediction_type: expected one of {kinds} for this scheduler, got {kind!r}")
        self.prediction_type: PredictionType = kind
        # Timestep 0.25 log sigma: EDM models, and diffusers' continuous-time v-prediction ones
        self.log_sigma_timesteps = self.sigma_data is not None or continuous_v_timesteps(sch_cfg)
        cfg = unet.config
        self.latent_channels = _latent_channels(cfg, layout, sch_cfg)
        # a ControlNet: its control image is the conditioning, at pixel resolution, unshuffled to latents.
        # Private: the module's weights are in the denoiser's digest, a job key names the scale where set.
        self._controlnet = None if controlnet is None else controlnet.requires_grad_(False)
        self._controlnet_scale = check_real("controlnet_scale", controlnet_scale)
        if controlnet is not None:
            if cfg.in_channels != self.latent_channels:
                raise ValueError(
                    f"controlnet: goes with a text-to-image UNet ({self.latent_channels} input channels); this "
                    f"one takes {cfg.in_channels} (an inpainting or SR model, conditioned itself)"
                )
            if getattr(controlnet.config, "global_pool_conditions", False):
                raise ValueError(
                    "controlnet: global_pool_conditions (a shuffle-style ControlNet, which diffusers runs in "
                    "guess mode) is not supported"
                )
            f = self.control_factor
            layout = layout or ConditioningLayout("control", self.latent_channels, 3 * f * f)
            if layout.kind != "control" or layout.cond_channels != 3 * f * f:
                raise ValueError(
                    f"layout: a ControlNet takes the control layout with {3 * f * f} channels (an RGB image "
                    f"{f}x the latent's size, unshuffled), got {layout}"
                )
        elif layout is not None and layout.kind == "control":
            raise ValueError("layout: the control layout is a ControlNet's; give controlnet")
        self.layout = layout or ConditioningLayout.for_unet(
            cfg.in_channels, self.latent_channels, takes_class_labels(cfg)
        )
        if self.layout.in_channels != cfg.in_channels:
            raise ValueError(
                f"layout: {self.layout.in_channels} input channels, the UNet takes {cfg.in_channels}"
            )
        if residual and self.layout.kind not in ("inpaint", "sr"):
            raise ValueError(f"residual: needs an inpaint or sr layout, got {self.layout.kind!r}")
        if not residual_scale > 0:
            raise ValueError(f"residual_scale: expected > 0, got {residual_scale}")
        if residual_normalize and not residual:
            raise ValueError("residual_normalize: needs residual=True")
        self.residual, self.residual_scale = bool(residual), float(residual_scale)
        self.residual_normalize = bool(residual_normalize)
        check_hole_fill("residual_fill", residual_fill)
        self.residual_fill = residual_fill
        self._frame_cache = ConditioningCache(self._residual_frame)
        self.conditional = text_conditioned(cfg)
        # Frame sizes the UNet takes: a UNet2DModel halves them in every down block but the last; a
        # UNet2DConditionModel passes its skips' sizes to its upsamplers and takes any size.
        downsamplers = max(len(getattr(cfg, "block_out_channels", ())) - 1, 0)
        self.size_multiple = 1 if self.conditional else 2**downsamplers
        self.guidance_scale = check_real("guidance_scale", guidance_scale)
        self.guidance_rescale = check_real("guidance_rescale", guidance_rescale, 0)
        if self.guidance_rescale > 0 and self.guidance_scale == 1.0:
            raise ValueError(
                f"guidance_rescale: rescales classifier-free guidance, which guidance_scale 1 turns off; got "
                f"guidance_rescale {guidance_rescale}"
            )
        if self.guidance_scale != 1.0 and not self.conditional:
            raise ValueError(
                f"guidance_scale: classifier-free guidance needs a text-conditioned UNet "
                f"(UNet2DConditionModel); this one is unconditional, got {guidance_scale}"
            )
        self.set_text_conditioning(
            prompt_embeds, negative_prompt_embeds, added_cond_kwargs, negative_added_cond_kwargs
        )
        self.set_class_labels(class_labels)
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None
        self._device_tables: dict = {}  # device -> (their sources, log training sigmas, _table there)
        if schedule is not None:
            self.set_schedule(schedule)

    def set_text_conditioning(
        self,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        negative_added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Replace the text conditioning (the constructor's arguments of the same names, checked the same
        way), e.g. SDXL's ``time_ids`` for another frame size
        (:meth:`warped_fast.models.PromptEmbeddings.denoiser_kwargs`)."""
        cfg = self.unet.config
        if self.conditional and prompt_embeds is None:
            raise ValueError("prompt_embeds: required by a UNet2DConditionModel")
        if getattr(cfg, "addition_embed_type", None) == "text_time":  # SDXL's added conditions
            missing = {"text_embeds", "time_ids"} - set(added_cond_kwargs or {})
            if missing:
                raise ValueError(
                    f"added_cond_kwargs: an SDXL UNet (addition_embed_type 'text_time') needs "
                    f"{sorted(missing)}; got {sorted(added_cond_kwargs or {})}"
                )
        extra = set(negative_added_cond_kwargs or {}) - set(added_cond_kwargs or {})
        if extra:
            raise ValueError(
                f"negative_added_cond_kwargs: {sorted(extra)} have no counterpart in added_cond_kwargs"
            )
        if self.cfg and self.conditional and negative_prompt_embeds is None:
            raise ValueError(
                "negative_prompt_embeds: required for classifier-free guidance (guidance_scale != 1)"
            )
        _check_text_conditions(
            cfg, prompt_embeds, negative_prompt_embeds, added_cond_kwargs, negative_added_cond_kwargs
        )
        self.prompt_embeds, self.negative_prompt_embeds = prompt_embeds, negative_prompt_embeds
        self.added_cond_kwargs, self.negative_added_cond_kwargs = (
            added_cond_kwargs,
            negative_added_cond_kwargs,
        )

    def set_class_labels(self, class_labels: torch.Tensor | None) -> None:
        """Replace the class labels (the constructor's ``class_labels``, checked the same way)."""
        if takes_class_labels(self.unet.config) != (class_labels is not None):
            raise ValueError(
                "class_labels: required by a UNet with class embeddings (the x4 upscaler's noise level)"
                if class_labels is None
                else "class_labels: this UNet has no class embeddings (num_class_embeds / class_embed_type)"
            )
        if class_labels is not None:
            ok = (
                isinstance(class_labels, torch.Tensor)
                and class_labels.dim() == 1
                and class_labels.numel() > 0
            )
            if not ok:
                got = (
                    list(class_labels.shape)
                    if isinstance(class_labels, torch.Tensor)
                    else type(class_labels).__name__
                )
                raise ValueError(f"class_labels: expected a tensor [1 or B] (one label per item), got {got}")
            n = config_value(self.unet.config, "num_class_embeds")
            if n and config_value(self.unet.config, "class_embed_type") is None:  # an embedding table
                if class_labels.dtype.is_floating_point or class_labels.dtype == torch.bool:
                    raise ValueError(
                        f"class_labels: indices of the UNet's {n} class embeddings, an integer tensor; got "
                        f"{class_labels.dtype}"
                    )
                if int(class_labels.min()) < 0 or int(class_labels.max()) >= n:
                    raise ValueError(
                        f"class_labels: the UNet has {n} class embeddings (0 to {n - 1}), got {class_labels.tolist()}"
                    )
        # private: a job key names the labels where they are set (absent: as before class labels existed)
        self._class_labels = class_labels

    @property
    def controlnet(self) -> torch.nn.Module | None:
        """The ControlNet, or None."""
        return self._controlnet

    @property
    def controlnet_scale(self) -> float:
        return self._controlnet_scale

    @property
    def control_factor(self) -> int | None:
        """The control image's size / the latent's (the ControlNet's downsampling), or None."""
        cfg = None if self._controlnet is None else self._controlnet.config
        return None if cfg is None else 2 ** (len(cfg.conditioning_embedding_out_channels) - 1)

    @property
    def class_labels(self) -> torch.Tensor | None:
        """``[1 or B]`` the class labels every UNet call gets, or None (:meth:`set_class_labels`)."""
        return self._class_labels

    @property
    def cfg(self) -> bool:
        return self.guidance_scale != 1.0

    def clear_cache(self) -> None:
        """Forget the cached per-frame conditioning results (the residual model's fills), e.g. to time a
        run from scratch."""
        self._frame_cache.clear()

    def reserve_cache(self, frames: int) -> None:
        """Keep the per-frame conditioning results of at least ``frames`` frames (a wavefront's frames in
        flight): fewer would recompute each frame's (a residual model's hole fill) at every step."""
        self._frame_cache.capacity = max(self._frame_cache.capacity, frames)

    def sampling_schedule(self, num_steps: int) -> SigmaSchedule:
        """The scheduler's ``num_steps`` sigmas and timesteps, in the units of ``u``.

        A residual model's network sees ``k sigma`` (``k = residual_scale``), so its trained range
        ``[sigma_min, sigma_max]`` is ``[sigma_min / k, sigma_max / k]`` in image units: the schedule
        is divided by ``k`` (no step is spent above the range the network was trained on). With contrast
        normalization that holds at the reference contrast; flatter items start above the trained range
        (the network's top timestep, i.e. its posterior mean) and end less denoised in its units.
        """
        if self.scheduler is None:
            raise ValueError("scheduler: needed to build a sampling schedule")
        s = diffusers_schedule(self.scheduler, num_steps)
        return SigmaSchedule(s.sigmas / self._sigma_scale, s.timesteps)

    def set_schedule(self, schedule: SigmaSchedule) -> None:
        """Use ``schedule.timesteps`` for its sigmas (exactly as its scheduler would)."""
        if schedule.timesteps is not None:
            self._table = (schedule.sigmas[:-1].double() * self._sigma_scale, schedule.timesteps.double())

    @property
    def _sigma_scale(self) -> float:
        """Network sigma / image sigma: ``residual_scale`` for a residual model, else 1."""
        return self.residual_scale if self.residual else 1.0

    def timesteps(self, sigma: torch.Tensor) -> torch.Tensor:
        """Model timesteps ``[B]`` (float64) of noise levels ``sigma`` ``[B]``, computed on sigma's device
        (the CPU for MPS) with no host synchronization once the tables are there (copied on first use)."""
        if self.log_sigma_timesteps:  # float64 on the CPU for MPS (no float64 there)
            dev = torch.device("cpu") if sigma.device.type == "mps" else sigma.device
            return 0.25 * sigma.detach().to(dev, torch.float64).clamp_min(1e-10).log()
        log_sigmas, table = self._tables_on(sigma.device)
        t = timesteps_from_log_sigmas(sigma, log_sigmas)
        if table is not None:
            s_tab, t_tab = table
            sd = sigma.detach().to(s_tab.device, torch.float64).view(-1, 1)
            hit = (sd - s_tab.view(1, -1)).abs() <= 1e-6 * s_tab.view(1, -1)
            has = hit.any(1)
            t = torch.where(has, t_tab[hit.float().argmax(1)], t.view(-1)).view(sigma.shape)
        return t

    def _tables_on(self, device: torch.device):
        """The training schedule's log sigmas and the sampling schedule's (sigma, timestep) table (or None)
        on ``device``, copied on first use (again when either source changes)."""
        src = (self.alphas_cumprod, self._table)
        cached = self._device_tables.get(device)
        if cached is None or any(a is not b for a, b in zip(cached[0], src, strict=True)):
            # blocking copies, once: any stream may read them after
            log_sigmas = log_training_sigmas(self.alphas_cumprod, device)
            tab = None if self._table is None else tuple(x.to(log_sigmas.device) for x in self._table)
            cached = self._device_tables[device] = (src, log_sigmas, tab)
        return cached[1], cached[2]

    def _residual_frame(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return residual_frame(
            self.layout.kind, cond, self.latent_channels, self.residual_scale, self.residual_normalize,
            self.residual_fill,
        )  # fmt: skip

    def forward(self, u: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """D(u, sigma): ``u`` ``[B, C, H, W]``, ``sigma`` ``[B]`` (or one float for all),
        ``cond`` ``[B, Cc, H, W]`` -> ``[B, C, H, W]``."""
        b = u.shape[0]
        dtype = (
            sigma.dtype if isinstance(sigma, torch.Tensor) and sigma.is_floating_point() else torch.float32
        )
        sigma = as_sigma("sigma", sigma, b, u.device, dtype)
        base = None
        if self.residual:
            self.layout.check(cond, b, *u.shape[-2:])
            settings = (
                self.residual_scale,
                self.residual_normalize,
                self.residual_fill,
                self.latent_channels,
            )
            base, gain, cond = self._frame_cache(cond, settings)
            base, gain = base.to(u.dtype), gain.to(u.dtype)
            u, sigma = (u - base) * gain.view(-1, 1, 1, 1), sigma * gain.to(sigma.dtype)
        # sigma^2 in float32 at least (it overflows float16 past 256)
        s = sigma.to(torch.promote_types(u.dtype, torch.float32)).view(-1, 1, 1, 1)
        c2 = 1 if self.sigma_data is None else self.sigma_data**2
        x = self.layout.unet_input((u / (s**2 + c2) ** 0.5).to(u.dtype), cond)
        t = self.timesteps(sigma).to(device=u.device, dtype=torch.float32)
        p_dtype = next(self.unet.parameters()).dtype
        kwargs = {}
        if self.conditional:
            ehs = rows_for_call(self.prompt_embeds, b, "prompt_embeds")
            added = {
                k: rows_for_call(v, b, f"added_cond_kwargs[{k!r}]")
                for k, v in (self.added_cond_kwargs or {}).items()
            }
            if self.cfg:
                neg = rows_for_call(self.negative_prompt_embeds, b, "negative_prompt_embeds")
                nadd = {
                    k: rows_for_call(v, b, f"negative_added_cond_kwargs[{k!r}]")
                    for k, v in (self.negative_added_cond_kwargs or {}).items()
                }
                ehs = torch.cat([neg, ehs])
                added = {k: torch.cat([nadd.get(k, _negative_default(k, v)), v]) for k, v in added.items()}
            kwargs["encoder_hidden_states"] = ehs.to(device=u.device, dtype=p_dtype)
            if added:
                kwargs["added_cond_kwargs"] = {
                    k: v.to(device=u.device, dtype=p_dtype) for k, v in added.items()
                }
        if self.class_labels is not None:
            labels = rows_for_call(self.class_labels.view(-1, 1), b, "class_labels").view(-1)
            labels = (
                labels.to(u.device) if labels.dtype.is_floating_point else labels.to(u.device, torch.long)
            )
            kwargs["class_labels"] = torch.cat([labels, labels]) if self.cfg else labels
        if self.cfg:
            x, t = torch.cat([x, x]), torch.cat([t, t])
        if self.controlnet is not None:  # its residuals, for both halves of CFG (diffusers' guess_mode off)
            control = torch.nn.functional.pixel_shuffle(cond, self.control_factor).to(p_dtype)
            extra = {k: kwargs[k] for k in ("encoder_hidden_states", "added_cond_kwargs") if k in kwargs}
            down, mid = self.controlnet(
                x.to(p_dtype), t, controlnet_cond=torch.cat([control, control]) if self.cfg else control,
                conditioning_scale=self.controlnet_scale, return_dict=False, **extra,
            )  # fmt: skip
            kwargs.update(down_block_additional_residuals=down, mid_block_additional_residual=mid)
        out = self.runner(x.to(p_dtype), t, **kwargs).sample.to(u.dtype)
        out = out[:, : self.latent_channels]  # learned-variance models: keep the mean part
        if self.cfg:
            o_u, o_c = out.chunk(2)
            out = o_u + self.guidance_scale * (o_c - o_u)
            if self.guidance_rescale > 0:
                out = rescale_guided(out, o_c, self.guidance_rescale)
        d = x0_from_model_output(out, u, sigma, self.prediction_type, self.sigma_data)
        return d if base is None else d / gain.view(-1, 1, 1, 1) + base


def _negative_default(key: str, positive: torch.Tensor) -> torch.Tensor:
    """diffusers' SDXL value for an added condition the negative prompt does not give: the same
    ``time_ids`` as the positive one, zeros for anything else (``text_embeds``)."""
    return positive if key == "time_ids" else torch.zeros_like(positive)


def _latent_channels(cfg, layout: ConditioningLayout | None, scheduler_config) -> int:
    """The latent channels of a UNet: the layout's when given; half the outputs of a learned-variance
    model (2C outputs: mean and variance) where the scheduler's ``variance_type`` says so or where there
    are more outputs than inputs; else the outputs (pass ``layout`` for, e.g., a learned-variance SR
    model: 3 + 3 inputs, 6 outputs)."""
    out = cfg.out_channels
    if layout is not None:
        c = layout.latent_channels
        if out not in (c, 2 * c):
            raise ValueError(
                f"layout: {c} latent channels, but the UNet has {out} outputs (expected {c}, or {2 * c} "
                "with a learned variance)"
            )
        return c
    learned = str(scheduler_config.get("variance_type") or "").startswith("learned")
    return out // 2 if learned or out > cfg.in_channels else out


def _check_text_conditions(cfg, prompt, negative, added, negative_added) -> None:
    """Shapes of the text conditioning: embeddings ``[B, L, D]`` with the UNet's D and one shape for the
    negative ones; added conditions (SDXL's ``text_embeds``, ``time_ids``) ``[B, ...]``."""
    dim = embedding_width(cfg)
    for name, e in (("prompt_embeds", prompt), ("negative_prompt_embeds", negative)):
        if e is None:
            continue
        if not isinstance(e, torch.Tensor) or e.dim() != 3:
            got = list(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise ValueError(f"{name}: expected a tensor [B, L, D] (a batch of token embeddings), got {got}")
        if dim is not None and e.shape[-1] != dim:
            raise ValueError(f"{name}: the UNet takes embeddings of width {dim}, got [.., {e.shape[-1]}]")
    if prompt is not None and negative is not None and negative.shape[1:] != prompt.shape[1:]:
        raise ValueError(
            f"negative_prompt_embeds: expected [B, {prompt.shape[1]}, {prompt.shape[2]}] as prompt_embeds, got "
            f"{list(negative.shape)}"
        )
    for group, conds in (("added_cond_kwargs", added), ("negative_added_cond_kwargs", negative_added)):
        for k, v in (conds or {}).items():
            if not isinstance(v, torch.Tensor) or v.dim() < 2:
                got = list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(
                    f"{group}[{k!r}]: expected a tensor [B, ...] (e.g. time_ids [1, 6]), got {got}"
                )
