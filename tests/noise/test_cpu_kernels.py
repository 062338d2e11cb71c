"""The C++ CPU kernels of the noise transports (csrc/hiwyn.cpp, infres.cpp, gwtf.cpp) against the PyTorch
implementations they reproduce (the reference)."""

import pytest
import torch

import warped_fast as wf
from tests.helpers import assert_close
from warped_fast.noise import pixel_corners, warp_noise_video
from warped_fast.noise.gwtf import gwtf_transport, gwtf_transport_reference
from warped_fast.noise.hiwyn import hiwyn_transport, hiwyn_transport_reference
from warped_fast.noise.infres import infres_transport, infres_transport_reference
from warped_fast.ops import _cpu

from .common import jittered_similarity, translation

pytestmark = pytest.mark.skipif(not wf.backend_info("cpu")["cpu_ext"], reason="needs the compiled module")

CASES = [
    (2, 12, 10, 8, 8, {}),
    (3, 7, 9, 3, 8, {"scale": 1.3, "angle_deg": 20.0}),  # shrink + rotation, some polygons outside
    (1, 9, 8, 4, 1, {"scale": 1.6}),  # clipped windows
    (4, 6, 6, 8, 8, {"shift": (4.5, 2.0)}),  # mostly outside: empty polygons -> fresh
    (3, 17, 29, 8, 8, {"jitter": 8.0}),  # folds, self-intersecting quads
    (1, 1, 1, 5, 8, {"scale": 0.6}),  # one pixel
    (2, 5, 3, 32, 3, {"jitter": 3.0}),  # a full 32-bit mask per sub-row
    (2, 4, 7, 1, 8, {"angle_deg": 30.0}),  # k = 1: one sub-pixel per pixel
]


def _inputs(c, h, w, k, kw, gen):
    prev = torch.randn(c, h, w, generator=gen)
    z = torch.randn(c, h, w, k, k, generator=gen)
    fresh = torch.randn(c, h, w, generator=gen)
    back, _ = jittered_similarity(h, w, gen, **kw)
    return prev, pixel_corners(back), z, fresh


@pytest.mark.parametrize("c,h,w,k,max_extent,kw", CASES)
def test_hiwyn_cpu_matches_reference(c, h, w, k, max_extent, kw, gen):
    prev, corners, z, fresh = _inputs(c, h, w, k, kw, gen)
    ref = hiwyn_transport_reference(prev, corners, z, fresh, max_extent)
    with wf.use_backend("cpu"):
        out = hiwyn_transport(prev, corners, z, fresh, max_extent)
    assert_close(out, ref, atol=2e-5, what="hiwyn C++ vs reference")
    # The covered sets are the reference's, sub-pixel for sub-pixel: with x = 1 and z = 0 a pixel's
    # value is sqrt(covered count) / k, and a count off by one moves it by more than 1e-4.
    ones, zeros = torch.ones_like(prev), torch.zeros_like(z)
    ref = hiwyn_transport_reference(ones, corners, zeros, fresh, max_extent)
    with wf.use_backend("cpu"):
        out = hiwyn_transport(ones, corners, zeros, fresh, max_extent)
    assert_close(out, ref, atol=1e-6, what="hiwyn C++ covered counts")


def test_hiwyn_cpu_takes_any_layout_and_dtype(gen):
    c, h, w, k = 3, 9, 11, 4
    prev, corners, z, fresh = _inputs(c, h, w, k, {"jitter": 2.0}, gen)
    ref = hiwyn_transport_reference(prev, corners, z, fresh)
    with wf.use_backend("cpu"):
        out = hiwyn_transport(
            prev.transpose(1, 2).contiguous().transpose(1, 2),  # non-contiguous
            corners.double(),
            z.transpose(-1, -2).contiguous().transpose(-1, -2),
            torch.cat((fresh, fresh), 2)[:, :, :w],
        )
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert_close(out, ref, atol=2e-5, what="hiwyn C++, strided inputs")


