"""Analytic denoisers: exact x0-predictors of stationary Gaussian priors, for tests and benchmarks.

For ``x ~ N(0, Sigma)`` with Sigma circulant (power spectrum P) and ``u = x + sigma n``, the exact
denoiser is ``D(u) = F^-1[P / (P + sigma^2) F u]``: linear and equivariant to circular shifts.
"""

from __future__ import annotations

import math

import torch


class GaussianPriorDenoiser(torch.nn.Module):
    """Exact denoiser of a stationary Gaussian prior with an RBF-shaped power spectrum.

    Args:
        lengthscale: prior correlation length in pixels (the spectrum is ``exp(-|k|^2 l^2 / 2)``,
            scaled so the prior has unit variance).
        channels: C (channels are independent).
    """

    def __init__(self, lengthscale: float = 2.0, channels: int = 4):
        super().__init__()
        self.lengthscale, self.channels = float(lengthscale), channels

    def spectrum(self, h: int, w: int, device) -> torch.Tensor:
        """Power spectrum on the ``rfft2`` grid ``[h, w // 2 + 1]``, normalized to unit prior variance."""
        ky = torch.fft.fftfreq(h, device=device, dtype=torch.float64) * 2 * math.pi
        kx = torch.fft.fftfreq(w, device=device, dtype=torch.float64) * 2 * math.pi
        full = torch.exp(-0.5 * (ky.view(-1, 1) ** 2 + kx.view(1, -1) ** 2) * self.lengthscale**2)
        return full[:, : w // 2 + 1] * (h * w / full.sum())

    def forward(self, u: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``u`` ``[B, C, H, W]``, ``sigma`` ``[B]`` -> ``[B, C, H, W]``."""
        h, w = u.shape[-2:]
        p = self.spectrum(h, w, u.device)
        s2 = sigma.double().view(-1, 1, 1, 1) ** 2
        filt = (p / (p + s2)).to(u.dtype)
        return torch.fft.irfft2(torch.fft.rfft2(u) * filt, s=(h, w))
