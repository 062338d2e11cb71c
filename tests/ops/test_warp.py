"""warp / occlusion_mask / compose_coords and their gradients: fast paths against the reference."""

import pytest
import torch

import warped_fast as wf
from tests.helpers import assert_close, smooth_flow
from warped_fast import reference
from warped_fast.ops import _eager

try:
    from warped_fast.triton import warp as triton_warp
except ImportError:  # no triton: the tests that use it skip
    triton_warp = None

SHAPES = [(1, 3, 17, 29), (3, 1, 8, 5), (2, 4, 6, 9), (1, 0, 5, 7)]
LOW = [torch.float16, torch.bfloat16]


def _low_precision_ok(fast, ref_lp, ref64, what):
    """Low-precision fast path: error vs float64 at most 2x that of the reference run in that precision."""
    ref_err = (ref_lp.double() - ref64.double()).abs().max().item()
    assert_close(fast, ref64, atol=2 * ref_err + 1e-6, what=what)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_back", [False, True])
def test_warp_matches_reference(shape, with_back, fast_backend, gen):
    n, c, h, w = shape
    img = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    flow = smooth_flow(n, h, w, gen)
    back = smooth_flow(n, h, w, gen) if with_back else None
    r_out, r_valid = reference.warp(img, flow, back)
    for dt in (torch.float32, torch.float64) if fast_backend == "cpu" else (torch.float32,):
        with wf.use_backend(fast_backend):
            out, valid = wf.warp(img.to(dt), flow.to(dt), None if back is None else back.to(dt))
        assert out.dtype == dt and valid.dtype == torch.bool and valid.shape == (n, 1, h, w)
        assert_close(out, r_out, atol=1e-5 if dt == torch.float32 else 1e-12, what=f"warp {dt}")
        assert torch.equal(valid, r_valid), f"valid differs at {int((valid != r_valid).sum())} pixels"
        assert not valid.all() and (with_back or valid.any())


@pytest.mark.skipif(not wf.backend_info("cpu")["triton"], reason="needs triton with TRITON_INTERPRET=1")
@pytest.mark.parametrize("c", [1, 3, 5, 9])
@pytest.mark.parametrize("with_back", [False, True])
def test_triton_channel_tile_matches_reference(c, with_back, monkeypatch, gen):
    """The forward warp's [channels, pixels] tile path (up to 8 channels; 9 takes the channel loop)."""
    monkeypatch.setattr(triton_warp, "_CHANNEL_TILE_MAX", 8)
    n, h, w = 2, 13, 19
    img = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    flow = smooth_flow(n, h, w, gen)
    back = smooth_flow(n, h, w, gen) if with_back else None
    r_out, r_valid = reference.warp(img, flow, back)
    with wf.use_backend("triton"):
        out, valid = wf.warp(img.float(), flow.float(), None if back is None else back.float())
        half, _ = wf.warp(img.half(), flow.float(), None if back is None else back.float())
    assert_close(out, r_out, atol=1e-5, what=f"warp channel tile C={c}")
    assert torch.equal(valid, r_valid)
    assert half.dtype == torch.float16
    assert_close(half, r_out, atol=5e-3, what=f"warp channel tile C={c} float16")


@pytest.mark.parametrize("dtype", LOW)
def test_warp_low_precision(dtype, fast_backend, gen):
    _warp_low_precision_case(dtype, fast_backend, "cpu", (2, 3, 11, 13), gen)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", LOW)
def test_triton_gpu_warp_low_precision(dtype, gen):
    """The compiled Triton warp and splat in float16 / bfloat16 (the interpreter emulates their rounding)."""
    _warp_low_precision_case(dtype, "triton", "cuda", (2, 3, 33, 47), gen)


