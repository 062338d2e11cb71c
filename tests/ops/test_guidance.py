"""Guidance ops: fused residual/loss/gradient and the fused Euler + guidance update vs the reference."""

import pytest
import torch

import warped_fast as wf
from tests.helpers import assert_close, smooth_flow
from warped_fast import reference

SHAPES = [(1, 3, 17, 29), (3, 4, 8, 5), (2, 1, 6, 7)]


def _inputs(shape, gen, dtype=torch.float64, with_mask=False):
    n, c, h, w = shape
    pred = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    prev = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    flow = smooth_flow(n, h, w, gen, scale=2.0, dtype=dtype)
    mask = torch.rand(n, 1, h, w, generator=gen) > 0.3 if with_mask else None
    return pred, prev, flow, mask


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_mask", [False, True])
def test_residual_matches_reference(shape, with_mask, fast_backend, gen):
    pred, prev, flow, mask = _inputs(shape, gen, with_mask=with_mask)
    ref = reference.guidance_residual(pred, prev, flow, mask)
    with wf.use_backend(fast_backend):
        r, sumsq = wf.guidance_residual(pred.float(), prev.float(), flow.float(), mask)
    assert r.dtype == torch.float32 and sumsq.shape == (shape[0],)
    assert_close(r, ref, atol=1e-5, what="residual")
    assert_close(sumsq, ref.pow(2).flatten(1).sum(1), atol=1e-4, rtol=1e-5, what="sumsq")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_guidance_grad_matches_reference(shape, squared, with_mask, fast_backend, gen):
    pred, prev, flow, mask = _inputs(shape, gen, with_mask=with_mask)
    r_loss, r_grad = reference.guidance_grad(pred, prev, flow, mask, squared=squared)
    with wf.use_backend(fast_backend):
        loss, grad = wf.guidance_grad(pred.float(), prev.float(), flow.float(), mask, squared=squared)
    assert_close(loss, r_loss, atol=1e-4, rtol=1e-5, what="loss")
    assert_close(grad, r_grad, atol=1e-5, rtol=1e-5, what="adjoint warp of the normalized residual")


@pytest.mark.parametrize("squared", [False, True])
def test_guidance_loss_autograd(squared, fast_backend, gen):
    pred, prev, flow, mask = _inputs((2, 3, 9, 11), gen, with_mask=True)
    _, r_grad = reference.guidance_grad(pred, prev, flow, mask, squared=squared)
    p = pred.float().requires_grad_()
    q = prev.float().requires_grad_()
    with wf.use_backend(fast_backend):
        loss = wf.guidance_loss(p, q, flow.float(), mask, squared=squared)
        gp, gq = torch.autograd.grad(loss.sum(), (p, q))
    assert_close(gp, r_grad, atol=1e-5, rtol=1e-5, what="d loss / d pred")
    # d loss / d prev: -r / ||r|| (or -2 r), straight from the residual.
    r = reference.guidance_residual(pred, prev, flow, mask)
    nrm = r.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert_close(gq, -2 * r if squared else -r / nrm, atol=1e-5, what="d loss / d prev")


def test_residual_gradcheck_float64(gen):
    pred, prev, flow, mask = _inputs((2, 2, 5, 6), gen, with_mask=True)
    pred.requires_grad_()
    prev.requires_grad_()

    def f(p, q):
        r, ss = wf.guidance_residual(p, q, flow, mask)
        return r, ss

    with wf.use_backend("cpu"):
        assert torch.autograd.gradcheck(f, (pred, prev), eps=1e-6, atol=1e-5)


def test_zero_residual_gives_zero_gradient():
    pred = torch.randn(1, 2, 6, 6)
    flow = torch.zeros(1, 2, 6, 6)
    loss, grad = wf.guidance_grad(pred, pred.clone(), flow)
    assert loss.item() == 0 and torch.equal(grad, torch.zeros_like(grad))
    p = pred.clone().requires_grad_()
    (g,) = torch.autograd.grad(wf.guidance_loss(p, pred, flow).sum(), p)
    assert torch.isfinite(g).all() and g.abs().max() == 0


