"""On CUDA the sampler's ticks and the denoiser's timesteps never wait for the device (with value
checks off): the host keeps queueing work. torch's sync debug mode raises at any synchronizing call."""

import contextlib

import pytest
import torch

import warped_fast as wf
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
)


@contextlib.contextmanager
def _no_sync():
    with wf.ops.value_checks(False):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _frames(t, h=16, w=16):
    g = torch.Generator().manual_seed(0)
    out = []
    for j in range(t):
        fwd = torch.full((2, h, w), 0.4).cuda()
        out.append(
            FrameInput(
                torch.randn(4, h, w, generator=g).cuda(), None, fwd if j else None, -fwd if j else None
            )
        )
    return out


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["jacobian_free", "exact"])
def test_sampler_ticks_do_not_synchronize(mode):
    # a guidance window, wavefront batches and occlusion masks
    g = GuidanceConfig(mode=mode, start_step=2, occlusion=True)
    sampler = VideoSampler(
        GaussianPriorDenoiser(2.0, 4),
        SigmaSchedule(karras_sigmas(6, 0.02, 80.0)),
        VideoSamplerConfig("wavefront", max_batch=3, guidance=g),
    )
    frames = _frames(5)
    want = torch.stack(list(sampler.stream(frames)))  # first run: compiles the kernels
    with torch.no_grad() if mode == "jacobian_free" else contextlib.nullcontext(), _no_sync():
        got = list(sampler.stream(frames))
    assert torch.equal(torch.stack(got), want)
    assert sorted(sampler.losses) == [1, 2, 3, 4] and all(len(v) == 4 for v in sampler.losses.values())


@pytest.mark.cuda
def test_denoiser_timesteps_do_not_synchronize():
    sch = scheduler()
    den = DiffusersDenoiser(tiny_unet(seed=3), scheduler=sch).cuda()
    schedule = diffusers_schedule(sch, 6)
    den.set_schedule(schedule)
    sigma = schedule.sigmas[:-1].float().cuda()
    off_grid = sigma * 1.37
    want = den.timesteps(sigma), den.timesteps(off_grid)  # first use copies the tables
    with _no_sync():
        got = den.timesteps(sigma), den.timesteps(off_grid)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(got[0].cpu(), schedule.timesteps.double())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_guided_rows_selector(device):
    """Consecutive guided rows are a slice (no index tensor); others an index tensor on the device."""
    from warped_fast.sampling.guidance import _rows

    x = torch.arange(6.0, device=device)
    assert _rows([2, 3, 4], x.device) == slice(2, 5)
    sel = _rows([0, 2, 5], x.device)
    assert isinstance(sel, torch.Tensor) and sel.device == x.device
    assert x[sel].tolist() == [0.0, 2.0, 5.0]
