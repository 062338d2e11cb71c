"""Training with GP noise (method section 6): the standard denoising loss with the noise drawn from the
RFF GP field (``gp_noise`` op) instead of ``randn``, for inpainting or x8 super-resolution UNets.

AdamW with warmup + cosine decay, gradient clipping, EMA, mixed precision on CUDA, safetensors
checkpoints with exact resume, a tqdm bar, a CSV loss log and a loss curve (PNG).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..io.frames import match_folder_mode, read_json, write_json_atomic
from ..models.default import load_pretrained, schedule_family
from ..models.denoiser import continuous_v_timesteps
from ..models.residual import residual_frame
from ..noise.rff import RFFConfig, RFFField, identity_coords
from ..ops._checks import check_device, check_int
from .checkpoint import load_checkpoint, recover_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import ImageFolder, load_photos, random_crops
from .interrupt import DeferredInterrupt
from .lora import add_lora, frozen_fingerprint, merged_state_dict
from .pipeline_parts import PipelineParts, pipeline_root
from .tasks import task_condition

logger = logging.getLogger("warped_fast")
IMAGE_CHANNELS = 3
# optimizer steps in a row whose loss or gradient is not finite before training stops as diverged
MAX_NONFINITE_STEPS = 10


def build_unet(cfg: TrainConfig):
    """A diffusers ``UNet2DModel`` for the task (from ``cfg.pretrained`` or from ``cfg.model``)."""
    from diffusers import UNet2DModel

    cond = IMAGE_CHANNELS + 1 if cfg.task == "inpaint" else IMAGE_CHANNELS
    if cfg.pretrained:
        folder = Path(cfg.pretrained)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"pretrained: {cfg.pretrained!r} (from {Path.cwd()}) is not a diffusers UNet folder with a "
                "config.json; a relative path is taken from the working directory"
            )
        unet = load_pretrained(UNet2DModel, folder, "pretrained")
        if unet.config.in_channels != IMAGE_CHANNELS + cond:
            raise ValueError(
                f"pretrained: {cfg.pretrained!r} takes {unet.config.in_channels} input channels; a "
                f"{cfg.task} model takes {IMAGE_CHANNELS + cond}"
            )
        return unet
    m = dict(cfg.model)
    n = len(m.get("block_out_channels", [48, 96, 192]))
    m.setdefault("down_block_types", ["DownBlock2D"] * n)
    m.setdefault("up_block_types", ["UpBlock2D"] * n)
    return UNet2DModel(
        sample_size=cfg.resolution, in_channels=IMAGE_CHANNELS + cond, out_channels=IMAGE_CHANNELS, **m
    )


# The trained UNet's diffusers config, written beside the first checkpoint of a run.
UNET_CONFIG = "unet_config.json"
# The training schedule of a run that is not a pipeline folder's, beside its first checkpoint.
TRAIN_SCHEDULE = "train_scheduler.json"
# Written beside the first checkpoint of a run that fine-tunes a pipeline folder: the folder it needs.
PIPELINE_RUN = "pipeline_folder.json"
# Fields a resumed run may change: how long it runs and how, not what it trains.
_RESUMABLE_CHANGES = {
    "steps",
    "progress",
    "data_workers",
    "checkpoint_every",
    "output_dir",
    "gradient_checkpointing",
}
_REMEDY = "restore it or start the run in another folder"


def _check_same_run(saved: Path, cfg: TrainConfig) -> None:
    """Refuse to resume a run folder with a config that trains something else than its checkpoint."""
    if not saved.is_file():
        raise ValueError(
            f"config: {saved.parent} holds a checkpoint but no config.json, so not which run made it; "
            "use another output_dir"
        )
    old, new = read_json(saved, "config", _REMEDY), json.loads(cfg.to_json())
    old = {**json.loads(TrainConfig().to_json()), **old}  # fields newer than the run: their defaults
    # prediction_type None: the run's own (resolved when it started)
    same = lambda k: old.get(k) == new[k] or (k == "prediction_type" and new[k] is None)  # noqa: E731
    changed = sorted(k for k in new if k not in _RESUMABLE_CHANGES and not same(k))
    if changed:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed)
        raise ValueError(
            f"config: {saved.parent} holds a run with other settings ({diff}); only "
            f"{sorted(_RESUMABLE_CHANGES)} may change on resume: use another output_dir"
        )


def machine_description(device: torch.device | str = "cpu") -> str:
    """E.g. "x86_64 CPU (2 cores), torch 2.13.0+cpu" or "NVIDIA H100 80GB HBM3, torch ..."."""
    device = torch.device(device)
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{platform.machine()} CPU ({os.cpu_count()} cores)"
    return f"{what}, torch {torch.__version__}"


def train_scheduler(cfg: TrainConfig, run_dir: Path | None = None):
    """The training noise schedule of a model that is not a pipeline folder's: a resumed run's own
    (``run_dir``'s :data:`TRAIN_SCHEDULE`), else the pretrained UNet folder's ``scheduler_config.json``
    (its betas, zero-SNR rescale, timestep type), else DDPM's linear betas 1e-4..0.02 over 1000 steps
    (models trained from scratch). ``cfg.prediction_type`` is set (``Trainer._prediction_type``)."""
    from diffusers import DDPMScheduler, EulerDiscreteScheduler

    saved = None if run_dir is None else run_dir / TRAIN_SCHEDULE
    folder = Path(cfg.pretrained or "") / "scheduler_config.json"
    if saved is not None and saved.is_file():
        sch, name = read_json(saved, "run_dir", _REMEDY), "run_dir"
    elif cfg.pretrained and folder.is_file():
        sch, name = read_json(folder, "pretrained"), "pretrained"
    else:
        return DDPMScheduler(
            num_train_timesteps=1000, beta_schedule="linear", prediction_type=cfg.prediction_type
        )
    if schedule_family(sch) != "ddpm":
        kind = sch.get("_class_name", "")
        raise ValueError(
            f"{name}: {kind or 'the'} schedule in {saved if name == 'run_dir' else folder} has no DDPM "
            "betas; fine-tuning takes DDPM-family models (epsilon or v prediction)"
        )
    # Euler's config keeps what the sampler of the export needs (timestep type, sigma grid)
    return EulerDiscreteScheduler.from_config(sch, prediction_type=cfg.prediction_type)


def unet_timestep_table(scheduler) -> torch.Tensor | None:
    """``[T_train]`` the UNet's timestep input per training step for a continuous-time v-prediction
    schedule (``0.25 log sigma``, as the sampler's ``DiffusersDenoiser`` gives it); None: the step index."""
    if not continuous_v_timesteps(scheduler.config):
        return None
    ac = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32)
    return 0.25 * ((1 - ac) / ac).sqrt().log()


def noise_draw(
    cfg: TrainConfig, n: int, generator: torch.Generator, shape: tuple[int, int] | None = None
) -> dict:
    """The random numbers of one batch's noise, drawn on the CPU from ``generator``: white noise
    ``[n, C, R, R]``, or a fresh RFF field and each item's random offset in a 4096 px square of its plane
    (two items' windows overlap rarely: at batch 64 and 64 px, about 2 pairs a batch). ``shape``:
    ``(C, R)``, the noise's channels and size (default: an image's, ``(3, cfg.resolution)``; a latent
    model's are its latent channels and ``resolution / f``, the lengthscale then in latent pixels)."""
    c, r = shape or (IMAGE_CHANNELS, cfg.resolution)
    if cfg.noise == "white":
        return {"white": torch.randn(n, c, r, r, generator=generator)}
    rff = RFFConfig(c, cfg.num_features, cfg.lengthscale, shared_features=True)
    field = RFFField.sample(rff, generator)
    return {"field": field, "offsets": torch.rand(n, 1, 1, 2, generator=generator) * 4096.0, "size": r}


def noise_on(cfg: TrainConfig, draw: dict, device) -> torch.Tensor:
    """``[n, C, R, R]`` unit-variance noise from :func:`noise_draw`, the GP field evaluated on ``device``."""
    if "white" in draw:
        return draw["white"].to(device)
    r, offsets = draw.get("size", cfg.resolution), draw["offsets"].to(device, torch.float32)
    coords = identity_coords(r, r, offsets.shape[0], device=device) + offsets
    return draw["field"].to(device)(coords)


def training_noise(
    cfg: TrainConfig, n: int, generator: torch.Generator, device, shape: tuple[int, int] | None = None
) -> torch.Tensor:
    """``[n, C, R, R]`` unit-variance training noise: GP (a fresh RFF draw per batch, each item at its own
    random offset of the plane, :func:`noise_draw`) or white; the same numbers on every device."""
    return noise_on(cfg, noise_draw(cfg, n, generator, shape), device)


class BatchSource(torch.utils.data.Dataset):
    """Batch ``i`` of a run as CPU tensors ``(x, cond, noise draw, t)``: it depends only on the seed and
    ``i``, so data-loader workers can make batches in any order and a resumed run sees the same data."""

    def __init__(
        self, cfg: TrainConfig, photos, num_timesteps: int, noise_shape: tuple[int, int] | None = None
    ):
        self.cfg, self.photos, self.num_timesteps = cfg, photos, num_timesteps
        self.noise_shape = noise_shape

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int):
        c = self.cfg
        g = torch.Generator().manual_seed((c.seed << 32) + step)
        x = random_crops(self.photos, c.batch_size, c.resolution, g, tuple(c.crop_scales))
        cond = task_condition(c.task, x, g)
        draw = noise_draw(c, c.batch_size, g, self.noise_shape)
        t = torch.randint(0, self.num_timesteps, (c.batch_size,), generator=g)
        n_high = round(c.high_noise_fraction * c.batch_size)
        if n_high:  # the first n_high items: the top fifth of the schedule
            t[:n_high] = torch.randint(
                self.num_timesteps * 4 // 5, self.num_timesteps, (n_high,), generator=g
            )
        return x, cond, draw, t