@pytest.mark.parametrize("shape", [(1, 3, 17, 29), (5, 4, 3, 2)])
@pytest.mark.parametrize("with_grad", [False, True])
def test_euler_step_matches_reference(shape, with_grad, fast_backend, gen):
    u, pred, _, _ = _inputs(shape, gen)
    g = torch.randn(shape, generator=gen, dtype=torch.float64) if with_grad else None
    s = torch.rand(shape[0], generator=gen, dtype=torch.float64) * 10 + 0.1
    sn = s * 0.8
    ref = reference.euler_guided_step(u, pred, g, s, sn, 0.7)
    with wf.use_backend(fast_backend):
        out = wf.euler_guided_step(
            u.float(), pred.float(), s.float(), sn.float(), None if g is None else g.float(), 0.7
        )
    assert_close(out, ref, atol=1e-5, rtol=1e-5, what="euler step")
    if fast_backend == "cpu":
        out64 = wf.euler_guided_step(u, pred, s, sn, g, 0.7)
        assert_close(out64, ref, atol=1e-12, rtol=1e-12, what="euler step float64")


def test_euler_step_gradients(fast_backend, gen):
    """Autograd of the fused step (u, D and g) against autograd of the reference, and gradcheck."""
    shape = (3, 2, 5, 7)
    u, pred, g = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
    cot = torch.randn(shape, generator=gen, dtype=torch.float64)
    s = torch.rand(shape[0], generator=gen, dtype=torch.float64) * 10 + 0.1
    sn = s * 0.7
    leaves = [t.clone().requires_grad_() for t in (u, pred, g)]
    want = torch.autograd.grad(
        reference.euler_guided_step(leaves[0], leaves[1], leaves[2], s, sn, 0.6), leaves, cot
    )
    leaves32 = [t.float().requires_grad_() for t in (u, pred, g)]
    with wf.use_backend(fast_backend):
        out = wf.euler_guided_step(leaves32[0], leaves32[1], s.float(), sn.float(), leaves32[2], 0.6)
        got = torch.autograd.grad(out, leaves32, cot.float())
    for name, a, b in zip(("u", "pred", "grad"), got, want, strict=True):
        assert_close(a, b, atol=1e-5, rtol=1e-5, what=f"d step / d {name}")
    if fast_backend == "cpu":
        with wf.use_backend("cpu"):
            assert torch.autograd.gradcheck(
                lambda x, d, gg: wf.euler_guided_step(x, d, s, sn, gg, 0.6),
                [t.clone().requires_grad_() for t in (u, pred, g)],
            )


@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 2, 4, 5), (4,)])
def test_euler_step_any_rank(shape, fast_backend, gen):
    """[N, ...] items of any rank: the reference broadcasts sigma per item like the fast paths."""
    u, pred, g = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
    s = torch.rand(shape[0], generator=gen, dtype=torch.float64) * 10 + 0.1
    sn = s * 0.6
    ref = reference.euler_guided_step(u, pred, g, s, sn, 0.7)
    flat = [t.reshape(shape[0], 1, 1, -1) for t in (u, pred, g)]  # the same items as [N, 1, 1, L]
    assert_close(ref, reference.euler_guided_step(*flat, s, sn, 0.7).reshape(shape), atol=1e-12, what="ref")
    with wf.use_backend(fast_backend):
        out = wf.euler_guided_step(u.float(), pred.float(), s.float(), sn.float(), g.float(), 0.7)
    assert out.shape == shape
    assert_close(out, ref, atol=1e-5, rtol=1e-5, what=f"euler step {shape}")


def test_euler_step_scalars_and_last_step(gen):
    u, pred, _, _ = _inputs((2, 3, 4, 5), gen, dtype=torch.float32)
    out = wf.euler_guided_step(u, pred, 2.0, 0.0)
    assert_close(out, pred, atol=1e-6, what="sigma_next = 0 lands on the prediction")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype, fast_backend, gen):
    _low_precision_case(dtype, fast_backend, "cpu", gen)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_gpu_low_precision(dtype, gen):
    """The compiled Triton kernels in float16 / bfloat16 (the interpreter emulates their rounding)."""
    _low_precision_case(dtype, "triton", "cuda", gen)