def _warp_low_precision_case(dtype, backend, device, shape, gen):
    n, c, h, w = shape
    img = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    flow = smooth_flow(n, h, w, gen)
    cot = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    ref64, _ = reference.warp(img, flow)
    ref_lp, _ = reference.warp(img.to(dtype), flow.to(dtype))
    with wf.use_backend(backend):
        out, _ = wf.warp(img.to(device, dtype), flow.float().to(device))
        splat = _eager.call("warp_image_grad", cot.to(device, dtype), flow.float().to(device), None)
    assert out.dtype == dtype and splat.dtype == dtype
    _low_precision_ok(out.cpu(), ref_lp, ref64, f"warp {dtype}")
    splat64 = reference.warp_image_grad(cot, flow)
    _low_precision_ok(splat.cpu(), reference.warp_image_grad(cot.to(dtype), flow.to(dtype)), splat64, "splat")


@pytest.mark.parametrize("shape", [(1, 3, 17, 29), (3, 2, 6, 5)])
def test_warp_gradients(shape, fast_backend, gen):
    n, c, h, w = shape
    img = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    flow = smooth_flow(n, h, w, gen)
    cot = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    dt = torch.float32
    i1, f1 = img.to(dt).requires_grad_(), flow.to(dt).requires_grad_()
    with wf.use_backend(fast_backend):
        gi, gf = torch.autograd.grad(wf.warp(i1, f1)[0], (i1, f1), cot.to(dt))
    i2, f2 = img.clone().requires_grad_(), flow.clone().requires_grad_()
    ri, rf = torch.autograd.grad(reference.warp(i2, f2)[0], (i2, f2), cot)
    assert_close(gi, ri, atol=1e-5, what="d warp / d image (splat)")
    assert_close(gf, rf, atol=1e-4, rtol=1e-5, what="d warp / d flow")


@pytest.mark.parametrize("flow_dtype", [torch.float64, torch.float16])
def test_flow_dtype_other_than_the_image(flow_dtype, fast_backend, gen):
    """Every backend takes any float flow beside a float32 image or coords (cast to float32), and the
    flow's gradient comes back in the flow's dtype."""
    n, c, h, w = 2, 3, 9, 14
    img = torch.randn(n, c, h, w, generator=gen)
    flow = smooth_flow(n, h, w, gen).to(flow_dtype)
    back = smooth_flow(n, h, w, gen).to(flow_dtype)
    r_out, r_valid = reference.warp(img.double(), flow.double(), back.double())
    r_coords = reference.compose_coords(wf.identity_coords(h, w, n).double(), flow.double())
    f1 = flow.clone().requires_grad_()
    with wf.use_backend(fast_backend):
        out, valid = wf.warp(img, f1, back)
        (gf,) = torch.autograd.grad(out, f1, torch.ones_like(out))
        coords = wf.compose_coords(wf.identity_coords(h, w, n), flow)
    assert out.dtype == torch.float32 and gf.dtype == flow_dtype
    assert_close(out, r_out, atol=1e-5, what=f"warp with {flow_dtype} flow")
    assert torch.equal(valid, r_valid)
    assert_close(coords, r_coords, atol=1e-4, what=f"compose_coords with {flow_dtype} flow")


@pytest.mark.parametrize("spread", [1.0, 6.0])
def test_compose_coords_gradients(spread, fast_backend, gen):
    """compose_coords is differentiable in coords and flow on every backend: the float64 reference's
    autograd (bilinear inside the frame, linear extrapolation outside: spread 6 px leaves it often)."""
    n, h, w = 2, 7, 9
    f64 = torch.float64
    coords = wf.identity_coords(h, w, n).double() + torch.randn(n, h, w, 2, generator=gen, dtype=f64)
    flow = torch.randn(n, 2, h, w, generator=gen, dtype=f64) * spread
    cot = torch.randn(n, h, w, 2, generator=gen, dtype=f64)
    c1, f1 = coords.float().requires_grad_(), flow.float().requires_grad_()
    with wf.use_backend(fast_backend):
        gc, gf = torch.autograd.grad(wf.compose_coords(c1, f1), (c1, f1), cot.float())
    c2, f2 = coords.clone().requires_grad_(), flow.clone().requires_grad_()
    rc, rf = torch.autograd.grad(reference.compose_coords(c2, f2), (c2, f2), cot)
    assert gc.dtype == gf.dtype == torch.float32
    assert_close(gc, rc, atol=1e-4, rtol=1e-5, what="d compose / d coords")
    assert_close(gf, rf, atol=1e-4, rtol=1e-5, what="d compose / d flow")
    (g_flow_only,) = torch.autograd.grad(wf.compose_coords(coords.float(), f1), f1, cot.float())
    assert_close(g_flow_only, rf, atol=1e-4, rtol=1e-5, what="d compose / d flow alone")


