"""gp_noise: fast paths against the reference, the field's distribution, pull-back, bad inputs."""

import importlib
import math

import numpy as np
import pytest
import torch
from scipy import stats

import warped_fast as wf
from tests.helpers import assert_close
from warped_fast import reference
from warped_fast.noise import RFFConfig, RFFField, identity_coords, truncated_rbf_kernel

SHAPES = [(1, 3, 17, 29), (3, 4, 8, 5), (2, 1, 1, 7)]
# (shared features, CUDA kernel): shared fields run on either kernel; independent ones on the FMA kernel.
CUDA_VARIANTS = [(False, "auto"), (True, "fma"), (True, "tensor_cores")]


def _params(c, j, shared, gen):
    field = RFFField.sample(RFFConfig(channels=c, num_features=j, shared_features=shared), gen)
    return field.z, field.b, field.w


def _coords(n, h, w, gen, spread=40.0):
    return identity_coords(h, w, n) + torch.randn(n, h, w, 2, generator=gen) * spread


def _ref_errors(coords, z, b, w):
    r64 = reference.gp_noise(coords.double(), z.double(), b.double(), w.double())
    r32 = reference.gp_noise(coords, z, b, w)
    return r64, (r32.double() - r64).abs().max().item()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("j", [37, 1000])
def test_cpu_matches_reference(shape, shared, j, gen):
    n, c, h, w = shape
    z, b, wt = _params(c, j, shared, gen)
    coords = _coords(n, h, w, gen)
    r64, ref_err = _ref_errors(coords, z, b, wt)
    with wf.use_backend("cpu"):
        out = wf.gp_noise(coords, z, b, wt)
    assert out.shape == (n, c, h, w) and out.dtype == torch.float32
    # float32 phases: at most 2x the float32 reference's distance from float64, plus the 2e-5 floor of
    # float32 phase rounding on few samples.
    assert_close(out, r64, atol=2 * ref_err + 2e-5, what="gp_noise cpu vs float64 reference")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_output(dtype, gen):
    z, b, wt = _params(4, 500, False, gen)
    coords = _coords(1, 9, 13, gen)
    r64, _ = _ref_errors(coords, z, b, wt)
    ref_lp_err = (reference.gp_noise(coords, z, b, wt).to(dtype).double() - r64).abs().max().item()
    out = wf.gp_noise(coords, z, b, wt, dtype=dtype)
    assert out.dtype == dtype
    assert_close(out, r64, atol=2 * ref_lp_err, what=f"gp_noise {dtype}")


def test_noncontiguous_and_float64_coords(gen):
    z, b, wt = _params(2, 64, False, gen)
    coords = _coords(2, 7, 11, gen)
    base = wf.gp_noise(coords, z, b, wt)
    nc = coords.transpose(1, 2).contiguous().transpose(1, 2)  # same values, non-contiguous strides
    assert not nc.is_contiguous()
    assert torch.equal(wf.gp_noise(nc, z, b, wt), base)
    assert_close(wf.gp_noise(coords.double(), z, b, wt), base, atol=0, what="float64 coords")


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_far_spread_coordinates_stay_bounded(shared, backend, gen):
    """Coordinates far apart and far from the origin (phases of up to ~1e12 turns, past float32's
    fractional turns): the field stays within its bound sqrt(2/J) sum_j |w_j|, as the reference does."""
    z, b, wt = _params(2, 256, shared, gen)
    bound = (2.0 / 256) ** 0.5 * wt.abs().sum(-1).max().item()
    for scale in (1e6, 1e9, 1e12, 1e30):
        coords = _coords(1, 8, 8, gen) * scale
        with wf.use_backend(backend):
            out = wf.gp_noise(coords, z, b, wt)
        assert out.isfinite().all() and out.abs().max() <= bound * (1 + 1e-5), (scale, out.abs().max())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_coords_at_an_odd_float_offset(device, gen):
    """Coordinates starting 4 bytes into their buffer (a view at an odd float offset): the CUDA kernels
    read (x, y) as one 8-byte load, so they evaluate an aligned copy; the field is the same."""
    z, b, wt = (t.to(device) for t in _params(3, 50, False, gen))
    coords = _coords(2, 5, 6, gen).to(device)
    odd = torch.empty(coords.numel() + 1, device=device)[1:].view(coords.shape).copy_(coords)
    assert odd.is_contiguous() and odd.data_ptr() % 8 == 4
    assert torch.equal(wf.gp_noise(odd, z, b, wt), wf.gp_noise(coords, z, b, wt))