def _low_precision_case(dtype, backend, device, gen):
    pred, prev, flow, _ = _inputs((2, 4, 33, 47), gen)
    r_loss, r_grad = reference.guidance_grad(pred, prev, flow)
    lp_loss, lp_grad = reference.guidance_grad(pred.to(dtype), prev.to(dtype), flow.to(dtype))
    with wf.use_backend(backend):
        loss, grad = wf.guidance_grad(pred.to(device, dtype), prev.to(device, dtype), flow.float().to(device))
    assert grad.dtype == dtype
    loss, grad = loss.cpu(), grad.cpu()
    g_err = (lp_grad.double() - r_grad).abs().max().item()
    l_err = (lp_loss.double() - r_loss).abs().max().item()
    assert_close(grad, r_grad, atol=2 * g_err + 1e-6, what=f"grad {dtype}")
    assert_close(loss, r_loss, atol=2 * l_err + 1e-6, what=f"loss {dtype}")


def test_float16_autograd_with_a_tiny_residual_has_no_nan(fast_backend):
    """d||r||/dr in float16: 1 / (2 ||r||) overflows float16 for ||r|| < 8e-6; the backward forms its
    sums in float32, so the gradient equals the autograd-free one instead of NaN."""
    pred = torch.zeros(1, 4, 8, 8, dtype=torch.float16)
    pred[0, 0, 0, 0] = 0.001
    prev = pred.clone()
    prev[0, 0, 0, 0] = torch.nextafter(prev[0, 0, 0, 0], torch.tensor(1.0, dtype=torch.float16))
    flow = torch.zeros(1, 2, 8, 8)
    p = pred.clone().requires_grad_()
    with wf.use_backend(fast_backend):
        (g,) = torch.autograd.grad(wf.guidance_loss(p, prev, flow).sum(), p)
        _, want = wf.guidance_grad(pred, prev, flow)
    assert g.dtype == torch.float16 and torch.isfinite(g).all()
    assert_close(g, want, atol=1e-3, what="float16 autograd vs guidance_grad")


@pytest.mark.parametrize("flow_dtype", [torch.float16, torch.float64])
def test_flow_dtype_other_than_pred(flow_dtype, fast_backend, gen):
    n, c, h, w = 2, 3, 7, 9
    pred, prev = (torch.randn(n, c, h, w, generator=gen) for _ in range(2))
    flow = smooth_flow(n, h, w, gen).to(flow_dtype)
    want, _ = reference.guidance_grad(pred.double(), prev.double(), flow.double())
    with wf.use_backend(fast_backend):
        loss, _ = wf.guidance_grad(pred, prev, flow)
    assert_close(loss, want, atol=1e-4, rtol=1e-5, what=f"guidance loss with a {flow_dtype} flow")


def test_reference_euler_dtype_and_empty_channels(gen):
    u = torch.randn(2, 3, 4, 5, generator=gen).half()
    out = reference.euler_guided_step(u, u.float(), u.float(), torch.ones(2), torch.zeros(2))
    assert out.dtype == torch.float16
    assert reference.warp_image_grad(torch.zeros(1, 0, 4, 5), torch.zeros(1, 2, 4, 5)).shape == (1, 0, 4, 5)


def test_opcheck(gen):
    pred, prev, flow, mask = (
        t if t is None else t.float() if t.is_floating_point() else t
        for t in _inputs((2, 3, 5, 6), gen, with_mask=True)
    )
    op = torch.ops.warped_fast.guidance_residual.default
    torch.library.opcheck(op, (pred.clone().requires_grad_(), prev.clone().requires_grad_(), flow, mask))
    torch.library.opcheck(op, (pred, prev, flow, None))
    s = torch.tensor([1.0, 2.0])
    g = torch.randn_like(pred)
    step = torch.ops.warped_fast.euler_guided_step.default
    torch.library.opcheck(step, (pred, prev, None, s, s / 2, 1.0))
    torch.library.opcheck(
        step, (pred.clone().requires_grad_(), prev.clone().requires_grad_(), g, s, s / 3, 0.5)
    )
    # channels-last inputs: the fake kernels' outputs are contiguous, as the kernels'
    cl = [t.to(memory_format=torch.channels_last) for t in (pred, prev, flow)]
    torch.library.opcheck(op, (*cl, None))
    torch.library.opcheck(step, (cl[0], cl[1], None, s, s / 2, 1.0))