def test_compose_coords_double_backward(fast_backend, gen):
    """A gradient of compose_coords taken with create_graph=True is itself differentiable (a gradient
    penalty): the same as float64 autograd of the reference, twice."""
    n, h, w = 1, 5, 7
    f64 = torch.float64
    coords = wf.identity_coords(h, w, n).double() + torch.randn(n, h, w, 2, generator=gen, dtype=f64)
    flow = torch.randn(n, 2, h, w, generator=gen, dtype=f64) * 4
    cot = torch.randn(n, h, w, 2, generator=gen, dtype=f64)

    def penalty(compose, c, f):
        (gf,) = torch.autograd.grad(compose(c, f), f, cot.to(c.dtype), create_graph=True)
        return torch.autograd.grad(gf.square().sum(), (c, f))

    c1, f1 = coords.float().requires_grad_(), flow.float().requires_grad_()
    with wf.use_backend(fast_backend):
        got = penalty(wf.compose_coords, c1, f1)
    want = penalty(reference.compose_coords, coords.clone().requires_grad_(), flow.clone().requires_grad_())
    for name, g, r in zip(("coords", "flow"), got, want, strict=True):
        assert_close(g, r, atol=1e-3, rtol=1e-4, what=f"d/d{name} of |d compose / d flow|^2")
    assert max(r.abs().max().item() for r in want) > 0.1  # the second-order term is not empty


def test_warp_gradcheck_float64(gen):
    n, c, h, w = 2, 2, 5, 6
    img = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    flow = smooth_flow(n, h, w, gen, scale=1.5).requires_grad_()
    with wf.use_backend("cpu"):
        assert torch.autograd.gradcheck(lambda i, f: wf.warp(i, f)[0], (img, flow), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 17, 29), (3, 5, 4), (1, 1, 6), (2, 6, 1)])
def test_compose_coords_matches_reference(shape, fast_backend, gen):
    n, h, w = shape
    coords = wf.identity_coords(h, w, n).double() + torch.randn(
        n, h, w, 2, generator=gen, dtype=torch.float64
    )
    flow = smooth_flow(n, h, w, gen, scale=6.0)  # many samples far outside: linear extrapolation
    ref = reference.compose_coords(coords, flow)
    dts = (torch.float32, torch.float64) if fast_backend == "cpu" else (torch.float32,)
    for dt in dts:
        with wf.use_backend(fast_backend):
            out = wf.compose_coords(coords.to(dt), flow.to(dt))
        assert out.dtype == dt
        assert_close(out, ref, atol=1e-4 if dt == torch.float32 else 1e-10, what=f"compose_coords {dt}")


def test_compose_identity_and_translation(fast_backend):
    h, w = 9, 12
    ident = wf.identity_coords(h, w, 2)
    flow = torch.zeros(2, 2, h, w)
    flow[:, 0], flow[:, 1] = 1.25, -0.5  # backward flow: pixel x of the new frame came from x + f
    with wf.use_backend(fast_backend):
        out = wf.compose_coords(ident, flow)
        twice = wf.compose_coords(out, flow)
    # Composition of translations is exact, also where x + f leaves the frame (extrapolation).
    assert_close(out, ident + torch.tensor([1.25, -0.5]), atol=1e-5, what="one translation")
    assert_close(twice, ident + torch.tensor([2.5, -1.0]), atol=1e-5, what="two translations")


