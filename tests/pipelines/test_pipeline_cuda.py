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


def _close(a, b):
    """Equal to float32 rounding, relative to the latents' scale (hundreds)."""
    err = (a.cpu() - b.cpu()).abs().max().item()
    assert err <= 1e-5 * b.abs().max().item(), err


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
