"""Triton kernels of hiwyn / infres / gwtf against the PyTorch implementations (the reference), run
by the Triton interpreter on CPU tensors; plus properties of the reference steps."""

import pytest
import torch

import warped_fast as wf
from tests.helpers import assert_close
from warped_fast.noise import pixel_corners, warp_noise_video
from warped_fast.noise.gwtf import gwtf_transport, gwtf_transport_reference
from warped_fast.noise.hiwyn import hiwyn_transport, hiwyn_transport_reference
from warped_fast.noise.infres import infres_transport, infres_transport_reference
from warped_fast.ops import OP_BACKENDS

from .common import jittered_similarity, similarity, translation

try:
    import triton
    import triton.language as tl

    from warped_fast.triton import gwtf as gwtf_triton
    from warped_fast.triton import hiwyn as hiwyn_triton
except ImportError:  # no triton: the module skips
    triton = None

pytestmark = pytest.mark.skipif(
    not wf.backend_info("cpu")["triton"], reason="needs triton with TRITON_INTERPRET=1 (tests/conftest.py)"
)


def test_registered():
    for op in ("hiwyn", "infres", "gwtf"):
        assert OP_BACKENDS[op] == ("triton", "cpu", "reference")


@pytest.mark.parametrize(
    "c,h,w,k,max_extent,kw",
    [
        (2, 12, 10, 8, 8, {}),
        (3, 7, 9, 3, 8, {"scale": 1.3, "angle_deg": 20.0}),  # shrink + rotation, some polygons outside
        (1, 9, 8, 4, 1, {"scale": 1.6}),  # clipped windows
        (4, 6, 6, 8, 8, {"shift": (4.5, 2.0)}),  # mostly outside: empty polygons -> fresh
    ],
)
def test_hiwyn_triton_matches_reference(c, h, w, k, max_extent, kw, gen):
    prev = torch.randn(c, h, w, generator=gen)
    z = torch.randn(c, h, w, k, k, generator=gen)
    fresh = torch.randn(c, h, w, generator=gen)
    back, _ = jittered_similarity(h, w, gen, **kw)
    corners = pixel_corners(back)
    ref = hiwyn_transport_reference(prev, corners, z, fresh, max_extent)
    with wf.use_backend("triton"):
        out = hiwyn_transport(prev, corners, z, fresh, max_extent)
    assert_close(out, ref, atol=2e-5, what="hiwyn triton vs reference")
    if "shift" in kw:
        assert torch.equal(out[:, :, -2:], fresh[:, :, -2:])  # nothing arrives at the right columns


@pytest.mark.parametrize("missing", ["fill", "renormalize"])
@pytest.mark.parametrize("c,h,w,spread", [(3, 11, 13, 1.0), (1, 5, 4, 6.0)])
def test_infres_triton_matches_reference(missing, c, h, w, spread, gen):
    prev = torch.randn(c, h, w, generator=gen)
    z = torch.randn(c, 4, h, w, generator=gen)
    fresh = torch.randn(c, h, w, generator=gen)
    _, fwd = jittered_similarity(h, w, gen, jitter=spread)
    ref = infres_transport_reference(prev, fwd, z, fresh, missing)
    with wf.use_backend("triton"):
        out = infres_transport(prev, fwd, z, fresh, missing)
    assert_close(out, ref, atol=2e-5, what=f"infres triton vs reference ({missing})")


@pytest.mark.parametrize("c,h,w,spread", [(3, 11, 13, 1.0), (2, 6, 5, 8.0)])
def test_gwtf_triton_matches_reference(c, h, w, spread, gen):
    q = torch.randn(c, h, w, generator=gen)
    weight = torch.rand(h, w, generator=gen) + 0.3
    zc, ze, fresh = (torch.randn(c, h, w, generator=gen) for _ in range(3))
    back, fwd = jittered_similarity(h, w, gen, jitter=spread)
    ref, rw = gwtf_transport_reference(q, weight, fwd, back, zc, ze, fresh)
    with wf.use_backend("triton"):
        out, ow = gwtf_transport(q, weight, fwd, back, zc, ze, fresh)
    assert_close(out, ref, atol=2e-5, what="gwtf noise triton vs reference")
    assert_close(ow, rw, atol=2e-6, what="gwtf weight triton vs reference")


@pytest.mark.parametrize("method", ["hiwyn", "infres", "gwtf"])
def test_warpers_dispatch_to_triton(method):
    back, fwd = similarity(3, 8, 10)
    ref = warp_noise_video(method, (2, 8, 10), back, fwd, generator=3)
    with wf.use_backend("triton"):
        out = warp_noise_video(method, (2, 8, 10), back, fwd, generator=3)
    assert_close(out, ref, atol=5e-5, what=f"{method} clip, triton vs reference")


@pytest.mark.parametrize(
    "method,opts", [("hiwyn", {}), ("infres", {}), ("gwtf", {}), ("gwtf", {"upsample": 2})]
)
def test_triton_integer_translation_is_exact(method, opts):
    back, fwd = translation(3, 7, 9, (2, -1))
    with wf.use_backend("triton"):
        v = warp_noise_video(method, (2, 7, 9), back, fwd, generator=1, **opts)
    for j in (1, 2):
        assert torch.equal(v[j][:, :-1, 2:], v[j - 1][:, 1:, :-2])