def test_occlusion_mask(fast_backend, gen):
    n, h, w = 2, 16, 20
    flow = torch.zeros(n, 2, h, w, dtype=torch.float64)
    flow[:, 0] = 2.3
    back = -flow.clone()
    back[:, :, 4:8, 6:12] = 5.7  # an inconsistent patch
    ref = reference.occlusion_mask(flow, back)
    with wf.use_backend(fast_backend):
        out = wf.occlusion_mask(flow.float(), back.float())
    assert torch.equal(out, ref)
    assert out[:, :, :, -2:].all(), "columns leaving the frame are flagged"
    assert not out[:, :, 10:, :10].any(), "consistent pixels are not flagged"
    assert out[:, :, 5:7, 5:8].all(), "the inconsistent patch is flagged"


@pytest.mark.parametrize(
    "op,args",
    [
        (
            "warp",
            lambda g: (torch.randn(2, 3, 5, 6, generator=g), torch.randn(2, 2, 5, 6, generator=g), None),
        ),
        (
            "warp",
            lambda g: (
                torch.randn(1, 2, 4, 7, generator=g),
                torch.randn(1, 2, 4, 7, generator=g),
                torch.randn(1, 2, 4, 7, generator=g),
            ),
        ),
        (
            "warp_image_grad",
            lambda g: (
                torch.randn(2, 3, 5, 6, generator=g),
                torch.randn(2, 2, 5, 6, generator=g),
                torch.rand(2, generator=g),
            ),
        ),
        (
            "warp_flow_grad",
            lambda g: (
                torch.randn(2, 3, 5, 6, generator=g),
                torch.randn(2, 3, 5, 6, generator=g),
                torch.randn(2, 2, 5, 6, generator=g),
            ),
        ),
        (
            "compose_coords",
            lambda g: (torch.randn(2, 5, 6, 2, generator=g), torch.randn(2, 2, 5, 6, generator=g)),
        ),
    ],
)
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "channels_last"])
def test_opcheck(op, args, gen, strided):
    """opcheck, also on channels-last (coordinates: permuted) inputs, whose outputs the fake kernels
    must describe as the contiguous tensors the kernels return."""
    a = args(gen)
    if strided:
        a = tuple(
            t.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
            if t is not None and t.dim() == 4 and t.shape[-1] == 2  # coords [N, H, W, 2]
            else t.to(memory_format=torch.channels_last)
            if t is not None and t.dim() == 4
            else t
            for t in a
        )
    if op == "warp":
        a = (a[0].requires_grad_(), a[1].requires_grad_(), a[2])
    if op == "compose_coords":
        a = tuple(t.requires_grad_() for t in a)
    torch.library.opcheck(getattr(torch.ops.warped_fast, op).default, a)


def test_noncontiguous_inputs(gen):
    img = torch.randn(2, 6, 7, 3, generator=gen).permute(0, 3, 1, 2)  # [2, 3, 6, 7], non-contiguous
    flow = torch.randn(2, 6, 7, 2, generator=gen).permute(0, 3, 1, 2)
    assert not img.is_contiguous() and not flow.is_contiguous()
    out, valid = wf.warp(img, flow)
    r_out, r_valid = reference.warp(img, flow)
    assert_close(out, r_out, atol=1e-5, what="non-contiguous warp")
    assert torch.equal(valid, r_valid)