def test_opcheck(gen):
    z, b, wt = _params(3, 50, False, gen)
    coords = _coords(2, 5, 6, gen)
    op = torch.ops.warped_fast.gp_noise.default
    torch.library.opcheck(op, (coords, z, b, wt))
    torch.library.opcheck(op, tuple(t.clone().requires_grad_() for t in (coords, z, b, wt)))  # autograd
    zs, bs, _ = _params(3, 50, True, gen)
    torch.library.opcheck(op, tuple(t.clone().requires_grad_() for t in (coords, zs, bs, wt)))
    cot = torch.randn(2, 3, 5, 6, generator=gen)
    back = torch.ops.warped_fast.gp_noise_backward.default  # the backward, one opaque op
    for needs in ([True] * 4, [True, False, False, True], [False, True, True, False]):
        torch.library.opcheck(back, (coords, zs, bs, wt, cot, needs))


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(
    "device, backends",
    [("cpu", ("cpu", "reference")), pytest.param("cuda", ("cuda", "reference"), marks=pytest.mark.cuda)],
)
def test_gradients_match_float64_autograd(shared, device, backends, gen):
    """gp_noise is differentiable in coords, z, b and w on every backend (the exact field's derivative,
    reference.gp_noise_vjp, in float64): equal to float64 autograd through the reference, also at
    coordinates 5000 px from the origin, where float32 phases would be ~1e-3 rad off."""
    z, b, wt = _params(3, 37, shared, gen)
    for offset in (0.0, 5000.0):
        coords = _coords(2, 5, 7, gen, spread=3.0) + offset
        cot = torch.randn(2, 3, 5, 7, generator=gen)
        l64 = [t.double().requires_grad_() for t in (coords, z, b, wt)]
        want = torch.autograd.grad(reference.gp_noise(*l64), l64, cot.double())
        for be in backends:
            leaves = [t.to(device).requires_grad_() for t in (coords, z, b, wt)]
            with wf.use_backend(be):
                got = torch.autograd.grad(wf.gp_noise(*leaves), leaves, cot.to(device))
            for name, g, r in zip(("coords", "z", "b", "w"), got, want, strict=True):
                assert g.dtype == torch.float32 and g.device.type == device, name
                assert_close(
                    g, r, atol=2e-6 * r.abs().max().item(), what=f"d/d{name} ({be}, offset {offset})"
                )


def test_gradient_of_some_inputs_only(gen):
    """Only the inputs that require grad get one (the others are not computed); float16 coordinates get
    a float16 gradient."""
    z, b, wt = _params(2, 20, False, gen)
    coords = _coords(1, 4, 6, gen, spread=2.0)
    w1 = wt.clone().requires_grad_()
    out = wf.gp_noise(coords, z, b, w1)
    (gw,) = torch.autograd.grad(out.sum(), w1)
    want = reference.gp_noise_vjp(coords, z, b, wt, torch.ones_like(out), (False, False, False, True))
    assert want[:3] == (None, None, None)
    assert_close(gw, want[3], atol=1e-6, what="d/dw alone")
    c16 = coords.half().requires_grad_()
    (gc,) = torch.autograd.grad(wf.gp_noise(c16, z, b, wt).sum(), c16)
    assert gc.dtype == torch.float16 and gc.shape == c16.shape


