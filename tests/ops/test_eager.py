"""Eager calls that skip the dispatcher: same results as the registered ops, and the dispatcher is
still used whenever autograd, tracing, fake tensors or a functorch transform need it."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import warped_fast as wf
from tests.helpers import smooth_flow
from warped_fast.ops import _eager


def _calls(gen):
    n, c, h, w = 2, 3, 9, 11
    img = torch.randn(n, c, h, w, generator=gen)
    prev = torch.randn(n, c, h, w, generator=gen)
    flow, back = smooth_flow(n, h, w, gen).float(), smooth_flow(n, h, w, gen).float()
    field = wf.RFFField.sample(wf.RFFConfig(channels=4, num_features=64), gen)
    coords = wf.identity_coords(h, w, n) + 0.3
    return {
        "gp_noise": lambda: wf.gp_noise(coords, field.z, field.b, field.w),
        "warp": lambda: wf.warp(img, flow, back),
        "compose_coords": lambda: wf.compose_coords(coords, flow),
        "guidance_residual": lambda: wf.guidance_residual(img, prev, flow),
        "guidance_grad": lambda: wf.ops.guidance_grad(img, prev, flow),
        "euler_guided_step": lambda: wf.euler_guided_step(img, prev, 2.0, 1.5, prev, 0.5),
    }


def _flat(out):
    return out if isinstance(out, tuple) else (out,)


OPS = ["gp_noise", "warp", "compose_coords", "guidance_residual", "guidance_grad", "euler_guided_step"]


@pytest.mark.parametrize("op", OPS)
def test_direct_equals_dispatcher(op, gen, monkeypatch):
    fn = _calls(gen)[op]
    taken = []
    real = _eager.direct_ok
    monkeypatch.setattr(_eager, "direct_ok", lambda args: taken.append(real(args)) or taken[-1])
    direct = fn()
    assert taken and all(taken), "the eager call should have skipped the dispatcher"
    _eager.set_direct_calls(False)
    try:
        taken.clear()
        dispatched = fn()
        assert taken and not any(taken)
    finally:
        _eager.set_direct_calls(True)
    for a, b in zip(_flat(direct), _flat(dispatched), strict=True):
        assert torch.equal(a, b)


def test_dispatcher_used_when_needed(gen):
    img = torch.randn(1, 2, 5, 6, generator=gen)
    flow = smooth_flow(1, 5, 6, gen).float()
    assert _eager.direct_ok((img, flow))
    assert not _eager.direct_ok((img.clone().requires_grad_(), flow))
    with torch.no_grad():
        assert _eager.direct_ok((img.clone().requires_grad_(), flow))
    assert not _eager.direct_ok((img.to("meta"), flow))
    with FakeTensorMode() as mode, wf.ops.value_checks(False):  # fake tensors hold no values
        fake = mode.from_tensor(img), mode.from_tensor(flow)
        assert not _eager.direct_ok(fake)
        out, valid = wf.warp(*fake)  # the registered fake kernel answers
        assert out.shape == img.shape and valid.dtype == torch.bool
    seen = []
    torch.func.vmap(lambda x: seen.append(_eager.direct_ok((x,))) or x)(img)
    assert seen == [False]


def test_gradients_through_public_call(gen):
    img = torch.randn(1, 2, 5, 6, generator=gen, requires_grad=True)
    flow = smooth_flow(1, 5, 6, gen).float()
    out, _ = wf.warp(img, flow)
    (g,) = torch.autograd.grad(out.sum(), img)
    assert g.shape == img.shape and g.abs().sum() > 0


def test_compiled_public_call(gen):
    img = torch.randn(1, 2, 5, 6, generator=gen)
    flow = smooth_flow(1, 5, 6, gen).float()
    fn = torch.compile(lambda a, f: wf.warp(a, f)[0] * 2, backend="eager", fullgraph=True)
    assert torch.equal(fn(img, flow), wf.warp(img, flow)[0] * 2)


def test_every_public_op_compiles_with_fullgraph(gen):
    """Each public op traces whole (fullgraph: no graph break in its argument handling) and gives the
    eager result, gp_noise with a negated flow-like view among its inputs too."""
    coords = torch.randn(2, 5, 6, 2, generator=gen) * 4
    z, b, w = (
        torch.randn(1, 8, 2, generator=gen),
        torch.rand(1, 8, generator=gen),
        torch.randn(3, 8, generator=gen),
    )
    img = torch.randn(1, 2, 5, 6, generator=gen)
    flow = smooth_flow(1, 5, 6, gen).float()
    calls = {
        "gp_noise": (lambda c: wf.gp_noise(c, z, b, w), (coords,)),
        "gp_noise of a negated view": (lambda c: wf.gp_noise(torch._neg_view(c), z, b, w), (-coords,)),
        "warp + occlusion": (lambda a, f: wf.warp(a, f, -f)[0], (img, flow)),
        "compose_coords": (lambda c, f: wf.compose_coords(c[:1], f), (coords, flow)),
        "guidance_residual": (lambda a, f: wf.guidance_residual(a, 0.5 * a, f)[0], (img, flow)),
        "occlusion_mask": (lambda f: wf.occlusion_mask(f, -f), (flow,)),
        "guidance_loss": (lambda a, f: wf.guidance_loss(a, 0.5 * a, f), (img, flow)),
        "guidance_grad": (lambda a, f: wf.guidance_grad(a, 0.5 * a, f)[1], (img, flow)),
        "euler_guided_step": (lambda a: wf.euler_guided_step(a, 0.5 * a, 2.0, 1.0, grad=a, lam=0.5), (img,)),
    }
    for name, (fn, args) in calls.items():
        torch._dynamo.reset()
        compiled = torch.compile(fn, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(*args), fn(*args), msg=name)


def test_forward_mode_ad_is_refused(gen):
    """The ops have reverse-mode autograd only: forward mode (torch.func.jvp, forward_ad dual tensors) is
    a clear error, not a silently zero tangent."""
    import torch.autograd.forward_ad as fwad

    img = torch.randn(1, 2, 5, 6, generator=gen)
    flow = smooth_flow(1, 5, 6, gen).float()
    tangent = torch.randn_like(img)
    with pytest.raises(NotImplementedError, match="warp: forward-mode AD .* is not supported"):
        torch.func.jvp(lambda i: wf.warp(i, flow)[0], (img,), (tangent,))
    with fwad.dual_level(), pytest.raises(NotImplementedError, match="forward-mode AD"):
        wf.warp(fwad.make_dual(img, tangent), flow)
    with fwad.dual_level():  # no tangent on the op's inputs: runs
        assert torch.equal(wf.warp(img, flow)[0], wf.warp(img, flow)[0])
