"""The compiled Triton kernels of hiwyn / infres / gwtf on the GPU against the PyTorch implementations
(bench/gpu_check.sh runs these with TRITON_INTERPRET=0)."""

import pytest
import torch

import warped_fast as wf
from warped_fast.noise import pixel_corners
from warped_fast.noise.gwtf import gwtf_transport, gwtf_transport_reference
from warped_fast.noise.hiwyn import hiwyn_transport, hiwyn_transport_reference
from warped_fast.noise.infres import infres_transport, infres_transport_reference

from .common import similarity


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["hiwyn", "infres", "gwtf"])
def test_triton_gpu_matches_reference(method):
    """On the GPU machine: the compiled Triton kernels against the CPU PyTorch implementation, fed the
    same random draws (128x128x4, a zoom + rotation + pan)."""
    gen = torch.Generator().manual_seed(0)
    c, h, w = 4, 128, 128
    back, fwd = similarity(2, h, w, scale=0.97, angle_deg=1.5, shift=(0.37, -0.21))
    back, fwd = back[0], fwd[0]
    prev = torch.randn(c, h, w, generator=gen)
    fresh = torch.randn(c, h, w, generator=gen)
    if method == "hiwyn":
        z = torch.randn(c, h, w, 8, 8, generator=gen)
        corners = pixel_corners(back)
        args = (prev, corners, z, fresh)
        ref = hiwyn_transport_reference(*args)
        with wf.use_backend("triton"):  # no silent fallback to the PyTorch path
            out = hiwyn_transport(*(a.cuda() for a in args))
    elif method == "infres":
        z = torch.randn(c, 4, h, w, generator=gen)
        ref = infres_transport_reference(prev, fwd, z, fresh)
        with wf.use_backend("triton"):
            out = infres_transport(prev.cuda(), fwd.cuda(), z.cuda(), fresh.cuda())
    else:
        weight = torch.rand(h, w, generator=gen) + 0.5
        zc, ze = torch.randn(c, h, w, generator=gen), torch.randn(c, h, w, generator=gen)
        args = (prev, weight, fwd, back, zc, ze, fresh)
        ref, ref_w = gwtf_transport_reference(*args)
        with wf.use_backend("triton"):
            out, out_w = gwtf_transport(*(a.cuda() for a in args))
        # the density carried to the next frame
        torch.testing.assert_close(out_w.cpu(), ref_w, atol=2e-6, rtol=0)
    assert out.is_cuda
    # hiwyn: the crossing test may flip for a sub-pixel centre within float rounding of an edge
    # (FMA on the GPU); allow a handful of pixels off, the rest tight.
    err = (out.cpu() - ref).abs()
    assert (err > 1e-4).sum() <= (5 if method == "hiwyn" else 0), f"{method}: max err {err.max():.2e}"
    # one flipped sub-pixel of 64 moves a value by about 1/8 of a unit-variance draw, not more
    assert err.max() < 0.5, f"{method}: max err {err.max():.2e}"
