"""Residual parametrization ``D(u) = base + D_r(u - base)``, in sampling, training and loading."""

import pytest
import torch

from tests.helpers import assert_close
from tests.models.tiny import scheduler, tiny_unet
from warped_fast.models import DiffusersDenoiser, load_model
from warped_fast.models.residual import (
    CONTRAST_FLOOR,
    CONTRAST_REF,
    contrast,
    residual_base,
    residual_frame,
)


def _mask(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, h, w, generator=g) < 0.4).float()


def test_residual_base_bad_inputs():
    with pytest.raises(ValueError, match="residual"):
        residual_base("none", torch.zeros(1, 3, 8, 8), 3)
    with pytest.raises(ValueError, match="fill"):
        residual_base("inpaint", torch.zeros(1, 4, 8, 8), 3, fill="telea")


@pytest.mark.parametrize(
    "kind,k,fill",
    [
        ("inpaint", 1.0, "push_pull"),
        ("sr", 1.0, "push_pull"),
        ("inpaint", 3.0, "harmonic"),
        ("sr", 4.0, "harmonic"),
    ],
)
def test_residual_denoiser_is_base_plus_plain_denoiser_of_the_residual(kind, k, fill):
    c = 3
    cc = c + 1 if kind == "inpaint" else c
    unet = tiny_unet(in_channels=c + cc, out_channels=c)
    sch = scheduler("v_prediction")
    plain = DiffusersDenoiser(unet, scheduler=sch)
    res = DiffusersDenoiser(unet, scheduler=sch, residual=True, residual_scale=k, residual_fill=fill)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, c, 16, 16, generator=g)
    cond = torch.randn(2, cc, 16, 16, generator=g)
    if kind == "inpaint":
        cond[:, :1] = _mask(2, 16, 16)
    sigma = torch.tensor([0.5, 7.0])
    base = residual_base(kind, cond, c, fill)
    with torch.no_grad():
        want = base + plain(k * (u - base), k * sigma, cond) / k
        assert_close(res(u, sigma, cond), want, atol=1e-5, what=kind)
        # the conditioning's base comes from the cache on a repeat, also re-batched
        assert_close(res(u.flip(0), sigma.flip(0), cond.flip(0)), want.flip(0), atol=1e-5, what="cached")
    # Guidance differentiates through it: the input gradient is the plain one at k (u - base).
    u1 = u.clone().requires_grad_(True)
    u2 = (k * (u - base)).requires_grad_(True)
    res(u1, sigma, cond).square().sum().backward()
    (base + plain(u2, k * sigma, cond) / k).square().sum().backward()
    assert_close(u1.grad, k * u2.grad, atol=1e-4, what="input gradient")


@pytest.mark.parametrize("k", [1.0, 4.0])
def test_residual_schedule_covers_the_trained_range_in_image_units(k):
    """The network sees ``k sigma``: a residual model's schedule is the scheduler's divided by ``k``,
    with the scheduler's own timesteps, and the denoiser uses exactly those timesteps."""
    from warped_fast.sampling import diffusers_schedule

    sch = scheduler("v_prediction")
    unet = tiny_unet(in_channels=6, out_channels=3)
    plain = DiffusersDenoiser(unet, scheduler=sch)
    res = DiffusersDenoiser(unet, scheduler=sch, residual=True, residual_scale=k)
    want = diffusers_schedule(sch, 7)
    got = res.sampling_schedule(7)
    assert_close(got.sigmas * k, want.sigmas, atol=1e-9, what="sigmas")
    assert torch.equal(got.timesteps, want.timesteps)
    res.set_schedule(got)
    plain.set_schedule(want)
    assert torch.equal(res.timesteps(got.sigmas[:-1] * k), plain.timesteps(want.sigmas[:-1]))
    assert torch.equal(res.timesteps(got.sigmas[:-1] * k), want.timesteps.double())


def test_residual_needs_a_task_layout_and_a_positive_scale():
    with pytest.raises(ValueError, match="residual"):
        DiffusersDenoiser(tiny_unet(), scheduler=scheduler("epsilon"), residual=True)
    with pytest.raises(ValueError, match="residual_scale"):
        DiffusersDenoiser(tiny_unet(7, 3), scheduler=scheduler("epsilon"), residual=True, residual_scale=0)
    with pytest.raises(ValueError, match="residual_fill"):
        DiffusersDenoiser(tiny_unet(7, 3), scheduler=scheduler("epsilon"), residual=True, residual_fill="x")