def test_mean_and_variance_across_seeds():
    h = w = 8
    draws = torch.stack(
        [RFFField.sample(RFFConfig(channels=4, num_features=3000), s).on_grid(h, w)[0] for s in range(300)]
    )
    mean, var = draws.mean(0), draws.var(0)
    # 300 draws: std of a per-pixel mean is ~0.06, of a per-pixel variance ~0.08.
    assert mean.abs().max() < 0.3, f"per-pixel mean max {mean.abs().max():.3f}"
    assert (var - 1).abs().max() < 0.4, f"per-pixel variance range {var.min():.3f}..{var.max():.3f}"
    assert abs(var.mean().item() - 1) < 0.03, f"mean per-pixel variance {var.mean():.4f}"


@pytest.mark.parametrize("shared", [False, True])
def test_correlation_matches_truncated_rbf(shared):
    cfg = RFFConfig(channels=4, num_features=3000, shared_features=shared)
    h = w = 48
    fields = torch.cat([RFFField.sample(cfg, s).on_grid(h, w)[0] for s in range(12)]).double()
    lags = {(1, 0): 1.0, (0, 1): 1.0, (2, 0): 2.0, (1, 1): math.sqrt(2), (0, 2): 2.0}
    expected = truncated_rbf_kernel(list(lags.values()), cfg.lengthscale)
    for (dx, dy), e in zip(lags, expected, strict=True):
        a = fields[:, : h - dy, : w - dx].flatten()
        bb = fields[:, dy:, dx:].flatten()
        corr = torch.corrcoef(torch.stack([a, bb]))[0, 1].item()
        assert abs(corr - e) < 0.03, f"lag {(dx, dy)}: corr {corr:.4f} vs kernel {e:.4f}"
    # Channels are uncorrelated with each other, shared features or not.
    cc = torch.corrcoef(fields.reshape(12, 4, -1).transpose(0, 1).reshape(4, -1))
    assert (cc - torch.eye(4, dtype=cc.dtype)).abs().max() < 0.05


def test_rbf_kernel_limit():
    # Without meaningful truncation the kernel is the RBF.
    d = np.array([0.0, 0.5, 1.0, 2.0])
    k = truncated_rbf_kernel(d, 1.0, truncation=8.0)
    np.testing.assert_allclose(k, np.exp(-(d**2) / 2), atol=1e-4)


def test_gaussian_marginal_ks():
    x = RFFField.sample(RFFConfig(channels=4), 7).on_grid(96, 96)[0, :, ::4, ::4].flatten().double().numpy()
    p = stats.kstest(x, "norm").pvalue
    assert p > 1e-3, f"KS p-value {p:.2e}"


def test_pullback_integer_and_subpixel_shift():
    field = RFFField.sample(RFFConfig(channels=3, num_features=500), 3)
    h, w = 16, 20
    base = field.on_grid(h, w)
    shifted = field.on_grid(h, w, offset=(3.0, 2.0))
    # Exact up to float32 rounding: the kernels take phases relative to each pixel block's anchor, so a
    # point evaluated in another block rounds differently (~1e-6); any interpolation would err by ~1e-1.
    assert_close(shifted[..., : h - 2, : w - 3], base[..., 2:, 3:], atol=1e-5, what="integer shift")
    # Sub-pixel: the grid offset by (0.5, 0.5) is every other point of a half-pixel grid.
    fine = field(identity_coords(2 * h, 2 * w) * 0.5)
    half = field.on_grid(h, w, offset=(0.5, 0.5))
    assert_close(half, fine[..., 1::2, 1::2], atol=1e-5, what="half-pixel shift")
    # Far outside the frame the field is still unit-variance noise.
    far = field.on_grid(64, 64, offset=(-5000.0, 7000.0))
    assert abs(far.var().item() - 1) < 0.15


