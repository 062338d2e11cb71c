"""WarpedDiffusionPipeline on a CUDA device (tiny models built in code): a guided wavefront job with an
output folder, whose step predictions travel to pinned host memory without waiting, matches the same
job without a folder, and resumes. On CUDA two runs agree to rounding only: the guidance gradient's splat
adds with atomics, in no fixed order."""

import pytest

from tests.models.tiny import scheduler, tiny_unet
from tests.pipelines.test_pipeline import _video
from warped_fast.models import DiffusersDenoiser
from warped_fast.pipelines import WarpedDiffusionPipeline

pytestmark = pytest.mark.cuda


def test_guided_wavefront_job_with_a_folder_on_cuda(tmp_path):
    unet = tiny_unet(7, 3, seed=1).cuda()
    pipe = WarpedDiffusionPipeline(DiffusersDenoiser(unet, scheduler=scheduler()))
    v = _video(5)
    kw = {"num_inference_steps": 4, "progress": False, "frame_schedule": "wavefront", "max_batch": 3}
    plain = pipe(v, "box", **kw)
    stored = pipe(v, "box", output_dir=tmp_path, **kw)
    _close(stored.latents, plain.latents)
    assert sorted(p.name for p in tmp_path.glob("frame_*.png")) == [f"frame_0000{i}.png" for i in range(5)]

    def stop_at_frame_3(j, step, u, d):
        if j == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe(v, "box", output_dir=tmp_path / "b", callback_on_step_end=stop_at_frame_3, **kw)
    # The saved predictions are those the device computed: resuming from them gives the same frames.
    again = pipe(v, "box", output_dir=tmp_path / "b", **kw)
    _close(again.latents, plain.latents)


def _close(a, b, rel=1e-5):
    """Equal to float32 rounding, relative to the latents' scale (hundreds)."""
    err = (a.cpu() - b.cpu()).abs().max().item()
    assert err <= rel * b.abs().max().item(), err


def test_stream_on_cuda_with_occlusion_aware_noise():
    """pipe.stream on a CUDA device gives the whole-clip call's frames; GP noise with occlusion handling
    (fresh-noise tiles carried by compose_within_tiles) runs there too."""
    import torch

    unet = tiny_unet(7, 3, seed=1).cuda()
    pipe = WarpedDiffusionPipeline(DiffusersDenoiser(unet, scheduler=scheduler()))
    v = _video(4)
    kw = {"num_inference_steps": 3, "noise_options": {"occlusion": True}}
    whole = pipe(v, "box", progress=False, **kw)
    frames = torch.stack(list(pipe.stream(v, "box", **kw)))
    assert frames.device.type == "cuda"
    # frames in [0, 1]; the splat's atomics leave run-to-run rounding differences through the steps
    assert (frames - whole.frames).abs().max().item() < 1e-4


def test_wavefront_recovers_from_a_real_out_of_memory(caplog):
    """Device memory capped between the peak of a 1-frame and of a 4-frame guided tick (both measured
    first): a wavefront job asking for 4 frames per call runs out of memory, retries in halves, finishes,
    and gives the frames of a job that asked for one frame per call (TF32 off: batch sizes then differ by
    float32 rounding only)."""
    import torch

    unet = tiny_unet(7, 3, seed=1).cuda()
    pipe = WarpedDiffusionPipeline(DiffusersDenoiser(unet, scheduler=scheduler()))
    v = _video(6, 256, 256, shift=2)  # activations dominate the weights
    # 4 steps: up to 4 frames in flight, so a 4-frame tick happens
    kw = {"num_inference_steps": 4, "progress": False, "frame_schedule": "wavefront"}

    def peak(max_batch):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        out = pipe(v, "box", max_batch=max_batch, **kw)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), out

    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        p1, ref = peak(1)
        p4, _ = peak(4)
        assert p4 > 1.5 * p1, (p1, p4)
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction((p1 + 0.75 * (p4 - p1)) / total)
        try:
            with caplog.at_level("WARNING", logger="warped_fast"):
                got = pipe(v, "box", max_batch=4, **kw)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
            torch.cuda.empty_cache()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert any("ran out of device memory" in r.getMessage() for r in caplog.records)
    _close(got.latents, ref.latents, rel=1e-4)
