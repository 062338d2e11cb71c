"""The NoiseWarper interface: names, options, determinism, incremental = whole clip, input checks."""

import numpy as np
import pytest
import torch

import warped_fast.noise as wn
from warped_fast.noise import METHODS, NoiseWarper, RFFConfig, make_noise_warper, warp_noise_video
from warped_fast.ops._dispatch import available

from .common import similarity

ALL = ["gp", "fixed", "resample", "nearest", "bilinear", "hiwyn", "infres", "gwtf"]
OPTIONS = {
    "gp": [
        {},
        {"rff": RFFConfig(num_features=64, shared_features=True)},
        {"occlusion": True},
        {"cuda_graph": True},  # ignored off CUDA: the same noise as the eager step
    ],
    "fixed": [{}, {"base": "gp"}],
    "resample": [{}, {"base": "gp"}],
    "nearest": [{}, {"base": "gp"}],
    "bilinear": [{}, {"base": "gp"}],
    "hiwyn": [{}, {"upsample": 3, "max_extent": 2}],
    "infres": [{}, {"missing": "renormalize"}],
    "gwtf": [{}, {"normalize_weights": False}, {"upsample": 2}],
}
CASES = [(m, o) for m in ALL for o in OPTIONS[m]]


def test_registry():
    assert sorted(METHODS) == sorted(ALL)
    for name, cls in METHODS.items():
        assert issubclass(cls, NoiseWarper) and cls.method == name
        assert isinstance(cls.needs_forward_flow, bool)
        assert cls.__doc__ and len(cls.__doc__) > 80, f"{name}: docstring"
    assert METHODS["infres"].needs_forward_flow and METHODS["gwtf"].needs_forward_flow
    assert not METHODS["hiwyn"].needs_forward_flow and not METHODS["gp"].needs_forward_flow
    for mod in (wn.gp_warp, wn.hiwyn, wn.infres, wn.gwtf, wn.grid_warp, wn.simple):
        assert "Known limits" in (mod.__doc__ or "") + "".join(
            c.__doc__ or "" for c in METHODS.values() if c.__module__ == mod.__name__
        ), mod.__name__


@pytest.mark.parametrize("method,opts", CASES, ids=[f"{m}-{i}" for m in ALL for i in range(len(OPTIONS[m]))])
def test_incremental_equals_clip_and_seeds(method, opts):
    t, c, h, w = 4, 3, 9, 11
    back, fwd = similarity(t, h, w)
    clip = warp_noise_video(method, (c, h, w), back, fwd, generator=7, **opts)
    assert clip.shape == (t, c, h, w) and clip.dtype == torch.float32 and torch.isfinite(clip).all()
    warper = make_noise_warper(method, **opts)
    frames = [warper.reset((c, h, w), torch.Generator().manual_seed(7))]
    frames += [warper.step(back[j], fwd[j]) for j in range(t - 1)]
    assert torch.equal(torch.stack(frames), clip), "incremental != whole clip"
    assert torch.equal(warp_noise_video(method, (c, h, w), back, fwd, generator=7, **opts), clip)
    other = warp_noise_video(method, (c, h, w), back, fwd, generator=8, **opts)
    assert not torch.equal(other, clip)
    if method == "fixed":
        assert all(torch.equal(clip[j], clip[0]) for j in range(t))
    else:
        assert not torch.equal(clip[1], clip[0])


def test_flows_in_float64_and_reset_restarts():
    back, fwd = similarity(3, 8, 8)
    w = make_noise_warper("gwtf")
    a0 = w.reset((2, 8, 8), 1)
    a1 = w.step(back[0].double(), fwd[0].double())
    b0 = w.reset((2, 8, 8), 1)
    b1 = w.step(back[0], fwd[0])
    assert torch.equal(a0, b0) and torch.equal(a1, b1)
    assert w.weight.shape == (8, 8) and abs(w.weight.mean().item() - 1) < 1e-5