def test_hiwyn_reference_properties(gen):
    c, h, w, k = 2, 8, 9, 4
    prev = torch.randn(c, h, w, generator=gen)
    z = torch.randn(c, h, w, k, k, generator=gen)
    fresh = torch.randn(c, h, w, generator=gen)
    # No motion: each polygon is its own pixel, which integrates back to its value exactly.
    out = hiwyn_transport_reference(prev, pixel_corners(torch.zeros(2, h, w)), z, fresh)
    assert torch.equal(out, prev)
    # Half-pixel shift in x: each new pixel covers half of two source pixels (k^2 / 2 sub-pixels each).
    back = torch.zeros(2, h, w)
    back[0] = 0.5
    out = hiwyn_transport_reference(prev, pixel_corners(back), z, fresh)
    zb = z.reshape(c, h, w, k, k)
    zr = zb - zb.mean((-1, -2), keepdim=True)
    left = prev[:, :, :-1] / k * (k * k / 2) + zr[:, :, :-1, :, k // 2 :].sum((-1, -2))
    right = prev[:, :, 1:] / k * (k * k / 2) + zr[:, :, 1:, :, : k // 2].sum((-1, -2))
    assert_close(out[:, :, :-1], (left + right) / k, atol=1e-5, what="half-pixel shift")
    assert_close(
        out[:, :, -1],
        (prev[:, :, -1] / k * (k * k / 2) + zr[:, :, -1, :, k // 2 :].sum((-1, -2))) / (k / 2**0.5),
        atol=1e-5,
        what="half-covered border pixel",
    )


def test_infres_reference_properties(gen):
    c, h, w = 2, 6, 7
    prev = torch.randn(c, h, w, generator=gen)
    z = torch.randn(c, 4, h, w, generator=gen)
    fresh = torch.randn(c, h, w, generator=gen)
    # Half-pixel pan in x: interior pixels get two halves: (x_l + x_r)/2 + bridge noise, area 1.
    fwd = torch.zeros(2, h, w)
    fwd[0] = 0.5
    out = infres_transport_reference(prev, fwd, z, fresh)
    r2 = 0.5**0.5
    s = r2 * z[:, 0] + r2 * z[:, 1]  # each particle's bridge sum (areas 1/2, 1/2, 0, 0)
    piece_right = 0.5 * prev + (r2 * z[:, 1] - 0.5 * s)  # the half that goes to x + 1
    piece_left = 0.5 * prev + (r2 * z[:, 0] - 0.5 * s)  # the half that stays at x
    want = piece_right[:, :, :-1] + piece_left[:, :, 1:]
    assert_close(out[:, :, 1:], want, atol=1e-5, what="half-pixel pan")
    # column 0 only receives half an area: filled with fresh noise
    assert_close(out[:, :, 0], piece_left[:, :, 0] + r2 * fresh[:, :, 0], atol=1e-5, what="fill")


if triton is not None:

    @triton.jit
    def _round_target_probe(flow_ptr, out_ptr, start, H, W, HW, B: tl.constexpr):
        offs = start + tl.arange(0, B)
        idx, ok = gwtf_triton._round_target(flow_ptr, offs, offs < HW, H, W, HW)
        tl.store(out_ptr + tl.arange(0, B), tl.where(ok, idx, -1))

    @triton.jit
    def _corner_index_probe(out_ptr, start, W, B: tl.constexpr):
        tl.store(out_ptr + tl.arange(0, B), hiwyn_triton._corner_index(start + tl.arange(0, B), W))


def test_gwtf_rounded_targets_past_2_24_pixels():
    """The flat target index is integer math: in float32, ty * W + tx is inexact past 2^24 pixels."""
    h = w = 4097
    hw, b = h * w, 16
    start = hw - b  # the last pixels of the bottom row
    flow = torch.zeros(2, h, w)
    fx, fy = flow[0].view(-1), flow[1].view(-1)
    fx[start + 1], fy[start + 2], fx[start + 3] = -1.2, -1.0, 0.4  # one column / row back; stays
    fx[hw - 1] = 0.7  # leaves the frame
    out = torch.empty(b, dtype=torch.int32)
    _round_target_probe[(1,)](flow, out, start, h, w, hw, B=b)
    want = list(range(start, hw))
    want[1], want[2], want[-1] = start, start + 2 - w, -1
    assert out.tolist() == want


def test_hiwyn_corner_offsets_past_int32():
    """Corner offsets reach (H + 1)(W + 1), past int32 for a tall frame the size guard allows."""
    h, w, b = 700_000_000, 3, 16
    assert h * w + 2 * w + 2 < 2**31  # allowed by hiwyn_transport
    start = h * w - b
    out = torch.empty(b, dtype=torch.int64)
    _corner_index_probe[(1,)](out, start, w, B=b)
    assert out.tolist() == [(p // w) * (w + 1) + p % w for p in range(start, h * w)]