def test_trained_residual_flag_travels_with_the_model(tmp_path):
    from warped_fast.train import TrainConfig, Trainer

    cfg = TrainConfig(task="sr", output_dir=str(tmp_path / "run"), resolution=16, batch_size=2, steps=1,
                      model={"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8},
                      num_features=64, residual=True, residual_scale=4.0, progress=False)  # fmt: skip
    tr = Trainer(cfg)
    x, cond, noise, t = tr.batch()
    # The training target is the residual: the loss equals a plain model's loss on x - base.
    plain = Trainer(TrainConfig(**{**cfg.__dict__, "residual": False, "output_dir": str(tmp_path / "p")}))
    plain.unet.load_state_dict(tr.unet.state_dict())
    with torch.no_grad():
        want = plain.loss(4.0 * (x - cond), cond, noise, t)
        assert_close(tr.loss(x, cond, noise, t), want, atol=1e-6, what="loss")
    folder = tr.export(tmp_path / "model")
    m = load_model(folder)
    assert m.residual and m.residual_scale == 4.0 and not load_model(folder, residual=False).residual
    assert not m.residual_normalize and m.residual_fill == "push_pull"


def _inpaint_cond(x, mask):
    return torch.cat([mask, x * (1 - mask)], 1)


def test_contrast_is_measured_on_the_known_ring_around_the_hole():
    """A hole in a flat part of a busy crop has the flat part's contrast (clamped at the floor), not
    the crop's; no hole: all known pixels; no known pixel: the reference."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    x[..., 8:24, 8:24] = 0.25  # flat block
    x[..., 14:18, 14:18] += 0.01 * torch.randn(1, 3, 4, 4, generator=g)
    m = torch.zeros(1, 1, 32, 32)
    m[..., 13:19, 13:19] = 1  # hole inside the block: its 2-px ring is flat
    c, mean = contrast("inpaint", _inpaint_cond(x, m), 3)
    assert float(c) == pytest.approx(CONTRAST_FLOOR) and torch.allclose(mean, torch.full((1, 3, 1, 1), 0.25))
    m2 = torch.zeros(1, 1, 32, 32)
    m2[..., 2:6, 2:6] = 1  # hole in the busy part
    assert float(contrast("inpaint", _inpaint_cond(x, m2), 3)[0]) > 0.3
    none = contrast("inpaint", _inpaint_cond(x, torch.zeros_like(m)), 3)[0]
    assert_close(none, x.std((2, 3), unbiased=False).square().mean(1).sqrt(), atol=1e-6, what="no hole")
    full = contrast("inpaint", _inpaint_cond(x, torch.ones_like(m)), 3)[0]
    assert float(full) == pytest.approx(CONTRAST_REF)


@pytest.mark.parametrize("kind", ["inpaint", "sr"])
def test_normalized_frame_is_invariant_to_intensity_affinity(kind):
    """Contrast normalization: what the network sees (the scaled residual and its conditioning) does
    not change when the image is multiplied by a > 0 and shifted (contrast above the floor)."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 24, 20, generator=g) * 2 - 1
    m = _mask(3, 24, 20, seed=3)

    def frame(img):
        cond = _inpaint_cond(img, m) if kind == "inpaint" else img
        base, gain, net_cond = residual_frame(kind, cond, 3, 3.0, normalize=True)
        return (img - base) * gain.view(-1, 1, 1, 1), net_cond, gain

    r1, c1, g1 = frame(x)
    r2, c2, g2 = frame(0.3 * x - 0.2)
    assert_close(r2, r1, atol=1e-5, what="scaled residual")
    assert_close(c2, c1, atol=1e-5, what="network conditioning")
    assert_close(g2, g1 / 0.3, atol=0, rtol=1e-5, what="gain")
    base, gain, cond = residual_frame(kind, x if kind == "sr" else _inpaint_cond(x, m), 3, 3.0)
    assert torch.equal(gain, torch.full((3,), 3.0))  # not normalized: the plain scale, cond as is


def test_normalized_residual_denoiser_is_equivariant_and_differentiable():
    """D(a u + b, a sigma | a-scaled cond) = a D(u, sigma | cond) + b, gradients included."""
    unet = tiny_unet(in_channels=7, out_channels=3)
    res = DiffusersDenoiser(unet, scheduler=scheduler("v_prediction"), residual=True, residual_scale=3.0,
                            residual_normalize=True)  # fmt: skip
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    m = _mask(2, 16, 16, seed=5)
    u = x + 0.5 * torch.randn(2, 3, 16, 16, generator=g)
    sigma = torch.tensor([0.5, 3.0])
    a, b = 0.4, 0.1
    u1, u2 = u.clone().requires_grad_(True), (a * u + b).requires_grad_(True)
    d1 = res(u1, sigma, _inpaint_cond(x, m))
    d2 = res(u2, a * sigma, _inpaint_cond(a * x + b, m))
    assert_close(d2, a * d1 + b, atol=1e-5, what="D")
    d1.square().sum().backward()
    ((d2 - b) / a).square().sum().backward()
    assert_close(u2.grad * a, u1.grad, atol=1e-4, what="input gradient")
    with pytest.raises(ValueError, match="residual_normalize"):
        DiffusersDenoiser(unet, scheduler=scheduler("v_prediction"), residual_normalize=True)


def test_normalized_residual_training_and_loading(tmp_path):
    from warped_fast.train import TrainConfig, Trainer

    with pytest.raises(ValueError, match="residual_normalize"):
        TrainConfig(residual_normalize=True)
    with pytest.raises(ValueError, match="residual_fill"):
        TrainConfig(residual=True, residual_fill="nearest")
    cfg = TrainConfig(task="inpaint", output_dir=str(tmp_path / "run"), resolution=16, batch_size=2, steps=1,
                      model={"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8},
                      num_features=64, residual=True, residual_scale=3.0, residual_normalize=True,
                      residual_fill="harmonic", progress=False)  # fmt: skip
    tr = Trainer(cfg)
    x, cond, noise, t = tr.batch()
    base, gain, net_cond = residual_frame("inpaint", cond, 3, 3.0, normalize=True, fill="harmonic")
    plain = Trainer(TrainConfig(**{**cfg.__dict__, "residual": False, "residual_normalize": False,
                                   "output_dir": str(tmp_path / "p")}))  # fmt: skip
    plain.unet.load_state_dict(tr.unet.state_dict())
    with torch.no_grad():  # the loss is a plain model's on the normalized residual and conditioning
        want = plain.loss((x - base) * gain.view(-1, 1, 1, 1), net_cond, noise, t)
        assert_close(tr.loss(x, cond, noise, t), want, atol=1e-6, what="loss")
    m = load_model(tr.export(tmp_path / "model"))
    assert m.residual and m.residual_normalize and m.residual_fill == "harmonic"
