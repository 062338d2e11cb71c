"""Residual parametrization: the push-pull fill and ``D(u) = base + D_r(u - base)``, in sampling,
training and loading."""

import pytest
import torch

from tests.helpers import assert_close
from tests.models.tiny import scheduler, tiny_unet
from warped_fast.models import DiffusersDenoiser, load_model
from warped_fast.models.residual import push_pull_fill, residual_base


def _mask(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, h, w, generator=g) < 0.4).float()


@pytest.mark.parametrize("shape", [(1, 3, 17, 29), (3, 1, 8, 8), (2, 4, 1, 5)])
def test_fill_keeps_known_pixels_and_stays_in_their_range(shape):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g)
    m = _mask(shape[0], *shape[2:])
    m[:, :, 0, 0] = 0  # at least one known pixel per frame
    y = push_pull_fill(x, m)
    assert y.shape == x.shape
    assert torch.equal(y * (1 - m), x * (1 - m))
    # Each filled value is a convex combination of known values.
    known = x.masked_fill(m.bool(), float("nan"))
    lo = known.flatten(2).nan_to_num(float("inf")).amin(2)[..., None, None]
    hi = known.flatten(2).nan_to_num(float("-inf")).amax(2)[..., None, None]
    assert bool(((y >= lo - 1e-6) & (y <= hi + 1e-6)).all())


def test_fill_reproduces_constants_and_smooth_ramps():
    m = torch.zeros(1, 1, 32, 32)
    m[..., 10:20, 12:22] = 1
    c = torch.full((1, 2, 32, 32), 0.3)
    assert_close(push_pull_fill(c, m), c, atol=1e-6, what="constant")
    ramp = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32)
    err = (push_pull_fill(ramp, m) - ramp).abs().max()
    assert err < 0.2, f"ramp fill error {err:.3f}"  # vs 1.0 for a zero fill of this hole
    assert torch.equal(push_pull_fill(c, torch.ones(1, 1, 32, 32)), torch.zeros_like(c))


def test_fill_bad_inputs():
    with pytest.raises(ValueError, match="mask"):
        push_pull_fill(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        push_pull_fill(torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match="residual"):
        residual_base("none", torch.zeros(1, 3, 8, 8), 3)


@pytest.mark.parametrize("kind,k", [("inpaint", 1.0), ("sr", 1.0), ("inpaint", 3.0), ("sr", 4.0)])
def test_residual_denoiser_is_base_plus_plain_denoiser_of_the_residual(kind, k):
    c = 3
    cc = c + 1 if kind == "inpaint" else c
    unet = tiny_unet(in_channels=c + cc, out_channels=c)
    sch = scheduler("v_prediction")
    plain = DiffusersDenoiser(unet, scheduler=sch)
    res = DiffusersDenoiser(unet, scheduler=sch, residual=True, residual_scale=k)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, c, 16, 16, generator=g)
    cond = torch.randn(2, cc, 16, 16, generator=g)
    if kind == "inpaint":
        cond[:, :1] = _mask(2, 16, 16)
    sigma = torch.tensor([0.5, 7.0])
    base = residual_base(kind, cond, c)
    with torch.no_grad():
        want = base + plain(k * (u - base), k * sigma, cond) / k
        assert_close(res(u, sigma, cond), want, atol=1e-5, what=kind)
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
