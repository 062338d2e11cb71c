"""Noise augmentation of an image-conditioned super-resolution model's low-resolution input, as diffusers'
``StableDiffusionUpscalePipeline`` does it for the Stable Diffusion x4 upscaler: the frame, in [-1, 1], is
noised to the level ``noise_level`` of the folder's ``low_res_scheduler`` (a DDPM schedule) and the UNet
is told that level as its class label.

For video the augmentation noise is part of the conditioning: drawn afresh per frame, it would make the
model's added detail flicker. The pipeline draws it with the job's noise method on the latent grid (the
low-resolution frame's), warped along the flow like the latent noise, from a seed of its own
(:func:`augmentation_generator`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io.frames import read_json
from ..noise.base import fork_seed

# diffusers' StableDiffusionUpscalePipeline defaults: the call's noise_level, the pipeline's max_noise_level
DEFAULT_NOISE_LEVEL = 20
DEFAULT_MAX_NOISE_LEVEL = 350


@dataclass(frozen=True, eq=False)
class NoiseAugmentation:
    """The low-resolution input's noise level and the schedule that defines it.

    Attributes:
        noise_level: the DDPM timestep the low-resolution frame is noised to (also the UNet's class label).
        alphas_cumprod: ``[T_train]`` the low-resolution scheduler's cumulative alphas (float64, CPU).
        max_noise_level: the largest level the model was trained with.
    """

    noise_level: int
    alphas_cumprod: torch.Tensor
    max_noise_level: int = DEFAULT_MAX_NOISE_LEVEL

    def __post_init__(self):
        ac = torch.as_tensor(self.alphas_cumprod).detach().to("cpu", torch.float64)
        if ac.dim() != 1 or ac.numel() == 0 or not bool(((ac > 0) & (ac <= 1)).all()):
            raise ValueError(
                f"alphas_cumprod: expected a 1-D tensor of values in (0, 1], got shape {list(ac.shape)}"
            )
        object.__setattr__(self, "alphas_cumprod", ac)
        for name in ("noise_level", "max_noise_level"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        if self.noise_level > self.max_noise_level:
            raise ValueError(
                f"noise_level: at most the model's max_noise_level {self.max_noise_level}, got {self.noise_level}"
            )
        if self.noise_level >= ac.numel():
            raise ValueError(
                f"noise_level: the low-resolution schedule has {ac.numel()} levels, got {self.noise_level}"
            )

    @classmethod
    def from_folder(cls, root: str | Path, noise_level: int | None = None) -> NoiseAugmentation:
        """From a diffusers upscaler pipeline folder: its ``low_res_scheduler/`` and the ``max_noise_level``
        of its ``model_index.json``; ``noise_level`` None: diffusers' default (20)."""
        from diffusers import DDPMScheduler

        root = Path(root)
        sch = root / "low_res_scheduler"
        if not sch.is_dir():
            raise ValueError(
                f"noise_level: {root} has no low_res_scheduler/ (not an image-conditioned upscaler)"
            )
        index = root / "model_index.json"
        top = read_json(index, "folder").get("max_noise_level") if index.is_file() else None
        return cls(
            DEFAULT_NOISE_LEVEL if noise_level is None else noise_level,
            DDPMScheduler.from_pretrained(sch).alphas_cumprod,
            DEFAULT_MAX_NOISE_LEVEL if top is None else int(top),
        )

    def class_labels(self, device=None) -> torch.Tensor:
        """``[1]`` int64: the noise level, the UNet's class label."""
        return torch.tensor([self.noise_level], dtype=torch.long, device=device)

    def augment(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(a) image + sqrt(1 - a) noise`` with ``a = alphas_cumprod[noise_level]`` (diffusers'
        ``DDPMScheduler.add_noise``). ``image``, ``noise``: ``[..., 3, h, w]`` -> the same shape."""
        if noise.shape != image.shape:
            raise ValueError(
                f"noise: expected shape {list(image.shape)} as the image, got {list(noise.shape)}"
            )
        a = (
            self.alphas_cumprod[self.noise_level].to(image.dtype).to(image.device)
        )  # as add_noise: in its dtype
        return a**0.5 * image + (1 - a) ** 0.5 * noise.to(image.dtype)

    def key(self) -> list:
        """What a job's key records of it (its level and schedule)."""
        return [self.noise_level, self.alphas_cumprod.tolist()[self.noise_level]]


# Mixed into a job's seed for the augmentation noise's (the golden-ratio constant: far from small seeds)
_AUGMENTATION_SEED = 0x9E3779B97F4A7C15


def augmentation_generator(generator) -> int:
    """The augmentation noise's seed from a job's ``generator``: an int seed ``s`` (None: 0) gives
    ``s XOR 0x9E3779B97F4A7C15`` (mod 2^64: not another small seed's stream); a ``torch.Generator`` gives
    a seed drawn from a copy of its state (it does not advance), mixed the same way. Either way the
    augmentation has a stream of its own, the same on every device: sharing the job's generator would
    give the augmentation the latent noise's own draws where both are drawn on another device from a
    CPU generator's state."""
    seed = fork_seed(generator) if isinstance(generator, torch.Generator) else int(generator or 0) % 2**64
    return seed ^ _AUGMENTATION_SEED
