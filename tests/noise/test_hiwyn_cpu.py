"""The C++ CPU kernel of HIWYN (csrc/hiwyn.cpp) against the PyTorch reference."""

import pytest
import torch

import warped_fast as wf
from tests.helpers import assert_close
from warped_fast.noise import pixel_corners, warp_noise_video
from warped_fast.noise.hiwyn import hiwyn_transport, hiwyn_transport_reference

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
    # value is sqrt(covered count) / k, and a count off by one moves it by > 1e-3.
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


def test_hiwyn_uses_cpu_kernel_by_default():
    assert wf.backend_info("cpu")["ops"]["hiwyn"] == "cpu"
    back, fwd = jittered_similarity(8, 10, torch.Generator().manual_seed(0), jitter=2.0)
    back = back[None].expand(3, 2, 8, 10)
    out = warp_noise_video("hiwyn", (2, 8, 10), back, None, generator=3)
    with wf.use_backend("reference"):
        ref = warp_noise_video("hiwyn", (2, 8, 10), back, None, generator=3)
    assert_close(out, ref, atol=5e-5, what="hiwyn clip, C++ vs reference")


def test_hiwyn_cpu_integer_translation_is_exact():
    back, fwd = translation(3, 7, 9, (2, -1))
    v = warp_noise_video("hiwyn", (2, 7, 9), back, fwd, generator=1)
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
