"""SR with a text-to-image SDXL UNet and a tile ControlNet on tiny models built in code: one frame as diffusers'
StableDiffusionXLControlNetPipeline computes it, and a video job through from_pretrained."""

import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline

from tests.helpers import assert_close
from tests.models.tiny_text import tiny_controlnet, tiny_text_pipeline_folder
from tests.pipelines.test_pipeline import _video
from warped_fast.models import ConditioningLayout, DiffusersDenoiser, DiffusersVAE, encode_prompt
from warped_fast.pipelines import WarpedDiffusionPipeline
from warped_fast.sampling import sample_image

RUN = dict(num_inference_steps=2, progress=False)


@pytest.fixture(scope="module")
def sdxl_tile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl_base")
    parts = tiny_text_pipeline_folder(folder, xl=True, in_channels=4)
    parts["controlnet"] = tiny_controlnet(parts["unet"])
    parts["controlnet"].save_pretrained(folder / "controlnet")
    return folder, parts


def test_one_frame_is_diffusers_sdxl_controlnet(sdxl_tile):
    folder, parts = sdxl_tile
    euler = EulerDiscreteScheduler.from_config(parts["scheduler"].config)
    names = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "controlnet")
    ref = StableDiffusionXLControlNetPipeline(
        **{k: parts[k] for k in names}, scheduler=euler, add_watermarker=False
    )
    ref.set_progress_bar_config(disable=True)
    control = _video(1, 32, 48)
    calls = []
    handle = parts["unet"].register_forward_pre_hook(
        lambda m, a, kw: calls.append(a[0].clone()), with_kwargs=True
    )
    try:
        want = ref(
            prompt="the cat", negative_prompt="dark", image=control, height=32, width=48, num_inference_steps=3,
            guidance_scale=3.0, controlnet_conditioning_scale=0.7, generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images  # fmt: skip
    finally:
        handle.remove()
    emb = encode_prompt(folder, "the cat", "dark")
    den = DiffusersDenoiser(
        parts["unet"], scheduler=euler, guidance_scale=3.0, controlnet=parts["controlnet"], controlnet_scale=0.7,
        **emb.denoiser_kwargs(32, 48),
    )  # fmt: skip
    assert den.layout == ConditioningLayout("control", 4, 192) and den.control_factor == 8
    schedule = den.sampling_schedule(3)
    den.set_schedule(schedule)
    s0 = float(schedule.sigmas[0])
    noise = calls[0][:1] * (s0**2 + 1) ** 0.5 / s0  # the scheduler's scaled first input, as unit noise
    cond = torch.nn.functional.pixel_unshuffle(control, 8)
    got = DiffusersVAE(parts["vae"]).decode(sample_image(den, noise, schedule, cond))
    assert_close(got, want, atol=2e-5, what="the frame")
    off = DiffusersDenoiser(parts["unet"], scheduler=euler, guidance_scale=3.0, controlnet=parts["controlnet"],
                            controlnet_scale=0.0, **emb.denoiser_kwargs(32, 48))  # fmt: skip
    assert not torch.allclose(
        sample_image(off, noise, schedule, cond), sample_image(den, noise, schedule, cond)
    )


def test_video_sr_with_a_tile_controlnet(sdxl_tile):
    folder, _ = sdxl_tile
    pipe = WarpedDiffusionPipeline.from_pretrained(folder, prompt="the cat", controlnet=folder / "controlnet",
                                                   controlnet_scale=0.7)  # fmt: skip
    assert pipe.task == "sr" and pipe.denoiser.layout.kind == "control"
    v = _video(3, 4, 6)  # x8: 32x48 frames, 4x6 latents
    fwd = torch.zeros(2, 2, 32, 48)
    fwd[:, 0] = 8.0
    out = pipe(v, flows=(fwd, -fwd), noise_method="gwtf", **RUN)  # exact guidance through both networks
    assert out.frames.shape == (3, 3, 32, 48) and torch.isfinite(out.frames).all()
    streamed = torch.stack(
        list(pipe.stream(v, flow_fn=lambda p: (fwd[:1], -fwd[:1]), noise_method="gwtf", **RUN))
    )
    assert_close(streamed, out.frames, atol=1e-5, what="stream")
    wave = pipe(v, flows=(fwd, -fwd), noise_method="gwtf", frame_schedule="wavefront", **RUN)
    assert_close(wave.frames, out.frames, atol=1e-5, what="wavefront")
    with pytest.raises(ValueError, match="layout: the control layout is a ControlNet's; give controlnet"):
        DiffusersDenoiser(pipe.denoiser.unet, scheduler=pipe.denoiser.scheduler, layout=pipe.denoiser.layout,
                          prompt_embeds=pipe.denoiser.prompt_embeds,
                          added_cond_kwargs=pipe.denoiser.added_cond_kwargs)  # fmt: skip


def test_bad_input(sdxl_tile, tmp_path):
    folder, parts = sdxl_tile
    with pytest.raises(ValueError, match="controlnet: .* is not a ControlNet folder"):
        WarpedDiffusionPipeline.from_pretrained(folder, prompt="", controlnet=tmp_path / "nothing")
    # a ControlNetModel given: moved to the pipeline's dtype like the UNet
    import copy

    net = copy.deepcopy(parts["controlnet"])
    pipe = WarpedDiffusionPipeline.from_pretrained(folder, prompt="", controlnet=net, dtype=torch.bfloat16)
    assert next(pipe.denoiser.controlnet.parameters()).dtype == torch.bfloat16
    inpaint = tmp_path / "inpaint"
    tiny_text_pipeline_folder(inpaint, xl=True, in_channels=9)
    with pytest.raises(
        ValueError,
        match="controlnet: goes with a text-to-image UNet \\(4 input channels\\); this one takes 9",
    ):
        WarpedDiffusionPipeline.from_pretrained(inpaint, prompt="", controlnet=folder / "controlnet")
    from diffusers import ControlNetModel

    pooled = ControlNetModel.from_config(parts["controlnet"].config, global_pool_conditions=True)
    with pytest.raises(ValueError, match="controlnet: global_pool_conditions"):
        DiffusersDenoiser(parts["unet"], scheduler=parts["scheduler"], controlnet=pooled,
                          **encode_prompt(folder, "").denoiser_kwargs(32, 32))  # fmt: skip