def test_bad_inputs(gen):
    img = torch.randn(2, 3, 5, 6, generator=gen)
    flow = torch.randn(2, 2, 5, 6, generator=gen)
    with pytest.raises(ValueError, match=r"flow: expected shape \[2, 2, 5, 6\]"):
        wf.warp(img, flow[:, :, :4])
    with pytest.raises(ValueError, match="image: expected shape"):
        wf.warp(img[0], flow)
    with pytest.raises(TypeError, match="image: expected dtype"):
        wf.warp(img.int(), flow)
    with pytest.raises(ValueError, match="empty frame"):
        wf.warp(img[:, :, :0], flow[:, :, :0])
    with pytest.raises(ValueError, match="expected a tensor on"):
        wf.warp(img, flow.to("meta"))
    for v in (float("nan"), float("inf")):
        bad = flow.clone()
        bad[1, 0, 2, 2] = v
        with pytest.raises(ValueError, match="flow: expected finite values"):
            wf.warp(img, bad)
        with pytest.raises(ValueError, match="back_flow: expected finite values"):
            wf.warp(img, flow, bad)
        with pytest.raises(ValueError, match="flow: expected finite values"):
            wf.compose_coords(wf.identity_coords(5, 6, 2), bad)
    with pytest.raises(TypeError, match="coords: expected dtype"):
        wf.compose_coords(wf.identity_coords(5, 6, 2).half(), flow)
    with wf.use_backend("cuda"), pytest.raises(ValueError, match="not implemented"):
        wf.warp(img, flow)
    with pytest.raises(ValueError, match="backend must be one of"):
        with wf.use_backend("fast"):
            pass


def test_nonfinite_positions_do_not_crash_kernels(gen):
    # With value checks off, a NaN flow must give invalid pixels, not undefined behaviour.
    img = torch.randn(1, 2, 4, 5, generator=gen)
    flow = torch.zeros(1, 2, 4, 5)
    flow[0, 0, 1, 1] = float("nan")
    flow[0, 1, 2, 2] = float("inf")
    with wf.ops.value_checks(False):
        out, valid = wf.warp(img, flow)
    assert not valid[0, 0, 1, 1] and not valid[0, 0, 2, 2] and valid[0, 0, 0, 0]
    assert out[0, :, 1, 1].eq(0).all() and torch.isfinite(out).all()