def test_same_seed_same_field():
    a = RFFField.sample(RFFConfig(), 11).on_grid(8, 8)
    b = RFFField.sample(RFFConfig(), 11).on_grid(8, 8)
    c = RFFField.sample(RFFConfig(), 12).on_grid(8, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_inputs(gen):
    z, b, wt = _params(2, 10, False, gen)
    coords = _coords(1, 4, 4, gen)
    with pytest.raises(ValueError, match="coords: expected shape"):
        wf.gp_noise(coords[..., :1], z, b, wt)
    with pytest.raises(TypeError, match="coords: expected dtype"):
        wf.gp_noise(coords.long(), z, b, wt)
    with pytest.raises(ValueError, match="J = 0"):
        wf.gp_noise(coords, z[:, :0], b[:, :0], wt[:, :0])
    with pytest.raises(ValueError, match="z: expected 2"):
        wf.gp_noise(coords, torch.cat([z, z]), b, wt)
    with pytest.raises(ValueError, match="b: expected shape"):
        wf.gp_noise(coords, z, b[:, :5], wt)
    with pytest.raises(ValueError, match="empty frame"):
        wf.gp_noise(coords[:, :0], z, b, wt)
    with pytest.raises(ValueError, match="expected a tensor on"):
        wf.gp_noise(coords, z, b, wt.to("meta"))
    bad = coords.clone()
    bad[0, 1, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="coords: expected finite"):
        wf.gp_noise(bad, z, b, wt)
    with pytest.raises(ValueError, match="lengthscale"):
        RFFConfig(lengthscale=0.0)
    with pytest.raises(ValueError, match="num_features"):
        RFFConfig(num_features=0)


def test_cuda_kernel_choice(monkeypatch):
    gp_mod = importlib.import_module("warped_fast.ops.gp_noise")  # the module: ops.gp_noise is the function
    with pytest.raises(ValueError, match="gp_noise_cuda_kernel: expected one of"):
        with wf.ops.gp_noise_cuda_kernel("wmma"):
            pass
    monkeypatch.setenv("WARPED_FAST_GP_CUDA_KERNEL", "tensor_cores")
    assert gp_mod._kernel_choice() == (wf.ops.GP_CUDA_KERNELS["tensor_cores"], 0)
    with wf.ops.gp_noise_cuda_kernel("fma", split=4):
        assert gp_mod._kernel_choice() == (wf.ops.GP_CUDA_KERNELS["fma"], 4)
    assert gp_mod._kernel_choice() == (wf.ops.GP_CUDA_KERNELS["tensor_cores"], 0)
    monkeypatch.setenv("WARPED_FAST_GP_CUDA_KERNEL", "fast")
    with pytest.raises(ValueError, match="WARPED_FAST_GP_CUDA_KERNEL: expected one of"):
        gp_mod._kernel_choice()
    with pytest.raises(ValueError, match="split: expected one of"):
        with wf.ops.gp_noise_cuda_kernel(None, split=3):
            pass


@pytest.mark.cuda
@pytest.mark.parametrize("shared, kernel", CUDA_VARIANTS)
@pytest.mark.parametrize("shape", SHAPES + [(1, 4, 128, 128), (2, 8, 33, 70), (1, 9, 5, 3), (2, 2, 1, 7)])
def test_cuda_matches_reference(shape, shared, kernel, gen):
    n, c, h, w = shape
    z, b, wt = _params(c, 1001, shared, gen)
    if kernel == "tensor_cores" and c > 1:  # the kernel asked for runs (no silent fallback)
        from warped_fast.ops import _cpu
        from warped_fast.ops.gp_noise import GP_CUDA_KERNELS

        code = GP_CUDA_KERNELS["tensor_cores"]
        assert _cpu.lib().gp_noise_cuda_workspace(n, h, w, c, z.shape[0], 1001, code) > 0
    coords = _coords(n, h, w, gen)
    r64, ref_err = _ref_errors(coords, z, b, wt)
    with wf.use_backend("cuda"), wf.ops.gp_noise_cuda_kernel(kernel):
        out = wf.gp_noise(coords.cuda(), z.cuda(), b.cuda(), wt.cuda())
    assert_close(out, r64, atol=2 * ref_err + 1e-5, what="gp_noise cuda vs float64 reference")


@pytest.mark.cuda
def test_cuda_batches_past_one_launch():
    """More frames than one launch takes (65535, a grid dimension): split into launches, each frame
    evaluated where it is."""
    from warped_fast.ops.gp_noise import _CUDA_MAX_FRAMES

    g = torch.Generator().manual_seed(5)
    n = _CUDA_MAX_FRAMES + 2
    z, b, wt = _params(2, 8, False, g)
    coords = torch.randn(n, 1, 3, 2, generator=g) * 50
    with wf.use_backend("cuda"):
        out = wf.gp_noise(coords.cuda(), z.cuda(), b.cuda(), wt.cuda()).cpu()
    frames = [0, _CUDA_MAX_FRAMES - 1, _CUDA_MAX_FRAMES, n - 1]
    ref = reference.gp_noise(coords[frames].double(), z.double(), b.double(), wt.double())
    assert_close(out[frames], ref, atol=1e-4, what="frames on both sides of a launch boundary")


def _smooth_coords(n, h, w, offset, amp):
    """A coordinate map like those of noise warping: the pixel grid moved by ``offset`` and a smooth
    flow of amplitude ``amp`` px."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    flow = torch.stack([amp * torch.sin(yy / 9.0), amp * torch.cos(xx / 7.0)], -1).float()
    return identity_coords(h, w, n) + torch.tensor(offset) + flow


@pytest.mark.cuda
@pytest.mark.parametrize("shared, kernel", CUDA_VARIANTS)
@pytest.mark.parametrize(
    "shape, j, offset, amp, spread",
    [
        ((1, 4, 128, 128), 3000, (0.0, 0.0), 3.0, 0.0),
        ((2, 3, 70, 45), 1001, (3000.0, -2500.5), 5.0, 0.0),
        ((1, 4, 64, 96), 1001, (-500.25, 40.0), 20.0, 0.0),
        ((1, 2, 64, 96), 300, (0.0, 0.0), 3.0, 40.0),
        ((1, 6, 40, 70), 1001, (12.5, -7.0), 8.0, 0.0),
    ],
)
def test_cuda_smooth_coordinates(shape, j, offset, amp, spread, shared, kernel, gen):
    """Smooth coordinate maps, near the origin and thousands of pixels away, evaluate relative to each
    block's anchor without range reduction; the last case scatters the right half of the frame so that
    blocks of both kinds meet in one launch."""
    n, c, h, w = shape
    z, b, wt = _params(c, j, shared, gen)
    coords = _smooth_coords(n, h, w, offset, amp)
    if spread:
        coords[:, :, w // 2 :] += torch.randn(n, h, w - w // 2, 2, generator=gen) * spread
    r64, ref_err = _ref_errors(coords, z, b, wt)
    with wf.use_backend("cuda"), wf.ops.gp_noise_cuda_kernel(kernel):
        out = wf.gp_noise(coords.cuda(), z.cuda(), b.cuda(), wt.cuda())
    assert_close(
        out, r64, atol=2 * ref_err + 1e-5, what=f"gp_noise cuda, smooth coordinates {offset}, {amp} px"
    )


@pytest.mark.cuda
@pytest.mark.parametrize("shared, kernel", CUDA_VARIANTS)
@pytest.mark.parametrize(
    "shape, j, spread",
    [((1, 4, 200, 200), 3000, 40.0), ((1, 2, 96, 100), 5, 40.0), ((1, 4, 64, 64), 3000, 2000.0)],
)
def test_cuda_split_tiles_and_large_coordinates(shape, j, spread, shared, kernel, gen):
    """Frames that take the split-feature path, J not a multiple of the tile (J = 5: less than one), and
    coordinates of thousands of pixels (phases of many turns, wrapped by the cosine unit). Two channels or
    more, so that shared fields do take the shared kernels."""
    n, c, h, w = shape
    z, b, wt = _params(c, j, shared, gen)
    assert not shared or z.shape[0] == 1 < c
    coords = _coords(n, h, w, gen, spread=spread)
    r64, ref_err = _ref_errors(coords, z, b, wt)
    with wf.use_backend("cuda"), wf.ops.gp_noise_cuda_kernel(kernel):
        out = wf.gp_noise(coords.cuda(), z.cuda(), b.cuda(), wt.cuda())
    assert_close(out, r64, atol=2 * ref_err + 1e-5, what=f"gp_noise cuda, J={j}, spread {spread}")


def _check_near_and_far(shared, gen, run):
    """Blocks holding pixel coordinates beside far-away ones (an occlusion edge next to fresh-noise tiles
    at 16384 px and more, or one outlier of 1e7 px) stay as accurate as the float32 reference on every
    pixel: their offsets are not rounded around a distant anchor. ``run(coords, z, b, w)`` evaluates."""
    n, c, h, w = 1, 4, 64, 96
    z, b, wt = _params(c, 1001, shared, gen)
    coords = _smooth_coords(n, h, w, (0.3, 0.3), 3.0)
    coords[:, :, 40:] += torch.tensor([16384.0 + 3 * (w + 256), 16384.0])  # occluded right part
    coords[0, 5, 7] = torch.tensor([1e7, 80.0])  # one outlier in another block
    r64 = reference.gp_noise(coords.double(), z.double(), b.double(), wt.double())
    r32 = reference.gp_noise(coords, z, b, wt).double()
    out = run(coords, z, b, wt).cpu().double()
    near = torch.zeros(h, w, dtype=torch.bool)
    near[:, :40] = True
    near[5, 7] = False
    # Each region against the float32 reference's own error there (the far one's is ~100x the near one's).
    for region, what in ((near, "near"), (~near, "far")):
        region[5, 7] = False  # the outlier's phase is rounded to ~1 rad in float32: not compared
        ref_err = (r32 - r64)[..., region].abs().max().item()
        err = (out - r64)[..., region].abs().max().item()
        assert err <= 2 * ref_err + 1e-5, f"gp_noise, {what} pixels: error {err:.2e}, reference {ref_err:.2e}"
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shared", [False, True])
def test_cpu_blocks_mixing_near_and_far_coordinates(shared, gen):
    with wf.use_backend("cpu"):
        _check_near_and_far(shared, gen, wf.gp_noise)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("offset", [(16384.0, 16384.0), (-5000.0, 7000.0)])
@pytest.mark.parametrize("hw", [(24, 40), (3, 1000)])
def test_cpu_far_coordinates_as_accurate_as_near_ones(shared, offset, hw, gen):
    """Far-away coordinates (the fresh-noise tiles sit at 16384 px and more) are as accurate as the frame
    itself: phases relative to each block's anchor, where absolute float32 phases err by ~3e-3 rad. Wide
    frames too (1000 px: a block of raster order would span a whole row)."""
    z, b, wt = _params(4, 1000, shared, gen)
    coords = _smooth_coords(1, *hw, offset, 3.0)
    r64, ref_err = _ref_errors(coords, z, b, wt)
    assert ref_err > 3e-4  # the float32 reference's absolute phases are off here
    with wf.use_backend("cpu"):
        out = wf.gp_noise(coords, z, b, wt)
    assert_close(out, r64, atol=3e-5, what=f"gp_noise cpu at offset {offset}")


@pytest.mark.cuda
@pytest.mark.parametrize("shared, kernel", CUDA_VARIANTS)
def test_cuda_blocks_mixing_near_and_far_coordinates(shared, kernel, gen):
    def run(coords, z, b, wt):
        with wf.use_backend("cuda"), wf.ops.gp_noise_cuda_kernel(kernel):
            return wf.gp_noise(coords.cuda(), z.cuda(), b.cuda(), wt.cuda())

    _check_near_and_far(shared, gen, run)
