"""Gaussianity of every method's output: per-frame K-S against N(0, 1), per-pixel variance ~ 1 across
seeds, spatial correlation ~ 0 (Moran's I) for the white-noise methods, the RBF shape for GP."""

import pytest
import torch
from scipy import stats

from warped_fast.noise import METHODS, RFFConfig, truncated_rbf_kernel, warp_noise_video

from .common import morans_i, similarity, translation

# Methods whose output is unit-variance Gaussian (bilinear is the known exception, tested separately).
UNIT = ["gp", "fixed", "resample", "nearest", "hiwyn", "infres", "gwtf", "gwtf-up2"]
WHITE = ["fixed", "resample", "hiwyn", "infres", "gwtf", "gwtf-up2"]
VARIANTS = {"gwtf-up2": ("gwtf", {"upsample": 2})}


def _video(name, shape, back, fwd, seed, **opts):
    method, extra = VARIANTS.get(name, (name, {}))
    return warp_noise_video(method, shape, back, fwd, generator=seed, **extra, **opts)


def _flows(method, t, h, w):
    # nearest duplicates pixels under expansion (its known flaw): give it a pure sub-pixel pan.
    if method == "nearest":
        return translation(t, h, w, (0.37, -0.21))
    return similarity(t, h, w)


def test_every_method_is_covered():
    assert {VARIANTS.get(m, (m,))[0] for m in UNIT} | {"bilinear"} == set(METHODS)


@pytest.mark.parametrize("method", UNIT)
def test_ks_per_frame(method):
    t, c, h, w = 4, 4, 48, 48
    back, fwd = _flows(method, t, h, w)
    v = _video(method, (c, h, w), back, fwd, 5)
    assert v.shape == (t, c, h, w) and v.dtype == torch.float32
    step = 3 if method == "gp" else 1  # GP neighbours are correlated (~0.3); lag 3 is ~independent
    for j in range(t):
        x = v[j, :, ::step, ::step].flatten().double().numpy()
        p = stats.kstest(x, "norm").pvalue
        assert p > 1e-3, f"{method} frame {j}: K-S p-value {p:.2e} (mean {x.mean():.3f}, var {x.var():.3f})"


@pytest.mark.parametrize("method", UNIT)
def test_per_pixel_variance_across_seeds(method):
    n, t, c, h, w = 120, 3, 2, 10, 12
    back, fwd = _flows(method, t, h, w)
    opts = {"rff": RFFConfig(num_features=1000)} if method == "gp" else {}
    draws = torch.stack([_video(method, (c, h, w), back, fwd, s, **opts) for s in range(n)])
    var = draws.double().var(0)  # [t, c, h, w]
    mean = draws.double().mean(0)
    # 120 draws: a per-pixel variance has sd ~0.13, a per-pixel mean sd ~0.09.
    assert abs(var.mean().item() - 1) < 0.05, f"{method}: mean per-pixel variance {var.mean():.4f}"
    assert var.min() > 0.5 and var.max() < 1.6, (
        f"{method}: per-pixel variance {var.min():.3f}..{var.max():.3f}"
    )
    assert mean.abs().max() < 0.45, f"{method}: per-pixel mean up to {mean.abs().max():.3f}"


@pytest.mark.parametrize("method", WHITE + ["nearest"])
def test_white_methods_spatially_uncorrelated(method):
    t, c, h, w = 4, 4, 64, 64
    back, fwd = _flows(method, t, h, w)
    v = _video(method, (c, h, w), back, fwd, 11)
    vals = torch.tensor([morans_i(v[j, ci]) for j in range(t) for ci in range(c)])
    # White noise: E[I] ~ -1/N, sd ~ 1/sqrt(2 h w) ~ 0.011 per frame and channel.
    assert vals.abs().max() < 0.05, f"{method}: Moran's I per frame/channel {vals.tolist()}"
    assert abs(vals.mean().item()) < 0.015, f"{method}: mean Moran's I {vals.mean():.4f}"


def test_nearest_duplicates_under_expansion():
    # The documented flaw: with a magnifying flow, nearest copies pixels, so neighbours correlate.
    back, fwd = similarity(3, 64, 64, scale=0.8)
    v = warp_noise_video("nearest", (2, 64, 64), back, fwd, generator=0)
    assert morans_i(v[2, 0]) > 0.1


@pytest.mark.parametrize("shared", [False, True])
def test_gp_keeps_rbf_correlation(shared):
    cfg = RFFConfig(num_features=3000, shared_features=shared)
    h = w = 40
    back, fwd = translation(3, h, w, (0.37, -0.21))
    v = torch.cat([warp_noise_video("gp", (4, h, w), back, generator=s, rff=cfg)[1:] for s in range(8)])
    v = v.double()  # [16, 4, h, w]
    lags = {(1, 0): 1.0, (0, 1): 1.0, (1, 1): 2**0.5, (2, 0): 2.0}
    expected = truncated_rbf_kernel(list(lags.values()), cfg.lengthscale)
    for (dx, dy), e in zip(lags, expected, strict=True):
        a = v[..., : h - dy, : w - dx].flatten()
        b = v[..., dy:, dx:].flatten()
        corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        assert abs(corr - e) < 0.03, f"lag {(dx, dy)}: corr {corr:.4f} vs kernel {e:.4f}"
    # and a white-noise method on the same pan does not have it (the kernel is ~0.39 at lag 1)
    assert expected[0] > 0.2
    wv = torch.cat(
        [warp_noise_video("hiwyn", (4, h, w), back, fwd, generator=s)[1:] for s in range(8)]
    ).double()
    corr = torch.corrcoef(torch.stack([wv[..., :, :-1].flatten(), wv[..., :, 1:].flatten()]))[0, 1].item()
    assert abs(corr) < 0.05, f"hiwyn lag-1 correlation {corr:.3f}"
