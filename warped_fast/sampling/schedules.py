"""Noise-level (sigma) schedules for the EDM Euler ODE sampler (method section 4).

Sigmas are descending and end with 0. Diffusers models also need the model timestep of each sigma;
:class:`SigmaSchedule` carries both, exactly as the matching diffusers scheduler computes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..ops._checks import check_int


@dataclass(frozen=True)
class SigmaSchedule:
    """A sampling schedule.

    Attributes:
        sigmas: ``[S + 1]`` float64, descending, ``sigmas[-1] == 0``.
        timesteps: optional ``[S]`` model timesteps of ``sigmas[:-1]`` (diffusers models).
    """

    sigmas: torch.Tensor
    timesteps: torch.Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.sigmas, torch.Tensor):  # a list or an array of levels
            object.__setattr__(self, "sigmas", torch.as_tensor(np.asarray(self.sigmas, dtype=np.float64)))
        if self.timesteps is not None and not isinstance(self.timesteps, torch.Tensor):
            object.__setattr__(self, "timesteps", torch.as_tensor(np.asarray(self.timesteps)))
        s = self.sigmas
        if not s.is_floating_point() or not bool(torch.isfinite(s).all()):
            raise ValueError("sigmas: expected finite floating-point levels")
        if s.dim() != 1 or s.numel() < 2:
            raise ValueError(f"sigmas: expected a 1-D tensor of at least 2 levels, got shape {list(s.shape)}")
        if not bool((s[:-1] > 0).all()) or not bool((s[1:] <= s[:-1]).all()) or float(s[-1]) < 0:
            raise ValueError("sigmas: expected positive, non-increasing levels ending at >= 0")
        if self.timesteps is not None and self.timesteps.shape != (s.numel() - 1,):
            raise ValueError(f"timesteps: expected shape [{s.numel() - 1}], got {list(self.timesteps.shape)}")

    @property
    def num_steps(self) -> int:
        return self.sigmas.numel() - 1

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[0])


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the sigmas and flows a sampler uses beside samples of ``dtype``: float64 for float64
    samples (a float64 run stays float64 throughout), else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) schedule: ``[S + 1]`` float64, ending with 0."""
    check_int("num_steps", num_steps, 1)
    if not 0 < sigma_min < sigma_max < math.inf:
        raise ValueError(f"expected finite 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if not 0 < rho < math.inf:
        raise ValueError(f"rho: expected a finite number > 0, got {rho}")
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    s = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([s, s.new_zeros(1)])


def sigmas_of_alphas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Training sigmas of a discrete-time model: ``sqrt((1 - a) / a)``, ``[T_train]`` float64."""
    a = alphas_cumprod.to(torch.float64)
    return ((1 - a) / a).sqrt()


def timesteps_for_sigmas(sigmas: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Continuous model timesteps of arbitrary sigmas, by interpolation in log sigma
    (the same rule as diffusers' ``EulerDiscreteScheduler._sigma_to_t``). Float64, on the sigmas'
    device (the CPU for MPS, which has no float64), copying ``alphas_cumprod`` there:
    :func:`timesteps_from_log_sigmas` takes the log sigmas copied once."""
    return timesteps_from_log_sigmas(sigmas, log_training_sigmas(alphas_cumprod, sigmas.device))


def log_training_sigmas(alphas_cumprod: torch.Tensor, device) -> torch.Tensor:
    """``log`` of :func:`sigmas_of_alphas` ``[T_train]`` (float64, ascending) on ``device``, or on the CPU
    for MPS (no float64 there)."""
    dev = torch.device("cpu") if torch.device(device).type == "mps" else device
    return sigmas_of_alphas(alphas_cumprod).log().to(dev)


def timesteps_from_log_sigmas(sigmas: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """:func:`timesteps_for_sigmas` given :func:`log_training_sigmas` on a device: computed there, with no
    host synchronization."""
    log_sigma = sigmas.detach().to(log_sigmas.device, torch.float64).clamp_min(1e-10).log().reshape(-1)
    dists = log_sigma[None, :] - log_sigmas[:, None]
    low = (dists >= 0).cumsum(0).argmax(0).clamp(max=log_sigmas.shape[0] - 2)  # argmax: first maximum
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
    return ((1 - w) * low + w * (low + 1)).reshape(sigmas.shape)


def diffusers_schedule(scheduler, num_steps: int) -> SigmaSchedule:
    """The sigmas and timesteps a diffusers Euler-type scheduler uses for ``num_steps`` steps.

    Args:
        scheduler: e.g. ``EulerDiscreteScheduler`` (any scheduler exposing ``sigmas`` and
            ``timesteps`` after ``set_timesteps``).
    """
    if not hasattr(scheduler, "sigmas"):
        raise ValueError(
            f"scheduler: an Euler-type scheduler with sigmas (e.g. EulerDiscreteScheduler) is needed, "
            f"got {type(scheduler).__name__}"
        )
    scheduler.set_timesteps(num_steps)
    sig = torch.as_tensor(np.asarray(scheduler.sigmas, dtype=np.float64))
    ts = torch.as_tensor(np.asarray(scheduler.timesteps, dtype=np.float64))
    if sig.numel() != num_steps + 1 or ts.numel() != num_steps:
        raise ValueError(
            f"scheduler: expected {num_steps + 1} sigmas and {num_steps} timesteps for {num_steps} steps, got "
            f"{sig.numel()} and {ts.numel()}"
        )
    ac = getattr(scheduler, "alphas_cumprod", None)
    if num_steps == 1 and ac is not None:  # e.g. a "leading"/"linspace" spacing starts low
        mid = float(sigmas_of_alphas(torch.as_tensor(ac))[(len(ac) - 1) // 2])
        if float(sig[0]) < mid:
            raise ValueError(
                f"num_inference_steps: 1 step of this scheduler starts at sigma {float(sig[0]):.3g}, below the "
                f"training sigma {mid:.3g} of the middle timestep (timestep_spacing "
                f"{getattr(scheduler.config, 'timestep_spacing', '?')!r}), nearly denoised; use 2 or more "
                "steps, or a 'trailing' spacing"
            )
    return SigmaSchedule(sig, ts)
