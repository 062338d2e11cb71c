"""WarpedDiffusionPipeline.stream: frame by frame, the same frames as the whole-clip call, no reading ahead."""

import numpy as np
import pytest
import torch

from tests.models.tiny import scheduler, tiny_unet
from warped_fast.models import DiffusersDenoiser
from warped_fast.pipelines import WarpedDiffusionPipeline
from warped_fast.sampling import GuidanceConfig

from .test_pipeline import _inpaint_pipe, _video


@pytest.mark.parametrize("schedule", ["sequential", "wavefront"])
def test_stream_gives_the_whole_clip_frames(schedule):
    pipe, v = _inpaint_pipe(), _video(4)
    kw = dict(num_inference_steps=3, frame_schedule=schedule, max_batch=3, progress=False, keep_known=True)
    whole = pipe(v, "box", **kw).frames
    frames = list(pipe.stream(v, "box", **kw))
    assert len(frames) == 4 and frames[0].shape == (3, 16, 24)
    assert (torch.stack(frames) - whole).abs().max() < 1e-5
    sr = WarpedDiffusionPipeline(
        DiffusersDenoiser(tiny_unet(6, 3, seed=2), scheduler=scheduler()), task="sr", sr_factor=2
    )
    small = v[:3, :, :8, :12]
    kw = dict(num_inference_steps=2, guidance=GuidanceConfig(mode="jacobian_free"), progress=False)
    whole = sr(small, **kw)
    lat = list(sr.stream(small, output_type="latent", **kw))
    assert (torch.stack(lat) - whole.latents).abs().max() < 1e-5
    arrays = list(sr.stream(small, output_type="np", **kw))
    assert arrays[0].shape == (16, 24, 3) and arrays[0].dtype == np.uint8


def test_stream_reads_one_frame_at_a_time():
    """Sequential: frame j comes out before frame j + 1 is taken from the source (a camera, say)."""
    pipe, v = _inpaint_pipe(), _video(4)
    taken = []

    def camera():
        for j in range(4):
            taken.append(j)
            yield (v[j].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()  # [H, W, 3] uint8

    seen = []
    for j, frame in enumerate(pipe.stream(camera(), "box", num_inference_steps=2)):
        assert taken == list(range(j + 1)), f"frame {j} came out after frames {taken} were taken"
        seen.append(frame)
    assert len(seen) == 4


def test_stream_masks_per_frame_and_bad_input():
    pipe, v = _inpaint_pipe(), _video(3)
    masks = torch.zeros(3, 1, 16, 24)
    masks[:, :, 4:12, 6:18] = 1
    kw = dict(num_inference_steps=2, guidance=GuidanceConfig(mode="off"))
    per_frame = torch.stack(list(pipe.stream(v, list(masks), **kw)))
    fixed = torch.stack(list(pipe.stream(v, masks[0], **kw)))
    assert torch.equal(per_frame, fixed)
    with pytest.raises(ValueError, match="mask: masks for 2 frames, but the video has more"):
        list(pipe.stream(v, list(masks[:2]), **kw))
    with pytest.raises(ValueError, match="mask: required for inpainting"):
        pipe.stream(v)  # checked when called, before the first frame is asked for
    with pytest.raises(ValueError, match="num_inference_steps: expected an int >= 1"):
        pipe.stream(v, "box", num_inference_steps=0)
    with pytest.raises(ValueError, match="video: frame 1 is"):
        list(pipe.stream(iter([v[0], v[1, :, :8]]), "box", **kw))
    with pytest.raises(TypeError, match="video: expected a path, frames or an iterable of frames"):
        pipe.stream(5, "box", **kw)
    with pytest.raises(FileNotFoundError):
        pipe.stream("missing.mp4", "box", **kw)  # when called, not at the first frame
