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

    masks_taken = []

    def live_masks():  # a live source's masks: not read ahead either
        for j in range(4):
            masks_taken.append(j)
            yield "box"

    seen = []
    for j, frame in enumerate(pipe.stream(camera(), live_masks(), num_inference_steps=2)):
        assert taken == list(range(j + 1)), f"frame {j} came out after frames {taken} were taken"
        assert masks_taken == list(range(j + 1)), f"frame {j} came out after masks {masks_taken} were taken"
        seen.append(frame)
    assert len(seen) == 4


def test_stream_masks_per_frame_and_bad_input(tmp_path):
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
    # when called too: a mask name or file, the flow preset, exact guidance where gradients are off
    with pytest.raises(FileNotFoundError, match="mask: bxo does not exist"):
        pipe.stream(v, "bxo", **kw)
    with pytest.raises(ValueError, match="flow_preset: expected one of"):
        pipe.stream(v, "box", flow_preset="nope", **kw)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="guidance: mode='exact'"):
        pipe.stream(v, "box", num_inference_steps=2)
    with pytest.raises(ValueError, match=r"video: frame 1: float frames must be in \[0, 1\]"):
        list(pipe.stream(iter([v[0], v[1] + 2]), "box", **kw))
    one = torch.stack(list(pipe.stream(iter([v[0][None], v[1][None]]), "box", **kw)))  # batches of one
    assert one.shape == (2, 3, 16, 24)
    # a mask folder of one image serves every frame, as for the whole-clip call
    from PIL import Image

    (tmp_path / "m").mkdir()
    Image.fromarray((masks[0, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "m" / "0.png")
    assert torch.equal(torch.stack(list(pipe.stream(v, tmp_path / "m", **kw))), fixed)


def test_stream_keeps_no_losses_per_frame(monkeypatch):
    """A live stream's memory stays flat: each frame's guidance losses are dropped once it is out."""
    from warped_fast.sampling import VideoSampler

    pipe, v = _inpaint_pipe(), _video(4)
    kept = []
    original = VideoSampler.pop_losses

    def spy(self, frame):
        out = original(self, frame)
        kept.append(len(self.losses))
        return out

    monkeypatch.setattr(VideoSampler, "pop_losses", spy)
    assert len(list(pipe.stream(v, "box", num_inference_steps=2))) == 4
    assert kept == [0, 0, 0, 0]


def test_stream_takes_a_flow_function():
    """flow_fn replaces DIS (RAFT on a GPU, say): given flows equal the whole-clip call's given flows."""
    pipe, v = _inpaint_pipe(), _video(3)
    fwd = torch.zeros(2, 2, 16, 24)
    fwd[:, 0] = 1.0
    kw = dict(num_inference_steps=2)
    whole = pipe(v, "box", flows=(fwd, -fwd), progress=False, **kw).frames
    pairs = []

    def flow_fn(pair):
        pairs.append(pair.shape)
        return fwd[:1], -fwd[0]  # [1, 2, H, W] or [2, H, W]

    frames = torch.stack(list(pipe.stream(v, "box", flow_fn=flow_fn, **kw)))
    assert pairs == [(2, 3, 16, 24)] * 2 and (frames - whole).abs().max() < 1e-5
    with pytest.raises(TypeError, match="flow_fn: expected a callable"):
        pipe.stream(v, "box", flow_fn=5)
    with pytest.raises(
        ValueError, match=r"flow_fn: expected floating-point flows \[1, 2, 16, 24\] for frames 0, 1"
    ):
        list(pipe.stream(v, "box", flow_fn=lambda p: (fwd[0].permute(1, 2, 0), fwd[0]), **kw))
    bad = fwd[0].clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"flow_fn\(frames 0, 1\)\[1\]: expected finite values"):
        list(pipe.stream(v, "box", flow_fn=lambda p: (fwd[0], bad), **kw))
