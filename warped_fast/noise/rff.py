"""Gaussian-process noise with an RBF kernel, sampled by random Fourier features (method section 2).

``xi_c(x) = sqrt(2 / J) * sum_j w_cj cos(<z_cj, x> + b_cj)``, ``w ~ N(0, 1)``, ``b ~ U(0, 2 pi)``,
``z ~ N(0, I / l^2)`` truncated at radius ``truncation / l`` (anti-aliasing). ``Var xi(x) = 1`` at
every point of the plane, and the field can be evaluated exactly at any real coordinate.

A draw of J features spans at most a J-dimensional subspace per channel: ample at the paper's
128x128 latents with J = 3000; on much larger grids raise J or expect visible structure.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from ..ops import gp_noise
from ..ops._checks import check_int
from ..reference._bilinear import pixel_grid

# The paper's lengthscale l = 2 / (pi * resolution) in [0, 1]^2 coordinates is 2 / pi latent pixels.
PAPER_LENGTHSCALE_PX = 2.0 / math.pi


@dataclass(frozen=True)
class RFFConfig:
    """Settings of the RFF GP noise field.

    Attributes:
        channels: C, noise channels (4 for SDXL latents).
        num_features: J, random features per channel (paper: 3000).
        lengthscale: RBF lengthscale l in pixels of the grid the field is evaluated on.
        truncation: spectrum truncated at radius ``truncation / l`` (paper: 2).
        shared_features: share (z, b) across channels and draw w per channel: channels stay
            uncorrelated with the same kernel and the cost drops C-fold. Default: independent.
    """

    channels: int = 4
    num_features: int = 3000
    lengthscale: float = PAPER_LENGTHSCALE_PX
    truncation: float = 2.0
    shared_features: bool = False

    def __post_init__(self):
        check_int("channels", self.channels, 1)
        check_int("num_features", self.num_features, 1)
        real = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)  # noqa: E731
        if not (real(self.lengthscale) and self.lengthscale > 0 and math.isfinite(self.lengthscale)):
            raise ValueError(f"lengthscale: expected a finite value > 0 (pixels), got {self.lengthscale!r}")
        if not (real(self.truncation) and self.truncation > 0):
            raise ValueError(f"truncation: expected a value > 0, got {self.truncation!r}")
        if not isinstance(self.shared_features, bool):
            raise TypeError(f"shared_features: expected a bool, got {type(self.shared_features).__name__}")


def _generator(seed_or_generator) -> torch.Generator:
    if isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator
    seed = 0 if seed_or_generator is None else seed_or_generator
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not -(2**63) <= int(seed) < 2**64:
        raise ValueError(
            f"generator: expected a torch.Generator or a 64-bit int seed, got {seed_or_generator!r}"
        )
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


@dataclass(frozen=True)
class RFFField:
    """One draw of the RFF field: evaluate it at any coordinates with :meth:`__call__`.

    Attributes:
        z: ``[Cz, J, 2]`` frequencies (radians per pixel), Cz = C or 1 (shared).
        b: ``[Cz, J]`` phases.
        w: ``[C, J]`` weights.
        config: the settings it was drawn with.
    """

    z: torch.Tensor
    b: torch.Tensor
    w: torch.Tensor
    config: RFFConfig

    @classmethod
    def sample(cls, config: RFFConfig = RFFConfig(), generator=None, device=None) -> RFFField:
        """Draw (z, b, w) on the CPU from ``generator`` (a torch.Generator or an int seed), then move
        them to ``device``: the same seed gives the same field on every device."""
        g = _generator(generator)
        c, j = config.channels, config.num_features
        cz = 1 if config.shared_features else c
        # Radius of a 2D Gaussian truncated at T std: inverse CDF of the truncated Rayleigh law.
        u = torch.rand(cz, j, generator=g, dtype=torch.float64)
        tail = 1.0 - math.exp(-0.5 * config.truncation**2)
        radius = torch.sqrt(-2.0 * torch.log1p(-u * tail)) / config.lengthscale
        angle = torch.rand(cz, j, generator=g, dtype=torch.float64) * (2 * math.pi)
        z = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), -1)
        b = torch.rand(cz, j, generator=g, dtype=torch.float64) * (2 * math.pi)
        w = torch.randn(c, j, generator=g, dtype=torch.float64)
        return cls(*(t.to(device=device, dtype=torch.float32) for t in (z, b, w)), config=config)

    @property
    def channels(self) -> int:
        return self.w.shape[0]

    def to(self, device) -> RFFField:
        return RFFField(self.z.to(device), self.b.to(device), self.w.to(device), self.config)

    def __call__(self, coords: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Evaluate at ``coords`` ``[N, H, W, 2]`` (pixels) -> ``[N, C, H, W]``."""
        return gp_noise(coords, self.z, self.b, self.w, dtype=dtype)

    def on_grid(self, h: int, w: int, offset=(0.0, 0.0), dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The field on the pixel grid of an ``h x w`` frame shifted by ``offset`` -> ``[1, C, h, w]``."""
        return self(identity_coords(h, w, device=self.w.device, offset=offset), dtype=dtype)


def identity_coords(h: int, w: int, n: int = 1, device=None, offset=(0.0, 0.0)) -> torch.Tensor:
    """Pixel-centre coordinates ``[n, h, w, 2]``: ``[..., i, j, :] = (j, i) + offset``."""
    xs, ys = pixel_grid(h, w, device)
    g = torch.stack((xs + offset[0], ys + offset[1]), -1)
    return g.unsqueeze(0).expand(n, h, w, 2).contiguous()


def truncated_rbf_kernel(dist, lengthscale: float, truncation: float = 2.0) -> np.ndarray:
    """Covariance ``E[cos(<z, d>)]`` of the field at distance ``|d|`` (pixels), for the truncated spectrum.

    Without truncation this is the RBF kernel ``exp(-|d|^2 / (2 l^2))``; truncation at radius T / l
    changes it slightly. Numerical quadrature over the radius and angle of z.
    """
    d = np.atleast_1d(np.asarray(dist, dtype=np.float64))
    r = np.linspace(0.0, truncation / lengthscale, 4001)
    dens = r * lengthscale**2 * np.exp(-0.5 * (r * lengthscale) ** 2)
    dens /= np.trapezoid(dens, r)
    theta = np.linspace(0.0, np.pi, 1025)
    # J0(x) = (1/pi) * int_0^pi cos(x cos t) dt
    j0 = (
        np.trapezoid(np.cos(np.multiply.outer(np.multiply.outer(d, r), np.cos(theta))), theta, axis=-1)
        / np.pi
    )
    return np.trapezoid(j0 * dens, r, axis=-1)
