"""The video sampler (Algorithm 1): invariants, schedules, guidance effect, streaming, bad input."""

import pytest
import torch

import warped_fast as wf
from tests.helpers import assert_close
from tests.models.tiny import scheduler, tiny_unet
from warped_fast.models import DiffusersDenoiser, GaussianPriorDenoiser
from warped_fast.sampling import (
    FrameInput,
    GuidanceConfig,
    SigmaSchedule,
    VideoSampler,
    VideoSamplerConfig,
    diffusers_schedule,
    karras_sigmas,
    sample_image,
)

H = W = 16


def _tiny():
    sch = scheduler()
    return DiffusersDenoiser(tiny_unet(seed=3), scheduler=sch), diffusers_schedule(sch, 6)


def _pan_frames(t: int, shift: float, h: int = H, w: int = W, seed: int = 0):
    """GP noise of a pan moving right by ``shift`` px per frame, with its flows."""
    field = wf.RFFField.sample(wf.RFFConfig(channels=4), seed)
    frames = []
    for j in range(t):
        noise = field(wf.identity_coords(h, w, offset=(-shift * j, 0.0)))[0]
        fwd = torch.zeros(2, h, w)
        fwd[0] = shift
        frames.append(FrameInput(noise, None, fwd if j else None, -fwd if j else None))
    return frames


def _swe(video, frames):
    """Self-warping error w.r.t. the previous frame over valid pixels, per frame."""
    out = []
    for j in range(1, len(frames)):
        wv, valid = wf.warp(video[j : j + 1], frames[j].fwd_flow[None])
        out.append((((wv - video[j - 1 : j]) ** 2) * valid).sum() / (valid.sum() * video.shape[1]))
    return torch.stack(out)


def test_zero_flow_same_noise_gives_identical_frames():
    den, sched = _tiny()
    noise = torch.randn(4, H, W, generator=torch.Generator().manual_seed(0))
    zero = torch.zeros(2, H, W)
    frames = [FrameInput(noise, None, zero if j else None, zero if j else None) for j in range(3)]
    v = VideoSampler(den, sched, VideoSamplerConfig(guidance=GuidanceConfig(mode="exact"))).sample(frames)
    assert torch.equal(v[1], v[0]) and torch.equal(v[2], v[0])