class Trainer:
    """Runs :class:`TrainConfig` in ``run_dir`` (default ``cfg.output_dir``; pass the run's folder when it
    was moved or the working directory differs); resumes from ``run_dir/checkpoint`` when it exists, and
    ``train`` drops the loss-log rows past that checkpoint."""

    def __init__(
        self, cfg: TrainConfig, device: str | torch.device | None = None, run_dir: str | Path | None = None
    ):
        self.cfg = cfg
        self.device = check_device("device", device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.out = Path(cfg.output_dir if run_dir is None else run_dir)
        self.ckpt = self.out / "checkpoint"
        resuming = recover_checkpoint(self.ckpt)
        torch.manual_seed(cfg.seed)
        # Resuming: the checkpoint holds the weights, the architecture is the run's own (beside the
        # checkpoint, or in an export of older runs), so no pretrained folder is needed; a LoRA run's
        # checkpoint holds its adapters only, and its base is the pretrained folder's.
        arch_files = [f for f in (self.out / UNET_CONFIG, self.out / "model" / "config.json") if f.is_file()]
        # a pipeline folder (e.g. SDXL inpainting): its UNet in its latent space, its VAE, text, schedule
        root = pipeline_root(cfg.pretrained)
        self.parts = None if root is None else PipelineParts(cfg, self.device, root)
        if self.parts is None and resuming and (self.out / PIPELINE_RUN).is_file():
            was = read_json(self.out / PIPELINE_RUN, "run_dir", _REMEDY).get("pretrained")
            raise FileNotFoundError(
                f"pretrained: {cfg.pretrained!r} (from {Path.cwd()}) is not a pipeline folder; this run "
                f"fine-tunes {was}, whose VAE, text encoders and schedule resuming needs"
            )
        if self.parts is not None:
            self.unet = self.parts.unet  # resuming: the checkpoint's weights (or adapters) go in it
        elif resuming and arch_files and not cfg.lora_rank:  # LoRA: the base is the pretrained one
            from diffusers import UNet2DModel

            self.unet = UNet2DModel.from_config(read_json(arch_files[0], "run_dir", _REMEDY))
        else:
            self.unet = build_unet(cfg)
        self.unet.to(self.device).train()
        # each down block but the last halves the frame: the training crops must halve that often
        halvings = len(self.unet.config.block_out_channels) - 1
        size = cfg.resolution if self.parts is None else self.parts.latent_size
        if size % 2**halvings:
            raise ValueError(
                f"resolution: the UNet halves its input {halvings} times, so the training size ({size}"
                f"{'' if self.parts is None else ' latent pixels'}) must be a multiple of {2**halvings}; "
                f"got resolution {cfg.resolution}"
            )
        # LoRA: the layers adapted (their base weights frozen); the same draw on resume, then the checkpoint's
        self.lora = add_lora(self.unet, cfg.lora_rank, cfg.seed) if cfg.lora_rank else []
        if cfg.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if cfg.pretrained:  # record the architecture actually trained, not the from-scratch default
            c = self.unet.config
            arch = {"block_out_channels": list(c.block_out_channels), "layers_per_block": c.layers_per_block}
            cfg = self.cfg = replace(cfg, model={**arch, "norm_num_groups": c.norm_num_groups})
        if resuming:
            _check_same_run(self.out / "config.json", cfg)
        cfg = self.cfg = replace(cfg, prediction_type=self._prediction_type(cfg, resuming))
        # the parameters trained (LoRA: its matrices), by name: the optimizer's, the EMA's, the checkpoint's
        self.trained = {k: p for k, p in self.unet.named_parameters() if p.requires_grad}
        self.params = list(self.trained.values())
        if self.parts is None:
            self.scheduler = train_scheduler(cfg, self.out if resuming else None)
        else:
            self.scheduler = self.parts.scheduler
        self.alphas = torch.as_tensor(self.scheduler.alphas_cumprod).to(self.device, torch.float32)
        table = unet_timestep_table(self.scheduler)
        self.timestep_table = None if table is None else table.to(self.device)
        # fused on CUDA: no full-size temporaries in the update (a large UNet's memory)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
        # the exponential moving average of the weights (float32); ema_decay 0: none kept, the export is
        # the weights themselves (a large UNet: one copy of it less in device memory)
        self.ema = {
            k: v.detach().clone().float()
            for k, v in self.unet.state_dict().items()
            if v.is_floating_point() and cfg.ema_decay > 0 and (not self.lora or k in self.trained)
        }
        if cfg.warmup_steps >= cfg.steps:
            logger.warning(
                "warmup_steps %d >= steps %d: the learning rate never reaches lr (%g) and never decays; "
                "set warmup_steps below steps",
                cfg.warmup_steps, cfg.steps, cfg.lr,
            )  # fmt: skip
        self._data = None  # the training images, opened at the first batch (exporting needs none)
        self.step = 0
        self.nonfinite = 0  # steps in a row skipped for a non-finite loss or gradient
        self._fresh = not resuming  # its first checkpoint replaces any earlier run's files in the folder
        amp = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision)
        self.amp_dtype = amp if self.device.type == "cuda" else None
        if amp is not None and self.amp_dtype is None:
            logger.warning(
                "mixed_precision %r: on CUDA only; training in float32 on %s",
                cfg.mixed_precision,
                self.device,
            )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # LoRA checkpoints hold the adapters only: the frozen base is the pretrained weights, checked
        self.base_fingerprint = frozen_fingerprint(self.unet) if self.lora else None
        if resuming:
            meta = load_checkpoint(self.ckpt, self.unet, self.ema, self.opt, self.scaler)
            if meta.get("lora_base", self.base_fingerprint) != self.base_fingerprint:
                raise ValueError(
                    f"pretrained: {cfg.pretrained}'s weights are not the ones this LoRA run started from "
                    f"(its checkpoint in {self.ckpt} holds the adapters only); point pretrained at that model"
                )
            self.step = meta["step"]
            logger.info("resumed from %s at step %d", self.ckpt, self.step)

    def _prediction_type(self, cfg: TrainConfig, resuming: bool) -> str:
        """The config's; else a pipeline folder's; else a resumed run's own; else the pretrained UNet
        folder's scheduler's; else (from scratch) "v_prediction"."""
        if cfg.prediction_type is not None:
            return cfg.prediction_type
        if self.parts is not None:
            return self.parts.prediction_type
        saved = read_json(self.out / "config.json", "run_dir", _REMEDY) if resuming else {}
        if saved.get("prediction_type") is not None:
            return saved["prediction_type"]
        path = Path(cfg.pretrained or "") / "scheduler_config.json"
        kind = (
            read_json(path, "pretrained").get("prediction_type")
            if cfg.pretrained and path.is_file()
            else None
        )
        if kind not in (None, "epsilon", "v_prediction"):
            raise ValueError(
                f"pretrained: the model predicts {kind!r}; training takes epsilon or v_prediction"
            )
        return kind or "v_prediction"

    @property
    def data(self) -> BatchSource:
        """The batches (:class:`BatchSource`) of the run's images, opened on first use."""
        if self._data is None:
            cfg = self.cfg
            photos = ImageFolder(cfg.data_dir) if cfg.data_dir else load_photos("train")
            shape = None if self.parts is None else (self.parts.latent_channels, self.parts.latent_size)
            self._data = BatchSource(cfg, photos, len(self.alphas), shape)
        return self._data

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        p = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
        return c.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))

    def batch(self, step: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clean images, conditioning, noise and timesteps of batch ``step`` (default: the next one), on
        the training device."""
        return self._on_device(self.data[self.step if step is None else step])

    def _on_device(self, raw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x, cond, draw, t = raw
        dev = self.device
        return x.to(dev), cond.to(dev), noise_on(self.cfg, draw, dev), t.to(dev)

    def _batches(self, total: int):
        """Raw batches ``self.step .. total - 1``, made by ``cfg.data_workers`` processes when > 0."""
        steps = range(self.step, total)
        if self.cfg.data_workers == 0:
            return (self.data[i] for i in steps)
        return torch.utils.data.DataLoader(
            self.data, batch_size=None, sampler=steps, num_workers=self.cfg.data_workers,
            prefetch_factor=4, pin_memory=self.device.type == "cuda",
        )  # fmt: skip

    def loss(self, x, cond, noise, t) -> torch.Tensor:
        """The denoising loss of clean crops ``x`` ``[B, 3, R, R]`` in [-1, 1], their pixel conditioning,
        the noise (the model's space) and timesteps ``[B]``."""
        c = self.cfg
        kwargs = {}
        if self.parts is not None:  # the model's space and conditioning, its text
            x, cond = self.parts.inputs(c.task, x, cond)
            kwargs = self.parts.unet_kwargs(x.shape[0])
        if c.residual:
            base, gain, cond = residual_frame(
                c.task, cond, IMAGE_CHANNELS, c.residual_scale, c.residual_normalize, c.residual_fill
            )
            x = (x - base) * gain.view(-1, 1, 1, 1)
        a = self.alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x + (1 - a).sqrt() * noise
        target = noise if c.prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            t_in = t if self.timestep_table is None else self.timestep_table[t]
            pred = self.unet(torch.cat([xt, cond], 1), t_in, **kwargs).sample
        pred = pred[:, : x.shape[1]]  # a learned-variance model: its mean part
        return torch.nn.functional.mse_loss(pred.float(), target)

    def train_step(self, raw=None) -> float:
        """One optimizer step on batch ``raw`` (a :class:`BatchSource` item; default: the next batch).

        A step whose loss or gradient is not finite leaves the weights, the optimizer and the average
        as they were (a warning names it; float16's loss scaler skips overflowing gradients itself);
        :data:`MAX_NONFINITE_STEPS` of them in a row raise ``FloatingPointError`` (the run's last
        checkpoint left as it was)."""
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.opt.zero_grad(set_to_none=True)  # before the forward: no stale gradients held during it
        loss = self.loss(*(self.batch() if raw is None else self._on_device(raw)))
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        value = float(loss.detach())  # the step's one wait for the device, after its backward
        self.step += 1
        # the float16 scaler checks the gradients itself (and skips an overflowing step)
        if not (math.isfinite(value) and (self.scaler.is_enabled() or math.isfinite(float(norm)))):
            if self.scaler.is_enabled():
                self.scaler.update()  # closes the step unscale_ opened (and lowers the scale)
            self._skip_step(value)
            return value
        self.nonfinite = 0
        self.scaler.step(self.opt)
        self.scaler.update()
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        sd = self.unet.state_dict()
        keys = [k for k in self.ema if k in sd]
        if keys:
            with torch.no_grad():
                torch._foreach_lerp_([self.ema[k] for k in keys], [sd[k].float() for k in keys], 1 - decay)
        return value

    def _skip_step(self, loss: float) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.nonfinite += 1
        what = "loss" if not math.isfinite(loss) else "gradient"
        logger.warning("step %d: non-finite %s; the step is skipped (weights unchanged)", self.step, what)
        if self.nonfinite >= MAX_NONFINITE_STEPS:
            # this run's checkpoint: written by it, or the one it resumed from
            kept = (
                f"{self.ckpt} holds its last checkpoint" if not self._fresh else "no checkpoint was written"
            )
            raise FloatingPointError(
                f"training diverged: {self.nonfinite} steps in a row (up to step {self.step}) had a non-finite "
                f"loss or gradient; {kept}. Train again in a new output_dir with a lower lr (now "
                f"{self.cfg.lr:g}), more warmup_steps, or float32 / bf16"
            )

    def checkpoint(self) -> None:
        if self.lora:  # the adapters only (a large UNet's base is gigabytes), with the base's fingerprint
            extra = {"lora_base": self.base_fingerprint}
            save_checkpoint(
                self.ckpt, self.unet, self.ema, self.opt, self.step, extra, self.scaler, set(self.trained)
            )
        else:
            save_checkpoint(self.ckpt, self.unet, self.ema, self.opt, self.step, {}, self.scaler)
        # beside the checkpoint, what resuming needs (rewritten by a run that did not resume: a folder's
        # earlier run, whose checkpoint was removed, may have left its own)
        fresh, self._fresh = self._fresh, False
        arch = self.out / UNET_CONFIG
        if fresh or not arch.is_file():  # the architecture, so that resuming needs no pretrained folder
            write_json_atomic(arch, json.loads(self.unet.to_json_string()))
        schedule = self.out / TRAIN_SCHEDULE
        if self.parts is None and (fresh or not schedule.is_file()):  # nor its schedule
            write_json_atomic(schedule, json.loads(self.scheduler.to_json_string()))
        elif fresh:
            schedule.unlink(missing_ok=True)
        mark = self.out / PIPELINE_RUN
        if self.parts is not None and (fresh or not mark.is_file()):  # resuming needs the folder's parts
            write_json_atomic(mark, {"pretrained": str(self.parts.root.resolve())})
        elif self.parts is None and fresh:
            mark.unlink(missing_ok=True)

    def train(self, steps: int | None = None, max_minutes: float | None = None) -> Path:
        """Train up to ``steps`` (default ``cfg.steps``) total steps; returns the exported model folder.

        ``max_minutes``: a wall-clock budget for this call; when it runs out the run checkpoints and
        exports early (the learning rate has then not decayed fully; a later call resumes)."""
        total = check_int("steps", self.cfg.steps if steps is None else steps, 1)
        if max_minutes is not None and not max_minutes > 0:
            raise ValueError(f"max_minutes: expected > 0, got {max_minutes}")
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out / "config.json", json.loads(self.cfg.to_json()))
        log_path = self.out / "loss.csv"
        new = not log_path.exists() or log_path.stat().st_size == 0  # empty: a crash before the header
        if not new:
            _truncate_log(log_path, self.step)
        t0 = time.perf_counter()
        self._record_hardware()
        with log_path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(LOG_HEADER)
            bar = tqdm(
                total=total, initial=self.step, disable=not self.cfg.progress, desc=f"train {self.cfg.task}"
            )
            saved = self.step
            with DeferredInterrupt() as stop:
                batches = iter(self._batches(total))
                while not stop.requested:
                    try:
                        raw = next(batches)
                    except StopIteration:
                        break
                    except Exception:  # noqa: BLE001 - data workers end on Ctrl-C too
                        if stop.requested:
                            break
                        raise
                    loss = self.train_step(raw)
                    if math.isfinite(loss):  # a skipped step's NaN would spoil the log's means and plot
                        w.writerow(
                            [
                                self.step,
                                f"{loss:.6f}",
                                f"{self.lr_at(self.step - 1):.3e}",
                                f"{time.perf_counter() - t0:.1f}",
                            ]
                        )
                    bar.set_postfix(loss=f"{loss:.4f}")
                    bar.update(1)
                    out_of_time = max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes
                    if self.step % self.cfg.checkpoint_every == 0 or self.step == total or out_of_time:
                        f.flush()
                        self.checkpoint()
                        saved = self.step
                    if out_of_time:
                        logger.warning(
                            "max_minutes=%s reached at step %d of %d", max_minutes, self.step, total
                        )
                        break
                if stop.requested:  # Ctrl-C: keep every finished step, then stop as interrupted
                    bar.close()
                    if saved != self.step:
                        f.flush()
                        self.checkpoint()
                    logger.warning(
                        "interrupted: checkpoint at step %d of %d in %s", self.step, total, self.ckpt
                    )
                    raise KeyboardInterrupt
            bar.close()
        plot_loss(log_path, self.out / "loss.png")
        return self.export(self.out / "model")

    def _record_hardware(self) -> None:
        """Append this training session's machine to ``output_dir/hardware.json`` (read by the model card)."""
        path = self.out / "hardware.json"
        seen = read_json(path, "run_dir", _REMEDY) if path.exists() else []
        here = machine_description(self.device)
        if here not in seen:
            write_json_atomic(path, [*seen, here])

    def export(self, folder: Path, dtype: torch.dtype = torch.float32) -> Path:
        """Save the EMA weights as a diffusers folder (safetensors) with the inference scheduler (releases
        go through :func:`~warped_fast.train.release.load_trained`, which refuses an untrained run). A
        fine-tune of a pipeline folder exports a pipeline folder: ``unet/``, ``scheduler/`` and the
        pretrained folder's VAE, text encoders and tokenizers (hard links where possible)."""
        from diffusers import EulerDiscreteScheduler

        folder = Path(folder)
        unet_dir = folder if self.parts is None else folder / "unet"
        unet = type(self.unet).from_config(self.unet.config)
        sd = {k: (self.ema[k] if k in self.ema else v) for k, v in self.unet.state_dict().items()}
        if self.lora:  # merged: a plain diffusers UNet
            sd = merged_state_dict(sd, self.lora)
        missing, unexpected = unet.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"export: weights do not fit the UNet: missing {missing}, unexpected {unexpected}"
            )
        # nn.Module.to: diffusers' override warns about float32 modules even when the list is empty
        torch.nn.Module.to(unet, dtype).save_pretrained(unet_dir, safe_serialization=True)
        for f in unet_dir.glob("*.safetensors"):  # readable as the files beside them are
            match_folder_mode(f)
        (unet_dir / "train_config.json").write_text(replace(self.cfg, steps=max(self.step, 1)).to_json())
        if self.parts is not None:  # a pipeline folder: the inference scheduler, VAE and text parts beside
            self.parts.scheduler.save_pretrained(folder / "scheduler")
            self.parts.export_shared(folder)
            return folder
        EulerDiscreteScheduler.from_config(self.scheduler.config, use_karras_sigmas=True).save_pretrained(
            folder
        )
        return folder


