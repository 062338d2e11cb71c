"""Conditioning layouts: what is concatenated to the scaled noisy latent along channels (method section 6).

UNet input = ``[c_in * u | cond]`` where ``cond`` is built per frame by a layout:
- inpainting (diffusers' SDXL inpainting layout): ``[mask 1 | masked-image latent C]`` -> 9 channels
  for a 4-channel latent;
- x8 super-resolution: ``[latent of the low-resolution frame upsampled to the output size]``;
- image-conditioned super-resolution (diffusers' Stable Diffusion x4 upscaler): ``[the low-resolution
  frame itself, RGB in [-1, 1] at latent resolution, noise-augmented]`` -> 3 channels
  (:mod:`warped_fast.models.noise_augmentation`);
- a ControlNet's control image (e.g. an SDXL tile ControlNet for SR): the frame at output resolution in
  [0, 1], pixel-unshuffled to the latent grid, ``3 f^2`` channels, given to the ControlNet, not the UNet;
- FLUX Fill (:mod:`warped_fast.models.flux`): ``[masked-image latent C | the pixel mask, f x f values per
  latent cell]`` -> ``C + f^2`` channels (packed into 2 x 2 patches by its denoiser);
- generic: any tensors concatenated in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class ConditioningLayout:
    """Describes the UNet's input channels.

    Attributes:
        kind: "none", "inpaint", "sr" (a latent of the upsampled frame), "sr_image" (the low-resolution
            RGB frame at latent resolution), "fill" (FLUX Fill's masked-image latent and pixel mask),
            "control" (a ControlNet's control image, not part of the UNet's input) or "concat".
        latent_channels: C of the noisy latent.
        cond_channels: channels appended after it.
    """

    kind: Literal["none", "inpaint", "sr", "sr_image", "fill", "control", "concat"]
    latent_channels: int = 4
    cond_channels: int = 0

    def __post_init__(self):
        if self.latent_channels < 1 or self.cond_channels < 0:
            raise ValueError(f"channels: expected latent >= 1 and cond >= 0, got {self}")
        want = {"none": 0, "inpaint": self.latent_channels + 1, "sr": self.latent_channels, "sr_image": 3}
        want = want.get(self.kind)
        if want is not None and self.cond_channels != want:
            raise ValueError(f"cond_channels: the {self.kind} layout has {want}, got {self.cond_channels}")

    @property
    def in_channels(self) -> int:
        """The UNet's input channels (a ControlNet's control image goes to the ControlNet)."""
        return self.latent_channels + (0 if self.kind == "control" else self.cond_channels)

    @classmethod
    def inpaint(cls, latent_channels: int = 4) -> ConditioningLayout:
        return cls("inpaint", latent_channels, latent_channels + 1)

    @classmethod
    def sr(cls, latent_channels: int = 4) -> ConditioningLayout:
        return cls("sr", latent_channels, latent_channels)

    @classmethod
    def sr_image(cls, latent_channels: int = 4) -> ConditioningLayout:
        """The low-resolution RGB frame beside the latent (the Stable Diffusion x4 upscaler's 4 + 3)."""
        return cls("sr_image", latent_channels, 3)

    @classmethod
    def for_unet(
        cls, in_channels: int, latent_channels: int = 4, class_embeddings: bool = False
    ) -> ConditioningLayout:
        """Guess from a UNet's input channels: C -> none, 2C + 1 -> inpaint, 2C -> sr, C + 3 with class
        embeddings (the noise level's) -> sr_image (the x4 upscaler's RGB frame beside its latent), else
        concat."""
        extra = in_channels - latent_channels
        kinds = {0: "none", **({3: "sr_image"} if class_embeddings else {})}
        kinds.update({latent_channels + 1: "inpaint", latent_channels: "sr"})
        return cls(kinds.get(extra, "concat"), latent_channels, extra)

    def check(self, cond: torch.Tensor | None, batch: int, h: int, w: int) -> None:
        if self.cond_channels == 0:
            if cond is not None:
                raise ValueError(
                    f"cond: this model takes no conditioning channels, got shape {list(cond.shape)}"
                )
            return
        if cond is None or cond.shape != (batch, self.cond_channels, h, w):
            got = None if cond is None else list(cond.shape)
            raise ValueError(f"cond: expected shape [{batch}, {self.cond_channels}, {h}, {w}], got {got}")

    def unet_input(self, scaled_latent: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """``[B, C + Cc, H, W]`` from the scaled latent ``[B, C, H, W]`` and ``cond`` ``[B, Cc, H, W]``."""
        n, _, h, w = scaled_latent.shape
        self.check(cond, n, h, w)
        if cond is None or self.kind == "control":
            return scaled_latent
        return torch.cat([scaled_latent, cond.to(scaled_latent.dtype)], 1)


def inpaint_condition(mask: torch.Tensor, masked_latent: torch.Tensor) -> torch.Tensor:
    """Inpainting conditioning ``[mask | masked-image latent]``.

    Args:
        mask: ``[B, 1, h, w]`` 1 where the content is to be generated, at latent resolution.
        masked_latent: ``[B, C, h, w]`` latent of the image with the masked region blanked.
    Returns:
        ``[B, C + 1, h, w]`` on the latent's device.
    """
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask: expected shape [B, 1, h, w], got {list(mask.shape)}")
    if masked_latent.shape[0] != mask.shape[0] or masked_latent.shape[2:] != mask.shape[2:]:
        raise ValueError(
            f"masked_latent: expected [B, C, {mask.shape[2]}, {mask.shape[3]}], got {list(masked_latent.shape)}"
        )
    return torch.cat([mask.to(masked_latent), masked_latent], 1)  # the latent's dtype and device


def sr_condition(lowres_latent: torch.Tensor) -> torch.Tensor:
    """Super-resolution conditioning: the latent of the low-resolution frame upsampled to the output
    size, ``[B, C, h, w]`` (already at latent resolution; the pipeline does the upsampling)."""
    if lowres_latent.dim() != 4:
        raise ValueError(f"lowres_latent: expected [B, C, h, w], got {list(lowres_latent.shape)}")
    return lowres_latent


# the layouts each task takes beside its own
_TASK_KINDS = {"inpaint": ("fill",), "sr": ("sr_image", "control")}


def frame_condition(
    task: str,
    frames: torch.Tensor,
    mask: torch.Tensor | None,
    autoencoder,
    sr_factor: int = 8,
    kind: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The degraded frames and the conditioning latents of a restoration task (the pipeline's, and a
    fine-tune's on a diffusers pipeline folder).

    Args:
        task: "inpaint" or "sr".
        frames: ``[T, 3, H, W]`` in [0, 1]: the clean frames to inpaint, or the low-resolution frames.
        mask: inpainting: ``[T, 1, H, W]``, 1 where content is generated; else None.
        autoencoder: ``encode`` ``[T, 3, H, W]`` in [0, 1] -> latents; ``factor``.
        kind: the model's conditioning layout (None: the task's own, "inpaint" or "sr"). "sr_image":
            the conditioning is the low-resolution frame itself, bicubic-resized to the latent grid (output
            size / factor; as given for an x4 model with a factor-4 autoencoder at ``sr_factor`` 4), in
            [-1, 1], before its noise augmentation. "control": the upsampled frame in [0, 1],
            pixel-unshuffled by the factor (a tile ControlNet's control image). "fill" (inpainting): ``[latent of the degraded frame |
            the pixel mask, f x f values per latent cell]`` (FLUX Fill's).
    Returns:
        the degraded frames at output resolution ``[T, 3, H', W']`` (masked pixels grey; the bicubic
        upsampling by ``sr_factor``) and the conditioning ``[T, Cc, H' / f, W' / f]``: inpainting
        ``[mask | latent of the degraded frame]`` with a latent cell generated where any of its pixels is,
        sr the latent of the upsampled frame.
    """
    if kind not in (None, task, *_TASK_KINDS.get(task, ())):
        raise ValueError(
            f"kind: the {task!r} task takes the layouts {(task, *_TASK_KINDS.get(task, ()))}, got {kind!r}"
        )
    if task == "inpaint" and kind == "fill":  # FluxFillPipeline's: the mask binarized, and at pixel size
        mask = (mask >= 0.5).to(frames.dtype)
        degraded = frames * (1 - mask) + 0.5 * mask
        z = autoencoder.encode(degraded)  # mask [T, 1, H, W] -> [T, f * f, h, w], channel dy * f + dx
        return degraded, torch.cat(
            [z, torch.nn.functional.pixel_unshuffle(mask, autoencoder.factor).to(z)], 1
        )
    if task == "inpaint":
        degraded = frames * (1 - mask) + 0.5 * mask  # masked pixels grey, as the model was trained
        f = autoencoder.factor
        m_lat = torch.nn.functional.max_pool2d(mask, f) if f > 1 else mask
        return degraded, inpaint_condition(m_lat, autoencoder.encode(degraded))
    if task == "sr":
        from ..io.video import resize_frames

        h, w = frames.shape[-2] * sr_factor, frames.shape[-1] * sr_factor
        up = resize_frames(frames, (h, w))
        if kind == "control":  # the upsampled frame, [0, 1], on the latent grid
            return up, torch.nn.functional.pixel_unshuffle(up, autoencoder.factor)
        if kind != "sr_image":
            return up, sr_condition(autoencoder.encode(up))
        f = autoencoder.factor
        grid = (h // f, w // f)
        small = frames if tuple(frames.shape[-2:]) == grid else resize_frames(frames, grid)
        return up, small.to(up.dtype) * 2 - 1
    raise ValueError(f"task: expected 'inpaint' or 'sr', got {task!r}")