@pytest.mark.parametrize(
    "method,opts",
    [("hiwyn", {}), ("hiwyn", {"upsample": 3}), ("infres", {}), ("gwtf", {}), ("gwtf", {"upsample": 2})],
)
def test_warpers_use_cpu_kernels_by_default(method, opts):
    assert wf.backend_info("cpu")["ops"][method] == "cpu"
    back, fwd = jittered_similarity(8, 10, torch.Generator().manual_seed(0), jitter=2.0)
    back, fwd = back[None].expand(3, 2, 8, 10), fwd[None].expand(3, 2, 8, 10)
    out = warp_noise_video(method, (2, 8, 10), back, fwd, generator=3, **opts)
    with wf.use_backend("reference"):
        ref = warp_noise_video(method, (2, 8, 10), back, fwd, generator=3, **opts)
    assert_close(out, ref, atol=5e-5, what=f"{method} clip, C++ vs reference")


@pytest.mark.parametrize("method", ["hiwyn", "infres", "gwtf"])
def test_cpu_integer_translation_is_exact(method):
    back, fwd = translation(3, 7, 9, (2, -1))
    with wf.use_backend("cpu"):
        v = warp_noise_video(method, (2, 7, 9), back, fwd, generator=1)
    for j in (1, 2):
        assert torch.equal(v[j][:, :-1, 2:], v[j - 1][:, 1:, :-2])


def test_hiwyn_non_finite_corners(gen):
    c, h, w, k = 2, 6, 7, 4
    prev, corners, z, fresh = _inputs(c, h, w, k, {}, gen)
    corners[0, 2, 3] = float("nan")
    corners[1, 4, 4] = float("inf")
    with pytest.raises(ValueError, match="corners: expected finite values"):
        hiwyn_transport(prev, corners, z, fresh)
    # Unchecked (value checks off), the kernel stays defined: the quads of a non-finite corner get fresh
    # noise, the others their values.
    with wf.ops.value_checks(False), wf.use_backend("cpu"):
        out = hiwyn_transport(prev, corners, z, fresh)
    bad = torch.zeros(h, w, dtype=torch.bool)
    bad[1:3, 2:4] = bad[3:5, 3:5] = True
    assert torch.equal(out[:, bad], fresh[:, bad])
    corners[:, 2, 3] = corners[:, 4, 4] = 0.0
    with wf.use_backend("cpu"):
        ok = hiwyn_transport(prev, corners, z, fresh)
    assert torch.equal(out[:, ~bad], ok[:, ~bad])


FLOW_CASES = [(3, 11, 13, 1.0), (1, 5, 4, 6.0), (4, 17, 29, 8.0), (2, 1, 1, 1.0), (2, 3, 40, 0.0)]


@pytest.mark.parametrize("missing", ["fill", "renormalize"])
@pytest.mark.parametrize("c,h,w,jitter", FLOW_CASES)
def test_infres_cpu_matches_reference(missing, c, h, w, jitter, gen):
    prev = torch.randn(c, h, w, generator=gen)
    z = torch.randn(c, 4, h, w, generator=gen)
    fresh = torch.randn(c, h, w, generator=gen)
    _, fwd = jittered_similarity(h, w, gen, jitter=jitter, scale=1.2)
    ref = infres_transport_reference(prev, fwd, z, fresh, missing, 0.05)
    with wf.use_backend("cpu"):
        out = infres_transport(
            prev, fwd.double(), z, fresh.transpose(1, 2).contiguous().transpose(1, 2), missing, 0.05
        )
    # the same sums in the same order; torch's vectorized square root may round an ulp off
    assert_close(out, ref, atol=2e-6, what=f"infres C++ vs reference ({missing})")


@pytest.mark.parametrize("c,h,w,jitter", FLOW_CASES)
def test_gwtf_cpu_matches_reference(c, h, w, jitter, gen):
    q = torch.randn(c, h, w, generator=gen)
    weight = torch.rand(h, w, generator=gen) + 0.3
    zc, ze, fresh = (torch.randn(c, h, w, generator=gen) for _ in range(3))
    back, fwd = jittered_similarity(h, w, gen, jitter=jitter, scale=1.2)
    ref, ref_w = gwtf_transport_reference(q, weight, fwd, back, zc, ze, fresh)
    with wf.use_backend("cpu"):
        out, out_w = gwtf_transport(q, weight.double(), fwd, back.transpose(1, 2).contiguous().transpose(1, 2),
                                    zc, ze, fresh)  # fmt: skip
    assert_close(out, ref, atol=2e-6, what="gwtf noise C++ vs reference")
    assert torch.equal(out_w, ref_w)  # the density: the same sums in the same order, no square root