def test_bad_inputs(gen):
    pred, prev, flow, _ = _inputs((2, 3, 5, 6), gen, dtype=torch.float32)
    for fn in (wf.guidance_loss, wf.guidance_grad):
        with pytest.raises(TypeError, match="squared: expected True or False, got 'no'"):
            fn(pred, prev, flow, squared="no")
    with pytest.raises(ValueError, match="prev_pred: expected shape"):
        wf.guidance_grad(pred, prev[:1], flow)
    with pytest.raises(TypeError, match="prev_pred: expected dtype"):
        wf.guidance_grad(pred, prev.double(), flow)
    with pytest.raises(ValueError, match="flow: expected shape"):
        wf.guidance_grad(pred, prev, flow[:, :1])
    with pytest.raises(ValueError, match="mask: expected shape"):
        wf.guidance_grad(pred, prev, flow, torch.ones(2, 3, 5, 6, dtype=torch.bool))
    bad = flow.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="flow: expected finite"):
        wf.guidance_loss(pred, prev, bad)
    with pytest.raises(ValueError, match="sigma: expected finite noise levels > 0"):
        wf.euler_guided_step(pred, prev, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"sigma_next: expected a float or a tensor of shape \[2\]"):
        wf.euler_guided_step(pred, prev, 1.0, torch.ones(3))
    with pytest.raises(ValueError, match="pred: expected shape"):
        wf.euler_guided_step(pred, prev[:, :2], 1.0, 0.5)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", SHAPES + [(4, 4, 128, 128)])
def test_triton_gpu_matches_reference(shape, gen):
    pred, prev, flow, mask = _inputs(shape, gen, with_mask=True)
    r_loss, r_grad = reference.guidance_grad(pred, prev, flow, mask)
    s = torch.rand(shape[0], generator=gen, dtype=torch.float64) + 0.5
    ref_step = reference.euler_guided_step(pred, prev, r_grad, s, s * 0.5, 1.0)
    with wf.use_backend("triton"):
        loss, grad = wf.guidance_grad(
            pred.float().cuda(), prev.float().cuda(), flow.float().cuda(), mask.cuda()
        )
        step = wf.euler_guided_step(
            pred.float().cuda(), prev.float().cuda(), s.float().cuda(), (s * 0.5).float().cuda(), grad, 1.0
        )
    assert_close(loss, r_loss, atol=1e-3, rtol=1e-5, what="loss triton gpu")
    assert_close(grad, r_grad, atol=1e-5, rtol=1e-4, what="grad triton gpu")
    assert_close(step, ref_step, atol=1e-4, rtol=1e-5, what="euler triton gpu")


def test_norm_gradient_has_a_dead_zone_for_rounding_residuals(fast_backend, gen):
    """A residual of float-rounding size (another batch size, a resumed run) guides nothing; a real one
    gets the normalized gradient. Fast path, autograd of the loss and the reference agree."""
    pred = torch.randn(2, 3, 6, 7, generator=gen)
    flow = torch.zeros(2, 2, 6, 7)
    prev = pred.clone()
    prev[0] += 1e-7 * torch.randn(3, 6, 7, generator=gen)  # RMS ~1e-7: rounding
    prev[1] += 1e-3 * torch.randn(3, 6, 7, generator=gen)  # RMS ~1e-3: a residual
    with wf.use_backend(fast_backend):
        loss, grad = wf.guidance_grad(pred, prev, flow)
        p = pred.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(wf.guidance_loss(p, prev, flow).sum(), p)
    _, ref = reference.guidance_grad(pred, prev, flow)
    assert loss[0] > 0 and grad[0].abs().max() == 0 and auto[0].abs().max() == 0 and ref[0].abs().max() == 0
    assert abs(grad[1].norm().item() - 1) < 1e-4 and torch.allclose(auto, grad, atol=1e-5)
    assert torch.allclose(ref, grad, atol=1e-5)


def test_guidance_empty_batch_and_lam_checks():
    z = torch.zeros(0, 2, 3, 3)
    assert wf.ops.guidance_loss(z, z, z).shape == (0,)
    loss, grad = wf.ops.guidance_grad(z, z, z)
    assert loss.shape == (0,) and grad.shape == (0, 2, 3, 3)
    u = torch.zeros(1, 2, 3, 3)
    for lam in (float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="lam: expected a finite number"):
            wf.ops.euler_guided_step(u, u, 1.0, 0.5, u, lam)
