"""Autoencoders between frames ``[T, 3, H, W]`` in [0, 1] and the denoiser's space ``[T, C, H/f, W/f]``:
a diffusers ``AutoencoderKL`` (SD/SDXL VAEs, f = 8) or the identity for pixel-space models (f = 1,
values in [-1, 1]). Encoding and decoding run in chunks of frames."""

from __future__ import annotations

import copy

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
    """A diffusers ``AutoencoderKL``; latents are normalized as diffusers' pipelines do:
    ``(z - mean) * scaling_factor / std`` with the config's per-channel ``latents_mean`` /
    ``latents_std`` when it has both (SDXL-class VAEs such as Playground v2.5's), else
    ``(z - shift_factor) * scaling_factor``. Encoding takes the posterior mode (deterministic).

    A float16 VAE whose config sets ``force_upcast`` (the SDXL VAE, which overflows in float16) runs in
    float32, as diffusers' pipelines do, on a float32 copy: the given module is left as it is.

    Args:
        vae: the model. chunk: frames per encode/decode call.
    """

    def __init__(self, vae, chunk: int = 4):
        cfg = vae.config
        if next(vae.parameters()).dtype == torch.float16 and getattr(cfg, "force_upcast", False):
            vae = copy.deepcopy(
                vae
            ).float()  # not .to(dtype): diffusers warns there even with nothing to keep
        self.vae, self.chunk = vae.eval(), chunk
        self.factor = 2 ** (len(cfg.block_out_channels) - 1)
        self.latent_channels = cfg.latent_channels
        self.scale = float(getattr(cfg, "scaling_factor", 1.0) or 1.0)
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
            for name, v in (("latents_mean", self.mean), ("latents_std", self.std)):
                if v.shape[1] != self.latent_channels:
                    raise ValueError(
                        f"vae: config.{name} has {v.shape[1]} entries for {self.latent_channels} channels"
                    )
        else:
            self.mean = torch.full((1, 1, 1, 1), float(getattr(cfg, "shift_factor", 0.0) or 0.0))
            self.std = torch.ones(1, 1, 1, 1)

    @property
    def _dtype(self):
        return next(self.vae.parameters()).dtype

    @property
    def _device(self):
        return next(self.vae.parameters()).device

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``[T, 3, H, W]`` in [0, 1] (any device) -> normalized latents ``[T, C, H / f, W / f]`` float32 on
        the VAE's device."""
        out = []
        for c in range(0, frames.shape[0], self.chunk):
            x = frames[c : c + self.chunk].to(self._device, self._dtype) * 2 - 1
            z = self.vae.encode(x).latent_dist.mode().float()
            out.append((z - self.mean.to(z.device)) * self.scale / self.std.to(z.device))
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents ``[T, C, h, w]`` (any device) -> frames ``[T, 3, h f, w f]`` in [0, 1] float32 on
        the VAE's device."""
        out = []
        for c in range(0, latents.shape[0], self.chunk):
            z = latents[c : c + self.chunk].to(self._device, torch.float32)
            z = z * self.std.to(z.device) / self.scale + self.mean.to(z.device)
            out.append(((self.vae.decode(z.to(self._dtype)).sample.float() + 1) / 2).clamp(0, 1))
        return torch.cat(out)