@pytest.mark.parametrize("mode", ["exact", "jacobian_free"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_static_scene_in_the_wavefront_schedule_stays_static(mode, dtype):
    """Zero flow and the same noise in every frame under the wavefront schedule: the batched calls round
    each frame's prediction differently, and the normalized loss's unit gradient would turn that rounding
    into full guidance steps; the dead zone, scaled to the model's precision, keeps the frames equal to
    frame 0 up to that rounding (a few units in the last place of the largest value)."""
    den, sched = _tiny()
    den.unet.to(dtype)
    noise = torch.randn(4, H, W, generator=torch.Generator().manual_seed(0)).to(dtype)
    zero = torch.zeros(2, H, W)
    frames = [FrameInput(noise, None, zero if j else None) for j in range(4)]
    cfg = VideoSamplerConfig("wavefront", max_batch=8, guidance=GuidanceConfig(mode=mode))
    v = VideoSampler(den, sched, cfg).sample(frames).float()
    ulp = torch.finfo(dtype).eps * v.abs().max()
    assert all((v[j] - v[0]).abs().max() <= 4 * ulp for j in range(1, 4)), [
        (v[j] - v[0]).abs().max() for j in range(4)
    ]


def test_the_dead_zone_follows_the_models_compute_precision():
    """One rounding of the precision the model computes in, relative to the previous prediction's RMS (at
    least DEAD_ZONE_MIN); float32 on CUDA computes its convolutions in TF32 unless told otherwise."""
    from warped_fast.sampling.guidance import DEAD_ZONE_MIN, compute_eps, dead_zone

    den, _ = _tiny()
    prev = torch.full((2, 4, H, W), 3.0)
    assert torch.allclose(dead_zone(prev, den), torch.tensor([3 * DEAD_ZONE_MIN] * 2))
    den.unet.to(torch.bfloat16)
    assert torch.allclose(dead_zone(prev, den), torch.tensor([3 * 2.0**-7] * 2))
    assert compute_eps(torch.float16, torch.device("cpu")) == 2.0**-10
    cuda = torch.device("cuda")
    assert compute_eps(torch.float32, cuda) == 2.0**-10  # PyTorch's default: TF32 convolutions
    conv = torch.backends.cudnn.conv
    was, conv.fp32_precision = conv.fp32_precision, "ieee"
    try:
        assert compute_eps(torch.float32, cuda) == torch.finfo(torch.float32).eps
    finally:
        conv.fp32_precision = was


def test_lambda_zero_equals_per_frame_sampling_of_warped_noise():
    den, sched = _tiny()
    frames = _pan_frames(3, 0.4)
    v = VideoSampler(den, sched, VideoSamplerConfig(guidance=GuidanceConfig(lam=0.0))).sample(frames)
    for j, f in enumerate(frames):
        ref = sample_image(den, f.noise[None], sched)[0]
        assert_close(v[j], ref, atol=1e-6, what=f"frame {j}")


@pytest.mark.parametrize("mode", ["exact", "jacobian_free"])
@pytest.mark.parametrize("max_batch", [2, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wavefront_equals_sequential(mode, max_batch, dtype):
    den, sched = _tiny()
    den.unet.to(dtype)
    frames = [FrameInput(f.noise.to(dtype), None, f.fwd_flow, f.back_flow) for f in _pan_frames(5, 0.6)]
    g = GuidanceConfig(mode=mode)
    seq = VideoSampler(den, sched, VideoSamplerConfig("sequential", guidance=g)).sample(frames)
    wav = VideoSampler(den, sched, VideoSamplerConfig("wavefront", max_batch=max_batch, guidance=g)).sample(
        frames
    )
    # Only the batching of the UNet's convolutions differs: relative float rounding.
    tol = (2e-6 if dtype == torch.float32 else 1e-12) * seq.abs().max().item()
    assert_close(wav, seq, atol=tol, what=f"wavefront vs sequential ({mode}, {dtype})")


class _MemoryBound(torch.nn.Module):
    """A denoiser that runs out of device memory on batches of more than ``fits`` items (its UNet after
    the forward of the failing batch, as a backward would)."""

    def __init__(self, inner, fits: int, error=None):
        super().__init__()
        self.inner, self.fits, self.sizes = inner, fits, []
        self.error = error or torch.OutOfMemoryError("CUDA out of memory (test)")

    def set_schedule(self, schedule):
        self.inner.set_schedule(schedule)

    def forward(self, u, sigma, cond=None):
        self.sizes.append(u.shape[0])
        d = self.inner(u, sigma, cond)
        if u.shape[0] > self.fits:
            raise self.error
        return d


@pytest.mark.parametrize(
    "error",
    [None, RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")],
    ids=["OutOfMemoryError", "cublas"],
)
def test_wavefront_halves_a_batch_that_runs_out_of_memory(caplog, error):
    den, sched = _tiny()
    frames = _pan_frames(6, 0.6)
    g = GuidanceConfig(mode="exact")
    ref = VideoSampler(den, sched, VideoSamplerConfig("wavefront", max_batch=2, guidance=g)).sample(frames)
    bound = _MemoryBound(den, fits=2, error=error)
    sampler = VideoSampler(bound, sched, VideoSamplerConfig("wavefront", max_batch=8, guidance=g))
    with caplog.at_level("WARNING", logger="warped_fast"):
        got = sampler.sample(frames)
    assert torch.equal(got, ref)  # the same chunks of 2 as a job asked for 2
    assert sampler.batch_limit == 2 and max(bound.sizes[bound.sizes.index(3) + 1 :]) <= 2
    assert [r.getMessage() for r in caplog.records if "ran out of device memory" in r.getMessage()] == [
        "wavefront: 3 frames per denoiser call ran out of device memory; now at most 2",
    ]
    one = VideoSampler(
        _MemoryBound(den, fits=0, error=error), sched, VideoSamplerConfig("wavefront", guidance=g)
    )
    with pytest.raises(RuntimeError, match="out of memory|ALLOC_FAILED"):
        one.sample(frames)
    other = _MemoryBound(den, fits=2, error=RuntimeError("shape mismatch"))  # not memory: raised at once
    with pytest.raises(RuntimeError, match="shape mismatch"):
        VideoSampler(other, sched, VideoSamplerConfig("wavefront", guidance=g)).sample(frames)


def test_float64_run_keeps_float64_sigmas_and_flows():
    """Each step of a float64 run is Algorithm 1 in float64: the schedule's float64 sigmas and the flows
    as given (float32-rounded sigmas or flows are ~1e-7 off)."""
    den, _ = _tiny()
    den.unet.to(torch.float64)
    sched = SigmaSchedule(karras_sigmas(6, 0.03, 14.6))  # float64 levels that float32 does not hold
    f0, f1 = _pan_frames(2, 0.3)
    frames = [FrameInput(f0.noise.double()), FrameInput(f1.noise.double(), None, f1.fwd_flow.double() + 1e-9)]
    seen = {}
    cfg = VideoSamplerConfig(guidance=GuidanceConfig(mode="jacobian_free", lam=0.7))
    VideoSampler(den, sched, cfg, lambda f, t, u, d: seen.__setitem__((f, t), (u.clone(), d.clone()))).sample(
        frames
    )
    sig = sched.sigmas
    assert sig.dtype == torch.float64
    for j, f in enumerate(frames):
        u = f.noise * float(sig[0])
        for t in range(sched.num_steps):
            u_next, d = seen[(j, t)]
            want = u + (sig[t + 1] - sig[t]) * (u - d) / sig[t]
            if j:
                _, g = wf.guidance_grad(d[None], seen[(j - 1, t)][1][None], f.fwd_flow[None])
                want = want - 0.7 * g[0]
            assert u_next.dtype == torch.float64
            assert_close(u_next, want, atol=1e-13 * want.abs().max().item(), what=f"frame {j} step {t}")
            u = u_next


def test_analytic_denoiser_circular_shift_is_exact():
    """A circularly shift-equivariant denoiser with exactly shifted noise: the guided frames are the
    shifted first frame and the self-warping error is ~0."""
    den = GaussianPriorDenoiser(2.0, 4)
    sched = SigmaSchedule(karras_sigmas(12, 0.02, 80.0))
    base = torch.randn(4, H, W, generator=torch.Generator().manual_seed(5))
    s = 3
    frames = []
    for j in range(4):
        fwd = torch.full((2, H, W), 0.0)
        fwd[0] = s
        fwd[0, :, W - s :] = s - W  # the circular pan, as a flow
        frames.append(FrameInput(torch.roll(base, s * j, dims=2), None, fwd if j else None))
    for schedule in ("sequential", "wavefront"):
        # Squared loss: its gradient vanishes with the residual, whereas the normalized gradient of a
        # residual at rounding level (FFT) is still a unit-norm step.
        cfg = VideoSamplerConfig(schedule, guidance=GuidanceConfig(mode="exact", loss="squared"))
        v = VideoSampler(den, sched, cfg).sample(frames)
        for j in range(1, 4):
            assert_close(
                v[j], torch.roll(v[0], s * j, dims=2), atol=1e-4, what=f"frame {j} = shifted frame 0"
            )
        assert _swe(v, frames).max() < 1e-8


@pytest.mark.parametrize("mode", ["exact", "jacobian_free"])
def test_analytic_denoiser_translation_guidance_lowers_warping_error(mode):
    den = GaussianPriorDenoiser(2.0, 4)
    sched = SigmaSchedule(karras_sigmas(12, 0.02, 80.0))
    frames = _pan_frames(4, 2.0, 24, 24)
    off = VideoSampler(den, sched, VideoSamplerConfig(guidance=GuidanceConfig(mode="off"))).sample(frames)
    on = VideoSampler(den, sched, VideoSamplerConfig(guidance=GuidanceConfig(mode=mode, lam=4.0))).sample(
        frames
    )
    e_off, e_on = _swe(off, frames).mean().item(), _swe(on, frames).mean().item()
    assert e_on < 0.5 * e_off, f"guided {e_on:.4f} vs unguided {e_off:.4f}"


@pytest.mark.parametrize("mode", ["exact", "jacobian_free"])
def test_guidance_lowers_residual_on_tiny_unet(mode):
    den, sched = _tiny()
    frames = _pan_frames(3, 1.3)
    off = VideoSampler(den, sched, VideoSamplerConfig(guidance=GuidanceConfig(lam=0.0))).sample(frames)
    s_on = VideoSampler(den, sched, VideoSamplerConfig(guidance=GuidanceConfig(mode=mode, lam=1.0)))
    on = s_on.sample(frames)
    e_off, e_on = _swe(off, frames).mean().item(), _swe(on, frames).mean().item()
    assert e_on < e_off, f"guided {e_on:.5f} vs unguided {e_off:.5f}"
    assert set(s_on.losses) == {1, 2} and all(len(v) == sched.num_steps for v in s_on.losses.values())


def test_step_range_and_squared_loss():
    den, sched = _tiny()
    frames = _pan_frames(2, 0.5)
    s = VideoSampler(
        den, sched, VideoSamplerConfig(guidance=GuidanceConfig(loss="squared", start_step=1, end_step=4))
    )
    s.sample(frames)
    assert len(s.losses[1]) == 3
    s.sample(frames)  # a new clip: its own losses, not appended to the last clip's
    assert len(s.losses[1]) == 3


def test_occlusion_masks_guidance():
    den, sched = _tiny()
    frames = _pan_frames(3, 1.0)
    cfg = VideoSamplerConfig(guidance=GuidanceConfig(occlusion=True))
    v = VideoSampler(den, sched, cfg).sample(frames)
    assert v.shape == (3, 4, H, W) and torch.isfinite(v).all()
    frames[1].back_flow = None
    with pytest.raises(ValueError, match=r"frames\[1\].back_flow"):
        VideoSampler(den, sched, cfg).sample(frames)


@pytest.mark.parametrize("schedule", ["sequential", "wavefront"])
def test_streaming_yields_in_order_without_reading_ahead(schedule):
    den, sched = _tiny()
    frames = _pan_frames(4, 0.5)
    pulled = []

    def source():
        for j, f in enumerate(frames):
            pulled.append(j)
            yield f

    sampler = VideoSampler(den, sched, VideoSamplerConfig(schedule, max_batch=4))
    got = []
    for j, frame in enumerate(sampler.stream(source())):
        got.append(frame)
        # sequential: frame j is out after reading frame j; wavefront: after at most S more ticks.
        lag = 0 if schedule == "sequential" else sched.num_steps - 1
        assert len(pulled) <= j + 1 + lag
    assert len(got) == 4
    ref = VideoSampler(den, sched, VideoSamplerConfig("sequential")).sample(frames)
    assert_close(torch.stack(got), ref, atol=1e-4, rtol=1e-4, what="streamed frames")


def test_callback_and_progress():
    den, sched = _tiny()
    seen = []
    VideoSampler(
        den,
        sched,
        VideoSamplerConfig(progress=True),
        callback_on_step_end=lambda f, s, u, d: seen.append((f, s)),
    ).sample(_pan_frames(2, 0.5))
    assert seen == [(f, s) for f in range(2) for s in range(sched.num_steps)]


def test_bad_inputs():
    den, sched = _tiny()
    frames = _pan_frames(2, 0.5)
    with pytest.raises(ValueError, match="frame_schedule"):
        VideoSamplerConfig("parallel")
    with pytest.raises(ValueError, match="max_batch"):
        VideoSamplerConfig(max_batch=0)
    with pytest.raises(ValueError, match="mode"):
        GuidanceConfig(mode="fast")
    with pytest.raises(ValueError, match="expected at least one frame"):
        VideoSampler(den, sched).sample([])
    frames[1].fwd_flow = None
    with pytest.raises(ValueError, match=r"frames\[1\].fwd_flow"):
        VideoSampler(den, sched).sample(frames)
    with pytest.raises(TypeError, match=r"frames\[0\]"):
        VideoSampler(den, sched).sample([torch.zeros(4, H, W)])
    with torch.inference_mode(), pytest.raises(RuntimeError, match="torch.inference_mode.*jacobian_free"):
        VideoSampler(den, sched).sample(_pan_frames(2, 0.5))
    with torch.inference_mode():  # the Jacobian-free mode needs no autograd
        VideoSampler(den, sched, VideoSamplerConfig(guidance=GuidanceConfig(mode="jacobian_free"))).sample(
            _pan_frames(2, 0.5)
        )

    def no_grad_den(u, s, c):  # an inference wrapper: its prediction carries no gradient
        with torch.no_grad():
            return den(u, s, c)

    with pytest.raises(RuntimeError, match="without a gradient.*jacobian_free"):
        VideoSampler(no_grad_den, sched).sample(_pan_frames(2, 0.5))


def test_schedule_and_guidance_settings_are_checked():
    """Lists and arrays make schedules; wrong types and non-finite levels get errors naming the argument."""
    import numpy as np

    from warped_fast.sampling.schedules import karras_sigmas

    assert (
        SigmaSchedule([3.0, 1.0, 0.0]).num_steps == 2 and SigmaSchedule(np.array([3.0, 0.0])).num_steps == 1
    )
    for bad, err, msg in [
        (lambda: SigmaSchedule([float("inf"), 1.0, 0.0]), ValueError, "sigmas: expected finite"),
        (lambda: karras_sigmas(2.5, 0.1, 80.0), ValueError, "num_steps: expected an int"),
        (lambda: karras_sigmas(5, 0.1, float("inf")), ValueError, "finite 0 < sigma_min < sigma_max"),
        (lambda: karras_sigmas(5, 0.1, 80.0, rho=0), ValueError, "rho: expected a finite number > 0"),
        (lambda: GuidanceConfig(start_step="1"), ValueError, "start_step: expected an int"),
        (lambda: GuidanceConfig(end_step=2.5), ValueError, "end_step: expected an int"),
        (lambda: GuidanceConfig(occlusion="yes"), TypeError, "occlusion: expected True or False"),
    ]:
        with pytest.raises(err, match=msg):
            bad()


def test_frames_of_one_clip_must_agree():
    """Every frame's noise and conditioning are shaped as the first frame's (a frame without the
    conditioning the others have would be dropped from batches); a NaN flow names its frame."""
    den = GaussianPriorDenoiser(1.0, 2)
    sched = SigmaSchedule(karras_sigmas(3, 0.02, 80.0))
    for schedule in ("sequential", "wavefront"):
        sampler = VideoSampler(den, sched, VideoSamplerConfig(schedule, guidance=GuidanceConfig(mode="off")))
        frames = _pan_frames(3, 0.5)
        frames[2].noise = torch.randn(frames[2].noise.shape[0], 4, 4)
        with pytest.raises(ValueError, match=r"frames\[2\]: noise \[.*but the clip's first frame"):
            sampler.sample(frames)
        frames = _pan_frames(3, 0.5)
        frames[1].cond = torch.zeros(1, *frames[1].noise.shape[1:])
        with pytest.raises(ValueError, match=r"frames\[1\]: noise .* and cond \[1, "):
            sampler.sample(frames)
        frames = _pan_frames(3, 0.5)
        frames[2].fwd_flow = frames[2].fwd_flow.clone()
        frames[2].fwd_flow[0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match=r"frames\[2\].fwd_flow: expected finite"):
            sampler.sample(frames)
        assert sampler.sample(_pan_frames(3, 0.5)).shape[0] == 3  # a new clip starts afresh


def test_out_of_memory_in_a_callback_is_raised_not_retried():
    """A callback (a GPU preview, say) that runs out of memory: the frames have moved on, so the step is not
    run again; the error reaches the caller."""
    den, sched = _tiny()
    calls = []

    def preview(j, t, u, d):
        calls.append((j, t))
        if (j, t) == (2, 0):
            raise torch.OutOfMemoryError("CUDA out of memory (test)")

    sampler = VideoSampler(den, sched, VideoSamplerConfig("wavefront", max_batch=8), preview)
    with pytest.raises(torch.OutOfMemoryError):
        sampler.sample(_pan_frames(4, 0.6))
    assert sampler.batch_limit == 8 and len(calls) == len(set(calls))


def test_stream_checks_its_arguments_at_the_call_and_yields_frames_of_their_own():
    """A bad start_index is an error at the call (not at the first frame, nor a frame silently taken as
    frame 0); the wavefront schedule's finished frames own their memory (not views of a tick's batch)."""
    den, sched = _tiny()
    frames = _pan_frames(4, 0.4)
    sampler = VideoSampler(den, sched, VideoSamplerConfig("wavefront", max_batch=8))
    with pytest.raises(ValueError, match="start_index: expected an int >= 0, got -1"):
        sampler.stream(frames, start_index=-1)
    with pytest.raises(ValueError, match="prev_predictions: required"):
        sampler.stream(frames, start_index=1)
    out = list(sampler.stream(frames))
    assert len(out) == 4 and all(f.untyped_storage().nbytes() == f.numel() * f.element_size() for f in out)
