"""Legal but unusual inputs (lazy negated views, empty batches, float64 flows beside float32 images,
differentiable noise levels) and bad arguments of the ops and transports: every backend agrees with the
reference or refuses with a message naming the argument."""

import pytest
import torch

import warped_fast as wf
from tests.helpers import assert_close, smooth_flow
from warped_fast import reference
from warped_fast.noise import pixel_corners
from warped_fast.noise.hiwyn import hiwyn_transport
from warped_fast.noise.infres import infres_transport


def test_lazily_negated_inputs_are_read_negated(fast_backend, gen):
    """``torch._neg_view`` keeps the values before negation in memory; the kernels read memory, so the
    ops materialize such views first."""
    img = torch.randn(1, 3, 6, 7, generator=gen)
    flow = smooth_flow(1, 6, 7, gen).float()
    u = torch.randn(2, 5, generator=gen)
    with wf.use_backend(fast_backend):
        out = wf.warp(torch._neg_view(img.clone()), torch._neg_view(flow.clone()))[0]
        step = wf.euler_guided_step(torch._neg_view(u.clone()), u, 1.0, 0.5)
    assert_close(out, reference.warp(-img, -flow)[0], atol=1e-5, what="warp of negated views")
    assert_close(
        step, reference.euler_guided_step(-u, u, None, torch.ones(2), torch.full((2,), 0.5)), atol=1e-6
    )


def test_empty_batch_in_the_reference():
    """N = 0: the reference (the fallback backend) returns empty results as the kernels do."""
    img, flow = torch.zeros(0, 3, 4, 5), torch.zeros(0, 2, 4, 5)
    with wf.use_backend("reference"):
        assert wf.warp(img, flow, flow)[0].shape == (0, 3, 4, 5)
        assert wf.occlusion_mask(flow, flow).shape == (0, 1, 4, 5)
        assert wf.compose_coords(torch.zeros(0, 4, 5, 2), flow).shape == (0, 4, 5, 2)


def test_residual_backward_with_a_float64_flow(fast_backend, gen):
    """A float32 prediction with a float64 flow: the backward's validity probe runs on the forward's
    backend (it took the flow's dtype, which Triton does not take)."""
    pred = torch.randn(1, 2, 6, 7, generator=gen, requires_grad=True)
    prev = torch.randn(1, 2, 6, 7, generator=gen)
    flow = smooth_flow(1, 6, 7, gen)  # float64
    with wf.use_backend(fast_backend):
        (g,) = torch.autograd.grad(wf.guidance_residual(pred, prev, flow)[0].square().sum(), pred)
    p2 = pred.detach().double().requires_grad_()
    (want,) = torch.autograd.grad(reference.guidance_residual(p2, prev.double(), flow).square().sum(), p2)
    assert_close(g, want, atol=1e-4, what="d |r|^2 / d pred")


def test_triton_names_the_dtype_it_does_not_take():
    if not wf.backend_info("cpu")["triton"]:
        pytest.skip("needs triton with TRITON_INTERPRET=1")
    flow = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
    with wf.use_backend("triton"), pytest.raises(ValueError, match="does not take torch.float64"):
        wf.warp(torch.zeros(1, 1, 4, 5, dtype=torch.float64), flow)


def test_noise_level_gradients(fast_backend, gen):
    """euler_guided_step is differentiable in sigma and sigma_next (a float, 0-d or [N] tensor), as the
    reference's autograd: d/ds_next = sum (u - D) / s, d/ds = -sum (u - D) s_next / s^2."""
    u, pred, cot = (torch.randn(3, 2, 4, generator=gen) for _ in range(3))
    s = torch.tensor([1.0, 2.0, 0.5], requires_grad=True)
    sn = torch.tensor(0.25, requires_grad=True)
    with wf.use_backend(fast_backend):
        got = torch.autograd.grad(wf.euler_guided_step(u, pred, s, sn), (s, sn), cot)
    s2, sn2 = s.detach().clone().requires_grad_(), sn.detach().clone().requires_grad_()
    ref = reference.euler_guided_step(u, pred, None, s2, sn2.expand(3), 1.0)
    want = torch.autograd.grad(ref, (s2, sn2), cot)
    for name, g, r in zip(("sigma", "sigma_next"), got, want, strict=True):
        assert g.shape == r.shape
        assert_close(g, r, atol=1e-5, what=f"d step / d {name}")


@pytest.mark.parametrize("sigma", ["a", None, [1.0, "x"], torch.tensor([1 + 1j, 2])])
def test_bad_noise_level_named(sigma):
    u = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="sigma:"):
        wf.euler_guided_step(u, u, sigma, 0.5)


@pytest.mark.parametrize("dtype", [torch.int32, "float16", None])
def test_gp_noise_output_dtype_checked(dtype):
    f = wf.RFFField.sample(wf.RFFConfig(channels=2, num_features=8), 0)
    with pytest.raises(TypeError, match="dtype: expected a floating torch.dtype"):
        wf.gp_noise(wf.identity_coords(3, 3, 1), f.z, f.b, f.w, dtype=dtype)


def test_reference_ops_as_the_fast_paths_compute():
    """The reference computes the Euler step in float32 for half storage (sigma 1e5 overflows float16)
    and gives 0, not NaN, outside the guidance mask, as the fast paths do."""
    u = torch.randn(2, 3).half()
    out = reference.euler_guided_step(u, u * 0.5, None, torch.full((2,), 1e5), torch.full((2,), 5e4))
    assert torch.isfinite(out).all()
    with wf.use_backend("cpu"):
        fast = wf.euler_guided_step(u, u * 0.5, 1e5, 5e4)
    assert torch.equal(out, fast)
    pred, prev = torch.randn(1, 1, 4, 5), torch.randn(1, 1, 4, 5)
    prev[..., 0, 0] = float("nan")
    mask = torch.ones(1, 1, 4, 5, dtype=torch.bool)
    mask[..., 0, 0] = False
    r = reference.guidance_residual(pred, prev, torch.zeros(1, 2, 4, 5), mask)
    assert torch.isfinite(r).all() and r[..., 0, 0].item() == 0


@pytest.mark.parametrize("backend", ["cpu", "reference", "triton"])
def test_transport_arguments_checked_on_every_backend(backend):
    if backend == "triton" and not wf.backend_info("cpu")["triton"]:
        pytest.skip("needs triton with TRITON_INTERPRET=1")
    c, h, w, k = 2, 4, 5, 2
    prev, fresh = torch.randn(c, h, w), torch.randn(c, h, w)
    corners = pixel_corners(torch.zeros(2, h, w))
    z = torch.randn(c, h, w, k, k)
    bad = corners.clone()
    bad[0, 1, 1] = float("nan")
    fwd, zi = torch.zeros(2, h, w), torch.randn(c, 4, h, w)
    with wf.use_backend(backend):
        with pytest.raises(ValueError, match="corners: expected finite"):
            hiwyn_transport(prev, bad, z, fresh)
        with pytest.raises(ValueError, match="k >= 1"):
            hiwyn_transport(prev, corners, torch.zeros(c, h, w, 0, 0), fresh)
        with pytest.raises(ValueError, match="prev: expected a non-empty frame"):
            hiwyn_transport(prev[:0], corners, z[:0], fresh[:0])
        with pytest.raises(ValueError, match="missing:"):
            infres_transport(prev, fwd, zi, fresh, missing="fil")
        for min_area in (-1.0, float("nan"), 1.0):
            with pytest.raises(ValueError, match="min_area:"):
                infres_transport(prev, fwd, zi, fresh, missing="renormalize", min_area=min_area)
