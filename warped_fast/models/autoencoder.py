"""Autoencoders between frames ``[T, 3, H, W]`` in [0, 1] and the denoiser's space ``[T, C, H/f, W/f]``:
a diffusers ``AutoencoderKL`` (SD/SDXL VAEs, f = 8) or the identity for pixel-space models (f = 1,
values in [-1, 1]). Encoding and decoding run in chunks of frames."""

from __future__ import annotations

import torch


class IdentityAutoencoder:
    """Pixel space: latent = 2 x - 1."""

    factor = 1
    latent_channels = 3

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return frames * 2 - 1

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents + 1) / 2).clamp(0, 1)


class DiffusersVAE:
    """A diffusers ``AutoencoderKL``; latents are scaled by ``config.scaling_factor`` (and shifted by
    ``shift_factor`` when the config has one). Encoding takes the posterior mode (deterministic).

    A float16 VAE whose config sets ``force_upcast`` (the SDXL VAE, which overflows in float16) runs in
    float32, as diffusers' pipelines do.

    Args:
        vae: the model. chunk: frames per encode/decode call.
    """

    def __init__(self, vae, chunk: int = 4):
        cfg = vae.config
        if next(vae.parameters()).dtype == torch.float16 and getattr(cfg, "force_upcast", False):
            vae = vae.to(torch.float32)
        self.vae, self.chunk = vae.eval().requires_grad_(False), chunk
        self.factor = 2 ** (len(cfg.block_out_channels) - 1)
        self.latent_channels = cfg.latent_channels
        self.scale = float(getattr(cfg, "scaling_factor", 1.0) or 1.0)
        self.shift = float(getattr(cfg, "shift_factor", 0.0) or 0.0)

    @property
    def _dtype(self):
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        out = []
        for c in range(0, frames.shape[0], self.chunk):
            x = frames[c : c + self.chunk].to(self._dtype) * 2 - 1
            z = self.vae.encode(x).latent_dist.mode()
            out.append(((z - self.shift) * self.scale).float())
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        out = []
        for c in range(0, latents.shape[0], self.chunk):
            z = latents[c : c + self.chunk] / self.scale + self.shift
            out.append(((self.vae.decode(z.to(self._dtype)).sample.float() + 1) / 2).clamp(0, 1))
        return torch.cat(out)
