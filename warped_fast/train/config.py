"""Training configuration: a frozen dataclass, loadable from a TOML or JSON file."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

from ..models.hole_fill import check_hole_fill


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tune or train a diffusers UNet with GP (or white) noise in the denoising loss.

    Attributes:
        task: "inpaint" (input [noisy | mask | masked image]) or "sr" (input [noisy | upsampled x8 LR]).
        output_dir: checkpoints, loss log and curve go here.
        pretrained: a local diffusers UNet folder to fine-tune; None builds ``model`` from scratch. A
            diffusers pipeline folder (``unet/``, and ``vae/``, ``scheduler/``, text encoders: e.g. SDXL
            inpainting) fine-tunes its UNet in its latent space, with its conditioning, noise schedule and
            prediction type (:mod:`warped_fast.train.pipeline_parts`), and exports a pipeline folder.
        prompt: the text every training image is conditioned on (a text-conditioned UNet's).
        data_dir: a folder of images (png, jpg, jpeg, webp, bmp, tif; searched recursively) to train on,
            read from disk as batches need them; None: the photos packages ship.
        gradient_checkpointing: recompute activations in the backward pass (large UNets: less memory).
        model: UNet2DModel settings when training from scratch.
        noise: "gp" (RFF GP noise, method section 6) or "white" (the ablation).
        lengthscale: GP lengthscale in pixels of the training grid; num_features: J.
        crop_scales: range of the random rescaling of the photos before cropping (> 1 upscales).
        resolution, batch_size, steps, lr, weight_decay, grad_clip, ema_decay, warmup_steps (ema_decay 0:
            no moving average kept, the export is the trained weights; a float32 copy less in memory).
            The learning rate warms up linearly, then decays by a cosine to lr / 10 at ``steps``; ``steps``
            may change on resume, and the decay then spans the new total (more steps: the rate rises again
            to where the longer schedule has it).
        residual: the UNet models ``x - base(cond)`` (a fill of the hole / the bicubic upsampling, see
            :mod:`warped_fast.models.residual`) instead of ``x``.
        residual_scale: the residual is multiplied by it (about 1 / its std, like a VAE's scaling
            factor) so the diffusion sees unit-scale data.
        residual_fill: the hole fill of an inpainting residual model's base, "push_pull" or "harmonic"
            (:mod:`warped_fast.models.hole_fill`).
        residual_normalize: contrast normalization of the residual and the conditioning (see
            :func:`warped_fast.models.residual.residual_frame`); ``residual_scale`` is then the gain at
            the reference contrast.
        prediction_type: "epsilon" or "v_prediction" (DDPM schedule, 1000 steps, linear betas); None
            (the default): the pretrained folder's scheduler's (a resumed run: its own), else "v_prediction".
        high_noise_fraction: this fraction of each batch draws its timesteps from the top fifth of the
            schedule (sigma > ~25: pure noise in, the posterior mean out) instead of uniformly; the rest
            stay uniform. More signal for the posterior-mean estimate, whose loss is mostly the residual's
            own unpredictable part.
        mixed_precision: "no", "fp16" or "bf16" (autocast, CUDA only).
        checkpoint_every: steps between checkpoints (resume picks up the latest).
        data_workers: processes that prepare batches (for GPU training; the batches are the same with any
            number, each depends only on the seed and its step).
        lora_rank: 0: full fine-tuning; r > 0: low-rank adaptation of the pretrained UNet's attention
            projections (:mod:`warped_fast.train.lora`), merged into the exported weights.
        seed: everything random derives from it.
    """

    task: Literal["inpaint", "sr"] = "inpaint"
    output_dir: str = "runs/train"
    pretrained: str | None = None
    model: dict = field(
        default_factory=lambda: {
            "block_out_channels": [48, 96, 192],
            "layers_per_block": 1,
            "norm_num_groups": 16,
        }
    )
    noise: Literal["gp", "white"] = "gp"
    lengthscale: float = 2.0 / 3.141592653589793
    num_features: int = 3000
    resolution: int = 64
    crop_scales: tuple[float, float] = (0.25, 1.0)
    batch_size: int = 16
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    warmup_steps: int = 100
    prediction_type: Literal["epsilon", "v_prediction"] | None = None
    high_noise_fraction: float = 0.0
    residual: bool = False
    residual_scale: float = 1.0
    residual_normalize: bool = False
    residual_fill: Literal["push_pull", "harmonic"] = "push_pull"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    checkpoint_every: int = 500
    data_workers: int = 0
    lora_rank: int = 0
    seed: int = 0
    progress: bool = True
    prompt: str = ""
    data_dir: str | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self):
        self._check_types()
        if self.task not in ("inpaint", "sr"):
            raise ValueError(f"task: expected 'inpaint' or 'sr', got {self.task!r}")
        if self.noise not in ("gp", "white"):
            raise ValueError(f"noise: expected 'gp' or 'white', got {self.noise!r}")
        if self.resolution % 8 or self.resolution < 16:
            raise ValueError(f"resolution: expected a multiple of 8 >= 16, got {self.resolution}")
        for name in ("batch_size", "steps", "num_features", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank: expected >= 0 (0: full fine-tuning), got {self.lora_rank}")
        if self.lora_rank and self.pretrained is None:
            raise ValueError("lora_rank: adapts a pretrained UNet; set pretrained (or lora_rank = 0)")
        if self.data_workers < 0:
            raise ValueError(f"data_workers: expected >= 0, got {self.data_workers}")
        if len(self.crop_scales) != 2 or not 0 < self.crop_scales[0] <= self.crop_scales[1]:
            raise ValueError(f"crop_scales: expected [lo, hi] with 0 < lo <= hi, got {self.crop_scales}")
        for name in ("lr", "lengthscale", "residual_scale", "grad_clip"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a finite value > 0, got {v}")
        for name in ("weight_decay", "warmup_steps"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name}: expected a finite value >= 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"seed: expected 0 <= seed < 2^31, got {self.seed}")
        if self.residual_normalize and not self.residual:
            raise ValueError("residual_normalize: needs residual = true")
        check_hole_fill("residual_fill", self.residual_fill)
        if not 0 <= self.high_noise_fraction <= 1:
            raise ValueError(f"high_noise_fraction: expected in [0, 1], got {self.high_noise_fraction}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay: expected in [0, 1), got {self.ema_decay}")
        if self.prediction_type not in (None, "epsilon", "v_prediction"):
            raise ValueError(
                f"prediction_type: expected 'epsilon', 'v_prediction' or None (the pretrained model's), got "
                f"{self.prediction_type!r}"
            )
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(
                f"mixed_precision: expected 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}"
            )

    def _check_types(self) -> None:
        """Each field against its annotation (config files give strings for bools and ints for floats):
        ints and floats are numbers (an int where a float goes becomes a float), bools are bools, the
        crop range a pair of numbers (a tuple)."""
        for f in fields(self):
            v, kind = getattr(self, f.name), str(f.type)
            if v is None and kind.endswith("| None"):
                continue
            kind = kind.removesuffix(" | None")
            if kind.startswith("tuple"):
                ok = isinstance(v, (list, tuple)) and all(_is_number(x) for x in v)
                if ok:
                    object.__setattr__(self, f.name, tuple(float(x) for x in v))
            elif kind == "float":
                ok = _is_number(v)
                if ok:
                    object.__setattr__(self, f.name, float(v))
            elif kind == "int":
                ok = isinstance(v, int) and not isinstance(v, bool)
            elif kind == "bool":
                ok = isinstance(v, bool)
            elif kind == "dict":
                ok = isinstance(v, dict)
            else:  # str and Literal[...] (their values are checked below)
                ok = isinstance(v, str)
            if not ok:
                raise TypeError(f"{f.name}: expected {f.type}, got {type(v).__name__} {v!r}")

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        """Load a ``.toml`` or ``.json`` file (keys = attribute names); ``overrides`` win."""
        p = Path(path)
        if p.suffix not in (".toml", ".json"):
            raise ValueError(f"path: expected a .toml or .json file, got {p.name}")
        if not p.is_file():
            raise FileNotFoundError(f"config: {p} does not exist")
        try:  # TOMLDecodeError and JSONDecodeError are ValueErrors
            if p.suffix == ".toml":
                try:
                    import tomllib  # Python >= 3.11
                except ModuleNotFoundError:  # Python 3.10: the same parser as a package
                    import tomli as tomllib

                data = tomllib.loads(p.read_text())
            else:
                data = json.loads(p.read_text())
        except ValueError as e:
            raise ValueError(f"config: {p} is not valid {p.suffix[1:].upper()} ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"config: {p} holds a {type(data).__name__}, expected a table of settings")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{p.name}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)