def test_infres_gwtf_cpu_non_finite_flow(gen):
    """NaN/inf flows (the warpers reject them; the transports take them): those particles go nowhere,
    as in the reference."""
    c, h, w = 2, 6, 7
    prev, fresh = torch.randn(c, h, w, generator=gen), torch.randn(c, h, w, generator=gen)
    back, fwd = jittered_similarity(h, w, gen)
    for f in (fwd, back):
        f[0, 2, 3], f[1, 4, 4] = float("nan"), float("inf")
    z = torch.randn(c, 4, h, w, generator=gen)
    draws = [torch.randn(c, h, w, generator=gen) for _ in range(3)]
    weight = torch.rand(h, w, generator=gen) + 0.5
    outs = {}
    for backend in ("cpu", "reference"):
        with wf.use_backend(backend):
            outs[backend] = (
                infres_transport(prev, fwd, z, fresh),
                *gwtf_transport(prev, weight, fwd, back, *draws),
            )
    for what, out, ref in zip(
        ("infres", "gwtf", "gwtf density"), outs["cpu"], outs["reference"], strict=True
    ):
        assert torch.isfinite(out).all(), what
        assert_close(out, ref, atol=2e-6, what=f"{what} with non-finite flows")


@pytest.mark.parametrize("method", ["hiwyn", "infres", "gwtf"])
def test_cpu_kernels_same_with_any_thread_count(method, gen):
    """Frames large enough for several threads: the result is the one-thread result, bit for bit (each
    output is written by one task, in a fixed order), and the reference's to float32 rounding."""
    c, h, w = 4, 128, 136
    back, fwd = jittered_similarity(h, w, gen, jitter=2.0)
    prev, fresh = torch.randn(c, h, w, generator=gen), torch.randn(c, h, w, generator=gen)
    if method == "hiwyn":
        fn, args = (
            hiwyn_transport,
            (prev, pixel_corners(back), torch.randn(c, h, w, 8, 8, generator=gen), fresh),
        )
    elif method == "infres":
        fn, args = infres_transport, (prev, fwd, torch.randn(c, 4, h, w, generator=gen), fresh)
    else:
        draws = [torch.randn(c, h, w, generator=gen) for _ in range(2)]
        fn, args = gwtf_transport, (prev, torch.rand(h, w, generator=gen) + 0.5, fwd, back, *draws, fresh)
    threads = torch.get_num_threads()
    try:
        with wf.use_backend("cpu"):
            torch.set_num_threads(max(threads, 2))
            assert _cpu.threads(c * h * w) >= 2  # the kernels' thread count for this work
            many = fn(*args)
            torch.set_num_threads(1)
            one = fn(*args)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(
        many if isinstance(many, tuple) else (many,), one if isinstance(one, tuple) else (one,), strict=True
    ):
        assert torch.equal(a, b)
    with wf.use_backend("reference"):
        ref = fn(*args)
    assert_close(many[0] if isinstance(many, tuple) else many, ref[0] if isinstance(ref, tuple) else ref,
                 atol=2e-5, what=f"{method}, several threads")  # fmt: skip


