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