LOG_HEADER = ["step", "loss", "lr", "seconds"]


def _complete_row(row: list[str]) -> bool:
    """Whether a loss-log row has its four numbers (a killed run may leave half a row)."""
    if len(row) != len(LOG_HEADER):
        return False
    try:
        int(row[0])
        for v in row[1:]:
            float(v)
    except ValueError:
        return False
    return True


def read_loss_log(log_path: Path) -> list[list[str]]:
    """The complete rows of a loss log (header left out; a row a kill cut short is skipped)."""
    with Path(log_path).open(newline="") as f:
        return [r for r in list(csv.reader(f))[1:] if _complete_row(r)]


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop the rows of ``log_path`` past ``step`` (logged after the checkpoint a run resumes from) and any
    incomplete row (a run killed while writing); the file ends with a line end, so the next row starts
    its own line."""
    text = log_path.read_text()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    keep = [LOG_HEADER] + [r for r in rows[1:] if _complete_row(r) and int(r[0]) <= step]
    if keep != rows or not text.endswith("\n"):
        logger.info("loss log: dropping %d rows past step %d or incomplete", len(rows) - len(keep), step)
        tmp = log_path.with_name(log_path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows(keep)
        tmp.replace(log_path)


def plot_loss(log_path: Path | list[Path], png: Path, smooth: int = 50) -> None:
    """Loss curve (raw and moving average) as a PNG; skipped without matplotlib. Several logs (training
    stages, each fine-tuned from the one before) are drawn one after the other, split by dashed lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed: no loss curve")
        return
    steps, losses, bounds = [], [], []
    for path in log_path if isinstance(log_path, list) else [log_path]:
        rows = read_loss_log(path)
        offset = steps[-1] if steps else 0
        if steps:
            bounds.append(offset)
        steps += [offset + int(r[0]) for r in rows]
        losses += [float(r[1]) for r in rows]
    if not steps:
        return
    loss = torch.tensor(losses)
    k = max(1, min(smooth, len(loss)))
    avg = torch.nn.functional.avg_pool1d(loss.view(1, 1, -1), k, 1).view(-1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, alpha=0.3, lw=0.8, label="loss")
    ax.plot(steps[k - 1 :], avg, lw=1.5, label=f"mean of {k}")
    for b in bounds:
        ax.axvline(b, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("denoising loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