def test_stereo_pair_warp_matches_independent_remap():
    """A real correspondence field: skimage's motorcycle pair with its ground-truth disparity."""
    skimage_data = pytest.importorskip("skimage.data")
    cv2 = pytest.importorskip("cv2")
    left, right, disp = skimage_data.stereo_motorcycle()
    s = 4  # downscale for speed
    left = torch.from_numpy(left[::s, ::s].mean(-1) / 255.0).float()
    right = torch.from_numpy(right[::s, ::s].mean(-1) / 255.0).float()
    disp = torch.from_numpy(disp[::s, ::s] / s).float()
    known = torch.isfinite(disp)  # the ground truth marks unknown disparities as inf
    disp = torch.where(known, disp, torch.zeros_like(disp))
    h, w = left.shape
    flow = torch.zeros(1, 2, h, w)
    flow[0, 0] = -disp  # left pixel x is at x - d in the right image
    out, valid = wf.warp(right[None, None], flow)
    valid = valid & known
    err_warp = ((out[0, 0] - left).abs() * valid[0, 0]).sum() / valid.sum()
    err_none = ((right - left).abs() * valid[0, 0]).sum() / valid.sum()
    assert err_warp < 0.6 * err_none, f"warped error {err_warp:.4f} vs unwarped {err_none:.4f}"
    xs, ys = torch.meshgrid(
        torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="xy"
    )
    remap = cv2.remap(
        right.numpy(), (xs - disp).numpy(), ys.numpy(), cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    m = valid[0, 0].numpy()
    diff = abs(out[0, 0].numpy() - remap)[m]
    assert diff.max() < 2e-2 and diff.mean() < 2e-3, (
        f"vs cv2.remap: max {diff.max():.2e} mean {diff.mean():.2e}"
    )


@pytest.mark.cuda
@pytest.mark.parametrize("tile", [0, 8])
@pytest.mark.parametrize("shape", SHAPES + [(4, 4, 128, 128)])
def test_triton_gpu_matches_reference(shape, tile, monkeypatch, gen):
    """Compiled Triton on the GPU; tile = 8: the forward warp's channel-tile path."""
    monkeypatch.setattr(triton_warp, "_CHANNEL_TILE_MAX", tile)
    n, c, h, w = shape
    img = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    flow, back = smooth_flow(n, h, w, gen), smooth_flow(n, h, w, gen)
    cot = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    r_out, r_valid = reference.warp(img, flow, back)
    with wf.use_backend("triton"):
        out, valid = wf.warp(img.float().cuda(), flow.float().cuda(), back.float().cuda())
        i1, f1 = img.float().cuda().requires_grad_(), flow.float().cuda().requires_grad_()
        gi, gf = torch.autograd.grad(wf.warp(i1, f1)[0], (i1, f1), cot.float().cuda())
        co = wf.compose_coords(wf.identity_coords(h, w, n).cuda(), flow.float().cuda())
    # float32 sample positions carry ~ulp(W) of error: allow twice the float32 reference's error
    r32 = reference.warp(img.float(), flow.float(), back.float())[0]
    ref_err = (r32.double() - r_out).abs().max().item() if r_out.numel() else 0.0
    assert_close(out, r_out, atol=max(1e-5, 2 * ref_err), what="warp triton gpu")
    assert torch.equal(valid.cpu(), r_valid)
    i2, f2 = img.clone().requires_grad_(), flow.clone().requires_grad_()
    ri, rf = torch.autograd.grad(reference.warp(i2, f2)[0], (i2, f2), cot)
    assert_close(gi, ri, atol=1e-4, what="splat triton gpu")
    assert_close(gf, rf, atol=1e-3, rtol=1e-4, what="flow grad triton gpu")
    assert_close(
        co, reference.compose_coords(wf.identity_coords(h, w, n).double(), flow), atol=1e-4, what="compose"
    )


def test_reference_adjoints_equal_autograd_of_reference_warp(gen):
    """The explicit reference splat and flow gradient are the autograd adjoints of the reference warp."""
    n, c, h, w = 2, 3, 7, 9
    img = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    flow = smooth_flow(n, h, w, gen).requires_grad_()
    cot = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    gi, gf = torch.autograd.grad(reference.warp(img, flow)[0], (img, flow), cot)
    assert_close(reference.warp_image_grad(cot, flow.detach()), gi, atol=1e-12, what="reference splat")
    assert_close(
        reference.warp_flow_grad(cot, img.detach(), flow.detach()), gf, atol=1e-12, what="reference flow grad"
    )


def test_occlusion_mask_names_its_own_arguments():
    with pytest.raises(ValueError, match="flow: empty"):
        wf.occlusion_mask(torch.zeros(1, 2, 0, 4), torch.zeros(1, 2, 0, 4))
    with pytest.raises(TypeError, match="back_flow: expected a tensor"):
        wf.occlusion_mask(torch.zeros(1, 2, 3, 4), None)


def test_reference_computes_in_float32_and_keeps_the_storage_dtype(gen):
    """Low-precision inputs: float32 math (no rounded sample positions), outputs in the documented dtype."""
    n, c, h, w = 1, 2, 4, 600
    img = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    flow = torch.zeros(n, 2, h, w, dtype=torch.float64)
    flow[:, 0] = 0.25  # exact in bfloat16, but x + 0.25 is not for x >= 128
    cot = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    ref64, valid64 = reference.warp(img, flow)
    splat64 = reference.warp_image_grad(cot, flow)
    for dt in LOW:
        out, valid = reference.warp(img.to(dt), flow.to(dt))
        assert out.dtype == dt and torch.equal(valid, valid64)
        # only the storage rounding of the image and the output is left
        assert_close(out, ref64, atol=3 * 2.0**-8 * img.abs().max().item(), what=f"reference warp {dt}")
        splat = reference.warp_image_grad(cot.to(dt), flow.to(dt))
        assert splat.dtype == dt
        assert_close(splat, splat64, atol=3 * 2.0**-8 * cot.abs().max().item(), what=f"reference splat {dt}")
    # a float32 flow beside a half image: outputs as the fast paths and the fake kernels say
    out, _ = reference.warp(img.half(), flow.float(), flow.float())
    assert out.dtype == torch.float16
    assert reference.warp_image_grad(cot.half(), flow.float(), torch.ones(n)).dtype == torch.float16
    assert reference.warp_flow_grad(cot.half(), img.half(), flow.float()).dtype == torch.float32
    assert reference.warp_flow_grad(cot.float(), img.float(), flow.half()).dtype == torch.float16
    coords = wf.identity_coords(h, w, n)
    assert reference.compose_coords(coords, flow).dtype == torch.float32
    with wf.use_backend("reference"):
        torch.library.opcheck(torch.ops.warped_fast.warp.default, (img.half(), flow.float(), None))


def _nonfinite_flow(n, h, w):
    flow = torch.zeros(n, 2, h, w)
    flow[0, 0, 1, 1] = float("nan")
    flow[0, 1, 2, 2] = float("inf")
    flow[0, 0, 3, 4] = -float("inf")
    flow[0, 1, 0, 3] = 1e20  # finite, far outside
    flow[0, 0, 2, 0] = -1e35
    return flow


def test_nonfinite_positions_sample_nothing_in_every_backend(fast_backend, gen):
    """Non-finite sample positions: all taps outside, output 0, invalid, no gradient; compose_coords
    gives NaN for a NaN position and does not crash on any non-finite one."""
    n, c, h, w = 1, 2, 5, 6
    img = torch.randn(n, c, h, w, generator=gen)
    cot = torch.randn(n, c, h, w, generator=gen)
    flow = _nonfinite_flow(n, h, w)
    back = torch.zeros(n, 2, h, w)
    bad = torch.zeros(n, 1, h, w, dtype=torch.bool)
    bad[0, 0, 1, 1] = bad[0, 0, 2, 2] = bad[0, 0, 3, 4] = bad[0, 0, 0, 3] = bad[0, 0, 2, 0] = True
    coords = wf.identity_coords(h, w, n) + 0.1 * torch.randn(n, h, w, 2, generator=gen)
    outs = {}
    for be in ("reference", fast_backend):
        with wf.use_backend(be), wf.ops.value_checks(False):
            out, valid = wf.warp(img, flow)
            _, valid_back = wf.warp(img, flow, back)
            gi = torch.ops.warped_fast.warp_image_grad(cot, flow, None)
            gf = torch.ops.warped_fast.warp_flow_grad(cot, img, flow)
            co = wf.compose_coords(coords, flow)
        outs[be] = out, valid, valid_back, gi, gf, co
        assert torch.isfinite(out).all() and out.masked_select(bad).eq(0).all(), be
        assert not (valid & bad).any() and not (valid_back & bad).any() and valid[~bad].all(), be
        assert torch.isfinite(gi).all() and torch.isfinite(gf).all(), be
        assert gf.masked_select(bad.expand(n, 2, h, w)).eq(0).all(), be
        assert co[0, 1, 1].isnan().all(), f"{be}: a NaN position composes to NaN"
        assert torch.isfinite(co[~bad[:, 0]]).all(), be
    names = ("out", "valid", "valid_back", "splat", "flow grad")
    for name, r, f in zip(names, outs["reference"][:5], outs[fast_backend][:5], strict=True):
        assert_close(f, r, atol=1e-5, what=name)
    r, f = outs["reference"][5], outs[fast_backend][5]  # compose: NaN / inf where the fast paths have them
    assert torch.equal(r.isnan(), f.isnan()) and torch.equal(r.isinf(), f.isinf())
    fin = torch.isfinite(r)
    assert_close(f[fin], r[fin], atol=1e-4, what="compose_coords away from the non-finite positions")


@pytest.mark.skipif(not wf.backend_info("cpu")["triton"], reason="needs triton with TRITON_INTERPRET=1")
def test_triton_compose_refuses_frames_past_int32_offsets():
    """compose_coords's interleaved offsets 2 (y W + x) are int32: H W >= 2^30 is refused, not wrapped
    (meta tensors: the check comes before any launch)."""
    for h, w in ((32768, 32768), (2**29, 2)):
        coords = torch.empty(1, h, w, 2, device="meta")
        flow = torch.empty(1, 2, h, w, device="meta")
        with pytest.raises(ValueError, match=r"frame too large .* expected < 1073741824"):
            triton_warp.compose_coords(coords, flow)
    triton_warp._check_frame(2**30 - 1, 2**15, pair=True)  # the largest frame taken


def test_backward_runs_under_the_backend_forced_at_the_forward(monkeypatch, gen):
    """Autograd runs CUDA backwards on its own threads, without the caller's context: here a backward on
    another thread, which must still run the backend forced when the forward ran."""
    import importlib
    import threading

    from warped_fast.ops import select

    seen = []
    real = select

    def spy(op, *args, **kwargs):
        backend = real(op, *args, **kwargs)
        seen.append((op, backend))
        return backend

    for module in ("warped_fast.ops.warp", "warped_fast.ops.guidance"):
        monkeypatch.setattr(importlib.import_module(module), "select", spy)
    img = torch.randn(1, 2, 5, 6, generator=gen, requires_grad=True)
    flow = torch.randn(1, 2, 5, 6, generator=gen)
    with wf.use_backend("reference"):
        out = wf.warp(img, flow)[0].square().sum() + wf.guidance_loss(img, img.detach() * 0.5, flow)
    seen.clear()
    worker = threading.Thread(target=out.backward)
    worker.start()
    worker.join()
    assert img.grad is not None and seen and all(b == "reference" for _, b in seen), seen


def test_infinite_values_behind_out_of_frame_taps_are_zero_on_every_backend():
    """A sample wholly outside the frame reads nothing: an inf in the border column it would clamp to
    gives 0, not inf * 0 = NaN, in the output and the flow gradient; an inf cotangent of such a sample
    splats nothing. The reference (the tests' oracle and the fallback) agrees with the kernels."""
    from warped_fast.ops._dispatch import available

    h, w = 3, 4
    img = torch.ones(1, 1, h, w)
    img[0, 0, :, w - 1] = float("inf")
    flow = torch.zeros(1, 2, h, w)
    flow[0, 0, 1, 1] = w + 0.5 - 1  # pixel (1, 1) samples x = 4.5
    cot = torch.zeros(1, 1, h, w)
    cot[0, 0, 0, 0] = float("inf")
    flow2 = torch.zeros(1, 2, h, w)
    flow2[0, 0, 0, 0] = -3.0  # pixel (0, 0) samples x = -3
    for backend in [b for b in ("reference", "cpu", "triton") if available(b, "cpu")]:
        with wf.use_backend(backend):
            i_, f_ = img.clone().requires_grad_(), flow.clone().requires_grad_()
            out, valid = wf.warp(i_, f_)
            _, gf = torch.autograd.grad(out, (i_, f_), torch.ones_like(out))
            splat = _eager.call("warp_image_grad", cot, flow2, None)
        assert out[0, 0, 1, 1] == 0 and not valid[0, 0, 1, 1], backend
        assert torch.equal(gf[0, :, 1, 1], torch.zeros(2)), backend
        assert torch.equal(splat[0, 0, 0], torch.zeros(w)), backend


def test_a_float64_flow_is_taken_in_the_images_precision_by_every_backend():
    """The kernels round a float64 flow to a float32 image's precision; the reference does too, so the
    validity of a sample 1e-9 px outside the frame does not depend on the backend."""
    from warped_fast.ops._dispatch import available

    img = torch.arange(1.0, 6.0).view(1, 1, 1, 5)
    flow = torch.zeros(1, 2, 1, 5, dtype=torch.float64)
    flow[0, 0, 0, 3] = -3 - 1e-9  # x = -1e-9: outside in float64, 0 in float32
    for backend in [b for b in ("reference", "cpu", "triton") if available(b, "cpu")]:
        with wf.use_backend(backend):
            out, valid = wf.warp(img, flow)
        assert bool(valid[0, 0, 0, 3]) and out[0, 0, 0, 3] == 1.0, backend