def test_cpu_kernels_propagate_non_finite_values_as_the_reference(gen):
    """NaN/inf in the previous noise or the draws reach the same outputs as in the reference."""
    c, h, w = 2, 9, 10
    back, fwd = jittered_similarity(h, w, gen, jitter=2.0, angle_deg=45.0)
    prev, fresh = torch.randn(c, h, w, generator=gen), torch.randn(c, h, w, generator=gen)
    prev[0, 3, 4], prev[1, 0, 9] = float("nan"), float("inf")
    z = torch.randn(c, h, w, 4, 4, generator=gen)
    z[1, 5, 5, 2, 1] = float("nan")
    zi = torch.randn(c, 4, h, w, generator=gen)
    zi[0, 2, 6, 6] = float("nan")
    zc, ze = torch.randn(c, h, w, generator=gen), torch.randn(c, h, w, generator=gen)
    fwd[:, 0, :] = -50.0  # the first row's particles leave the frame
    zc[0, 0, 3] = float("nan")  # ... one of them with a NaN draw
    weight = torch.rand(h, w, generator=gen) + 0.5
    calls = {
        "hiwyn": lambda: hiwyn_transport(prev, pixel_corners(back), z, fresh),
        "infres": lambda: infres_transport(prev, fwd, zi, fresh),
        "gwtf": lambda: gwtf_transport(prev, weight, fwd, back, zc, ze, fresh)[0],
    }
    for method, call in calls.items():
        with wf.use_backend("cpu"):
            out = call()
        with wf.use_backend("reference"):
            ref = call()
        assert (~torch.isfinite(ref)).any(), method
        assert torch.equal(torch.isfinite(out), torch.isfinite(ref)), method
        ok = torch.isfinite(ref)
        assert_close(out[ok], ref[ok], atol=2e-5, what=f"{method}, finite outputs")


def test_cpu_kernels_frame_limits_and_large_extent(gen):
    big = 2**24 + 1
    one = torch.zeros(1, 1, 1)
    with wf.use_backend("cpu"), pytest.raises(ValueError, match="prev: frame too large for the CPU kernel"):
        infres_transport(
            one.expand(1, 1, big), one.expand(2, 1, big), one.expand(1, 4, 1, big), one.expand(1, 1, big)
        )
    with wf.use_backend("cpu"), pytest.raises(ValueError, match="q: frame too large for the CPU kernel"):
        f, p = one.expand(2, 1, big), one.expand(1, 1, big)
        gwtf_transport(p, torch.ones(1, 1).expand(1, big), f, f, p, p, p)  # density > 0
    w = 2**22 + 1  # times k = 4 sub-pixels: past 2^24
    with wf.use_backend("cpu"), pytest.raises(ValueError, match=r"prev: frame too large .* x 4 sub-pixels"):
        p = one.expand(1, 1, w)
        hiwyn_transport(p, one.expand(2, 2, w + 1), one[..., None, None].expand(1, 1, w, 4, 4), p)
    # max_extent past any frame side: the same as the side itself (and as the reference)
    prev, corners, z, fresh = _inputs(2, 6, 7, 4, {"scale": 2.5}, gen)
    with wf.use_backend("cpu"):
        huge = hiwyn_transport(prev, corners, z, fresh, 2**40)
        side = hiwyn_transport(prev, corners, z, fresh, 7)
    assert torch.equal(huge, side)
    assert_close(
        huge, hiwyn_transport_reference(prev, corners, z, fresh, 2**40), atol=2e-5, what="max_extent"
    )


def test_cpu_kernels_ignore_the_default_device(gen):
    c, h, w = 2, 5, 6
    _, fwd = jittered_similarity(h, w, gen)
    args = (torch.randn(c, h, w), fwd, torch.randn(c, 4, h, w), torch.randn(c, h, w))
    with wf.use_backend("cpu"):
        expect = infres_transport(*args)
        with torch.device("meta"):  # scratch tensors follow the inputs, not the default device
            out = infres_transport(*args)
    assert out.device.type == "cpu" and torch.equal(out, expect)


def test_gwtf_zero_density_and_value_check_switch_are_refused(gen):
    c, h, w = 2, 4, 5
    q = torch.randn(c, h, w, generator=gen)
    flow = torch.zeros(2, h, w)
    weight = torch.ones(h, w)
    weight[1, 2] = 0
    with pytest.raises(ValueError, match="weight: expected a density > 0"):
        gwtf_transport(q, weight, flow, flow, q, q, q)
    with pytest.raises(TypeError, match="enabled: expected True or False"):
        wf.ops.set_value_checks("False")