def test_bad_inputs():
    with pytest.raises(ValueError, match="method"):
        make_noise_warper("perlin")
    with pytest.raises(ValueError, match="base"):
        make_noise_warper("nearest", base="pink")
    with pytest.raises(TypeError, match="rff"):
        make_noise_warper("gp", rff={"num_features": 3})
    with pytest.raises(ValueError, match="cuda_graph: not available with occlusion"):
        make_noise_warper("gp", occlusion=True, cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph: expected a bool"):
        make_noise_warper("gp", cuda_graph=1)
    with pytest.raises(ValueError, match="upsample"):
        make_noise_warper("hiwyn", upsample=0)
    with pytest.raises(ValueError, match="missing"):
        make_noise_warper("infres", missing="zero")
    with pytest.raises(ValueError, match="upsample"):
        make_noise_warper("gwtf", upsample=0)
    with pytest.raises(
        ValueError, match=r"k: not an option of the 'hiwyn' method; its options are \['upsample'"
    ):
        make_noise_warper("hiwyn", k=2)
    with pytest.raises(ValueError, match="mode: not an option of the 'nearest' method"):
        make_noise_warper("nearest", mode="bilinear")
    with pytest.raises(ValueError, match="sigma: expected a finite value > 0"):
        make_noise_warper("gp", sigma=float("inf"))
    with pytest.raises(TypeError, match="sigma: expected a real number"):
        make_noise_warper("gp", sigma="1")
    with pytest.raises(ValueError, match="generator: a seed must fit in 64 bits"):
        make_noise_warper("fixed").reset((1, 4, 4), 2**70)
    w = make_noise_warper("infres")
    with pytest.raises(RuntimeError, match="reset"):
        w.step(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        w.reset((4, 4), 0)
    with pytest.raises(TypeError, match="generator"):
        w.reset((1, 4, 4), "seed")
    w.reset((1, 4, 4), 0)
    with pytest.raises(ValueError, match="fwd_flow"):
        w.step(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="back_flow: expected shape"):
        w.step(torch.zeros(2, 4, 5), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="fwd_flow: expected finite"):
        w.step(torch.zeros(2, 4, 4), torch.full((2, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="back_flows"):
        warp_noise_video("gp", (1, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="fwd_flows"):
        warp_noise_video("gwtf", (1, 4, 4), torch.zeros(2, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="fwd_flows: the 'infres' method needs"):
        warp_noise_video("infres", (1, 4, 4), torch.zeros(2, 2, 4, 4))
    bad = torch.zeros(3, 2, 4, 4)
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"back_flows\[1\]: expected finite"):
        warp_noise_video("gp", (1, 4, 4), bad)


def test_cpu_device_index_numpy_ints_and_flows_with_gradients():
    import numpy as np

    back = torch.zeros(2, 2, 6, 8)
    a = warp_noise_video("gp", (2, 6, 8), back, generator=3, device="cpu:0")  # CPU tensors say "cpu"
    b = warp_noise_video("gp", (np.int64(2), 6, 8), back, generator=np.int64(3))
    assert torch.equal(a, b)
    # A flow that carries gradients: the noise does not, and the warper keeps no graph across frames.
    w = make_noise_warper("infres")
    w.reset((2, 6, 8), 0)
    flow = torch.full((2, 6, 8), 0.3, requires_grad=True)
    for _ in range(3):
        n = w.step(-flow * 1.0, flow * 1.0)
    assert not n.requires_grad and not any(
        t.requires_grad for t in vars(w).values() if isinstance(t, torch.Tensor)
    )


def test_transport_functions_check_their_arrays():
    c, h, w = 2, 5, 7
    z = torch.zeros
    with pytest.raises(ValueError, match=r"corners: expected shape \[2, 6, 8\], got \[2, 5, 7\]"):
        wn.hiwyn_transport(z(c, h, w), z(2, h, w), z(c, h, w, 4, 4), z(c, h, w))
    with pytest.raises(ValueError, match=r"z: expected shape \[C, H, W, k, k\]"):
        wn.hiwyn_transport(z(c, h, w), z(2, h + 1, w + 1), z(c, h, w, 16), z(c, h, w))
    with pytest.raises(ValueError, match=r"prev: expected shape \[C, H, W\]"):
        wn.infres_transport(z(h, w), z(2, h, w), z(c, 4, h, w), z(c, h, w))
    with pytest.raises(ValueError, match=r"fresh: expected shape \[2, 5, 7\]"):
        wn.gwtf_transport(z(c, h, w), z(h, w), z(2, h, w), z(2, h, w), z(c, h, w), z(c, h, w), z(c, h + 1, w))


@pytest.mark.cuda
@pytest.mark.parametrize("shared", [False, True])
def test_gp_cuda_graph_step_equals_eager(shared):
    """The captured step (compose_coords + gp_noise replayed from frame 2 on) gives the eager noise."""
    t, c, h, w = 6, 4, 40, 56
    back, _ = similarity(t, h, w)
    rff = RFFConfig(num_features=500, shared_features=shared)
    clips = []
    for graphed in (False, True):
        warper = make_noise_warper("gp", rff=rff, cuda_graph=graphed)
        frames = [warper.reset((c, h, w), 3, device="cuda")]
        frames += [warper.step(back[j].cuda()) for j in range(t - 1)]
        clips.append(torch.stack(frames))
        assert (warper._graph is not None) == graphed  # the graphed run really replays a capture
    assert clips[1].is_cuda and not torch.equal(clips[1][2], clips[1][3])
    assert torch.equal(clips[0], clips[1])


def test_device_seed_leaves_the_cpu_generator_alone():
    """Seeding a device generator does not advance the CPU one, so the RFF field drawn from it after
    is the same on every device; the seed is deterministic and differs between seeds."""
    from warped_fast.noise.base import _device_seed

    g = torch.Generator().manual_seed(11)
    seed = _device_seed(g)
    assert torch.equal(
        torch.randn(8, generator=g), torch.randn(8, generator=torch.Generator().manual_seed(11))
    )
    assert seed == _device_seed(torch.Generator().manual_seed(11))
    assert seed != _device_seed(torch.Generator().manual_seed(12))


@pytest.mark.cuda
@pytest.mark.parametrize("method,opts", [("gp", {}), ("nearest", {"base": "gp"})])
def test_gp_noise_same_on_cpu_and_cuda(method, opts):
    """An int seed gives the same GP field on the CPU and on CUDA (the kernels' float32 rounding aside)."""
    if method == "nearest" and not available("cuda", "cuda"):
        # gp_noise on CUDA is then the reference: absolute float32 phases, ~5e-3 off at nearest's
        # far-away fresh-noise tiles, where the kernels (CPU and CUDA) anchor their phases
        pytest.skip("the CUDA kernels are not built (the GPU's gp_noise is the reference)")
    t, c, h, w = 3, 4, 24, 40
    back, _ = similarity(t, h, w)
    clips = []
    for dev in ("cpu", "cuda"):
        warper = make_noise_warper(method, rff=RFFConfig(num_features=300), **opts)
        frames = [warper.reset((c, h, w), 5, device=dev)]
        frames += [warper.step(back[j].to(dev)) for j in range(t - 1)]
        clips.append(torch.stack(frames).cpu())
    torch.testing.assert_close(clips[1], clips[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "method", ["gp", "fixed", "nearest", "bilinear", "hiwyn", "infres", "gwtf", "resample"]
)
def test_returned_noise_is_the_callers(method):
    """Scaling a returned frame in place (``n *= sigma``) changes no later frame."""
    back, fwd = similarity(3, 8, 8)
    ref = warp_noise_video(method, (2, 8, 8), back, fwd, generator=3)
    w = make_noise_warper(method)
    frames = [w.reset((2, 8, 8), generator=3)]
    frames[0].mul_(80.0)
    for j in range(2):
        frames.append(w.step(back[j], fwd[j]))
        frames[-1].mul_(80.0)
    assert torch.allclose(torch.stack(frames) / 80.0, ref, atol=1e-6)


def test_failed_reset_keeps_the_warper_as_it_was():
    w = make_noise_warper("fixed")
    w.reset((2, 8, 8), 0)
    with pytest.raises(TypeError, match="generator"):
        w.reset((2, 16, 16), generator="1")
    assert w.shape == (2, 8, 8)
    if not torch.cuda.is_available():  # a device this process cannot use
        with pytest.raises((RuntimeError, AssertionError)):
            w.reset((2, 16, 16), 0, device="cuda:0")
        assert w.shape == (2, 8, 8) and w.device == torch.device("cpu")
    assert w.step(torch.zeros(2, 8, 8)).shape == (2, 8, 8)


@pytest.mark.parametrize("method", ["hiwyn", "resample"])
def test_failed_step_keeps_the_warper_as_it_was(method, monkeypatch):
    """A step that raises (HIWYN: a finite flow so large the pixel corners overflow; resample: a failure
    after its draw) leaves the frame count and the random stream as they were: the next steps give the
    frames of a run that never had it."""
    h = w = 6
    good = torch.full((2, h, w), 0.25)
    clean = make_noise_warper(method)
    clean.reset((1, h, w), 0)
    want = [clean.step(good), clean.step(good)]
    warper = make_noise_warper(method)
    warper.reset((1, h, w), 0)
    if method == "hiwyn":
        bad = torch.zeros(2, h, w)
        bad[0, :, -1], bad[0, :, -2] = 3e38, -3e38
        with pytest.raises(ValueError, match="back_flow"):
            warper.step(bad)
    else:
        step = type(warper)._step

        def failing(self, back, fwd):
            step(self, back, fwd)
            raise RuntimeError("after the draw")

        with monkeypatch.context() as m:
            m.setattr(type(warper), "_step", failing)
            with pytest.raises(RuntimeError, match="after the draw"):
                warper.step(good)
    assert warper.frame == 0
    assert all(torch.equal(warper.step(good), x) for x in want)


@pytest.mark.parametrize("method", ["hiwyn", "infres", "gwtf", "gp", "bilinear"])
def test_negated_flow_views_are_read_as_their_values(method):
    """A flow given as a negated view (torch._neg_view: the memory holds the un-negated values) warps as
    the materialized flow does (the C++ kernels read raw memory)."""
    back, fwd = similarity(2, 9, 11)
    runs = []
    for view in (False, True):
        warper = make_noise_warper(method)
        warper.reset((2, 9, 11), 3)
        b, f = back[0], fwd[0]
        if view:
            b, f = torch._neg_view(-b), torch._neg_view(-f)
            assert b.is_neg() and b.is_contiguous()
        runs.append(warper.step(b, f))
    assert torch.equal(runs[0], runs[1])


def test_rff_and_option_types_are_checked():
    for bad, msg in [
        ({"lengthscale": "2"}, "lengthscale"),
        ({"truncation": None}, "truncation"),
        ({"channels": True}, "channels"),
        ({"num_features": 2.0}, "num_features"),
    ]:
        with pytest.raises(ValueError, match=msg):
            RFFConfig(**bad)
    with pytest.raises(TypeError, match="shared_features"):
        RFFConfig(shared_features=1)
    with pytest.raises(ValueError, match="generator: expected a torch.Generator or a 64-bit int seed"):
        wn.RFFField.sample(RFFConfig(), generator="a")
    with pytest.raises(ValueError, match="upsample"):
        make_noise_warper("hiwyn", upsample=True)
    for method, top in (("hiwyn", 32), ("gwtf", 16)):  # numpy integers are ints; the range is named
        assert make_noise_warper(method, upsample=np.int64(4)) is not None
        with pytest.raises(ValueError, match=rf"upsample: expected an int in \[1, {top}\]"):
            make_noise_warper(method, upsample=np.int64(top + 1))
    with pytest.raises(ValueError, match="min_area"):
        make_noise_warper("infres", min_area="0.1")


@pytest.mark.parametrize("method", ["fixed", "resample", "nearest", "bilinear"])
def test_rff_settings_for_a_white_base_are_refused(method):
    """GP settings with the white base would be silently ignored: refused, naming base='gp'."""
    with pytest.raises(ValueError, match="rff: GP field settings, but base='white'.*base='gp'"):
        make_noise_warper(method, rff=RFFConfig(lengthscale=2.0))
    make_noise_warper(method, base="gp", rff=RFFConfig(lengthscale=2.0))
