"""Image-conditioned super-resolution (the Stable Diffusion x4 upscaler's layout) on a tiny upscaler folder:
one frame as diffusers' StableDiffusionUpscalePipeline computes it, the low-resolution frames' noise
augmentation warped along the flow, the noise level as class label, and bad input."""

import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler, StableDiffusionUpscalePipeline

from tests.helpers import assert_close
from tests.models.tiny_text import tiny_upscaler_folder
from tests.pipelines.test_pipeline import _video
from warped_fast.io.video import resize_frames
from warped_fast.models import (
    ConditioningLayout,
    DiffusersDenoiser,
    DiffusersVAE,
    NoiseAugmentation,
    encode_prompt,
)
from warped_fast.models.noise_augmentation import augmentation_generator
from warped_fast.pipelines import WarpedDiffusionPipeline
from warped_fast.sampling import sample_image

RUN = dict(num_inference_steps=2, progress=False)


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    folder = tmp_path_factory.mktemp("x4_upscaler")
    return folder, tiny_upscaler_folder(folder)


def _record_unet(unet):
    """Record each UNet call's input and class labels."""
    calls = []

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["sample"]
        calls.append((x.detach().clone(), kwargs.get("class_labels")))

    return calls, unet.register_forward_pre_hook(hook, with_kwargs=True)


def test_augmentation_is_diffusers_add_noise():
    ddpm = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02)
    g = torch.Generator().manual_seed(0)
    image, noise = torch.rand(2, 3, 5, 7, generator=g) * 2 - 1, torch.randn(2, 3, 5, 7, generator=g)
    for level in (0, 20, 350):
        aug = NoiseAugmentation(level, ddpm.alphas_cumprod)
        want = ddpm.add_noise(image, noise, torch.tensor([level]))
        assert torch.equal(aug.augment(image, noise), want)
        assert aug.class_labels().tolist() == [level]
    with pytest.raises(ValueError, match="noise_level: at most the model's max_noise_level 350, got 351"):
        NoiseAugmentation(351, ddpm.alphas_cumprod)
    with pytest.raises(ValueError, match="noise_level: expected an int >= 0, got -1"):
        NoiseAugmentation(-1, ddpm.alphas_cumprod)
    with pytest.raises(ValueError, match="noise_level: the low-resolution schedule has 10 levels, got 10"):
        NoiseAugmentation(10, ddpm.alphas_cumprod[:10])
    with pytest.raises(ValueError, match=r"alphas_cumprod: expected a 1-D tensor of values in \(0, 1\]"):
        NoiseAugmentation(1, torch.zeros(5))
    with pytest.raises(ValueError, match=r"noise: expected shape \[2, 3, 5, 7\] as the image"):
        NoiseAugmentation(1, ddpm.alphas_cumprod).augment(image, noise[:1])
    # the augmentation's own seed: not another small seed (its noise is not the next job's latent noise)
    seeds = [augmentation_generator(s) for s in (None, 0, 1, 2, -1, 2**64 - 1)]
    assert seeds[0] == seeds[1] and seeds[4] == seeds[5]  # None is seed 0; -1 is 2^64 - 1
    assert len(set(seeds)) == 4 and all(2**32 < s < 2**64 for s in seeds)
    # a generator: a seed from a copy of its state, which does not advance
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    seed = augmentation_generator(g)
    assert torch.equal(g.get_state(), state) and seed == augmentation_generator(g)
    assert seed != augmentation_generator(torch.Generator().manual_seed(6))
    assert isinstance(seed, int) and 0 <= seed < 2**64 and seed not in seeds


def test_one_frame_is_diffusers_upscale_pipeline(upscaler):
    """A frame through DiffusersDenoiser (class labels, CFG), the Euler ODE and the VAE equals diffusers'
    StableDiffusionUpscalePipeline with the same Euler scheduler, given its noised image and latents."""
    folder, parts = upscaler
    euler = EulerDiscreteScheduler.from_config(parts["scheduler"].config)
    ref_pipe = StableDiffusionUpscalePipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=parts["unet"],
        low_res_scheduler=parts["low_res_scheduler"], scheduler=euler, max_noise_level=350,
    )  # fmt: skip
    ref_pipe.set_progress_bar_config(disable=True)
    lowres = _video(1, 8, 12)
    calls, handle = _record_unet(parts["unet"])
    try:
        ref = ref_pipe(
            prompt="the cat", negative_prompt="dark", image=lowres, num_inference_steps=3, guidance_scale=3.0,
            noise_level=30, generator=torch.Generator().manual_seed(0), output_type="pt",
        ).images  # fmt: skip
    finally:
        handle.remove()
    assert ref.shape == (1, 3, 32, 48) and len(calls) == 3
    x0, labels = calls[0]
    assert labels.tolist() == [30, 30]
    image = x0[1:, 4:]  # the noised low-resolution frame (the same in both CFG halves)

    emb = encode_prompt(folder, "the cat", "dark")
    den = DiffusersDenoiser(
        parts["unet"], scheduler=euler, class_labels=torch.tensor([30]), guidance_scale=3.0,
        **emb.denoiser_kwargs(32, 48),
    )  # fmt: skip
    assert den.layout == ConditioningLayout.sr_image()
    schedule = den.sampling_schedule(3)
    s0 = float(schedule.sigmas[0])
    latents = x0[1:, :4] * (s0**2 + 1) ** 0.5  # the scheduler's scaled input, unscaled
    den.set_schedule(schedule)
    z = sample_image(den, latents / s0, schedule, cond=image)
    mine = DiffusersVAE(parts["vae"]).decode(z)
    assert_close(mine, ref, atol=2e-5, what="the upscaled frame")
    # class labels are required by such a UNet, and checked
    with pytest.raises(ValueError, match="class_labels: required by a UNet with class embeddings"):
        DiffusersDenoiser(parts["unet"], scheduler=euler, **emb.denoiser_kwargs(32, 48))
    with pytest.raises(ValueError, match=r"class_labels: expected a tensor \[1 or B\]"):
        den.set_class_labels(torch.tensor(30))
    with pytest.raises(
        ValueError, match="class_labels: indices of the UNet's 351 class embeddings, an integer"
    ):
        den.set_class_labels(torch.tensor([30.0]))
    with pytest.raises(
        ValueError, match=r"class_labels: the UNet has 351 class embeddings \(0 to 350\), got \[351\]"
    ):
        den.set_class_labels(torch.tensor([351]))


def test_conditioning_noise_follows_the_flow(upscaler):
    """The UNet sees each low-resolution frame noised to the level, with noise warped along the flow (an
    integer pan: the previous frame's noise, shifted), and the level as its class label."""
    folder, _ = upscaler
    pipe = WarpedDiffusionPipeline.from_pretrained(folder, prompt="", sr_factor=4)
    assert pipe.task == "sr" and pipe.autoencoder.factor == 4 and pipe.noise_augmentation.noise_level == 20
    v = _video(3, 8, 12, shift=1)  # content moves 1 px right per frame: 1 latent cell (x4, factor 4)
    fwd = torch.zeros(2, 2, 32, 48)
    fwd[:, 0] = 4.0
    calls, handle = _record_unet(pipe.denoiser.unet)
    try:
        out = pipe(v, flows=(fwd, -fwd), generator=7, **RUN)
    finally:
        handle.remove()
    assert out.frames.shape == (3, 3, 32, 48) and torch.isfinite(out.frames).all()
    aug = pipe.noise_augmentation
    a = aug.alphas_cumprod[20].float()
    frames = [c[0][0] for c in calls[::2]]  # each frame's first step (sequential: 2 steps a frame)
    assert all(c[1].tolist() == [20] for c in calls)
    noise = [(x[4:] - a.sqrt() * (v[j] * 2 - 1)) / (1 - a).sqrt() for j, x in enumerate(frames)]
    for j in (1, 2):  # frame j's noise at x is frame j - 1's at x - 1, where covered
        assert_close(noise[j][:, :, 1:], noise[j - 1][:, :, :-1], atol=2e-3, what=f"frame {j}'s noise")
    # a unit-variance field, drawn from its own stream: not the latent noise, and not another seed's
    assert 0.5 < float(noise[0].std()) < 1.5
    assert not torch.allclose(noise[0], out.noise[0, :3], atol=0.1)
    calls2, handle = _record_unet(pipe.denoiser.unet)
    try:
        pipe(v[:1], generator=8, **RUN)
    finally:
        handle.remove()
    assert not torch.allclose(calls2[0][0][0, 4:], frames[0][4:], atol=1e-2)
    # stream and the wavefront schedule: __call__'s frames
    streamed = torch.stack(list(pipe.stream(v, generator=7, flow_fn=lambda p: (fwd[:1], -fwd[:1]), **RUN)))
    assert_close(streamed, out.frames, atol=1e-5, what="stream")
    wave = pipe(v, flows=(fwd, -fwd), generator=7, frame_schedule="wavefront", **RUN)
    assert_close(wave.frames, out.frames, atol=1e-5, what="wavefront")


def test_a_job_folder_resumes_and_keys_the_noise_level(upscaler, tmp_path):
    folder, _ = upscaler
    pipe = WarpedDiffusionPipeline.from_pretrained(folder, prompt="", sr_factor=4)
    v = _video(3, 8, 12)
    first = pipe(v, output_dir=tmp_path / "o", **RUN)
    again = pipe(v, output_dir=tmp_path / "o", **RUN)  # every frame done: read back
    assert torch.equal(again.latents, first.latents)
    other = WarpedDiffusionPipeline.from_pretrained(folder, prompt="", sr_factor=4, noise_level=40)
    with pytest.raises(ValueError, match="different job"):
        other(v, output_dir=tmp_path / "o", **RUN)
    assert not torch.allclose(other(v, **RUN).latents, first.latents, atol=1e-3)
    # the same level and class label on another low-resolution schedule: another job too
    aug = pipe.noise_augmentation
    moved = NoiseAugmentation(20, aug.alphas_cumprod.roll(1))
    same_label = WarpedDiffusionPipeline(pipe.denoiser, pipe.autoencoder, sr_factor=4, prompt=pipe.prompt,
                                         noise_augmentation=moved)  # fmt: skip
    with pytest.raises(ValueError, match="different job"):
        same_label(v, output_dir=tmp_path / "o", **RUN)


def test_x8_conditions_on_the_bicubic_upsampled_frame(upscaler):
    folder, _ = upscaler
    pipe = WarpedDiffusionPipeline.from_pretrained(folder, prompt="", noise_level=0)
    v = _video(1, 4, 6)
    calls, handle = _record_unet(pipe.denoiser.unet)
    try:
        out = pipe(v, **RUN)
    finally:
        handle.remove()
    assert out.frames.shape == (1, 3, 32, 48) and out.latents.shape == (1, 4, 8, 12)
    a = pipe.noise_augmentation.alphas_cumprod[0].float()
    want = resize_frames(v, (8, 12)) * 2 - 1
    got = calls[0][0][0, 4:]
    noise = (got - a.sqrt() * want[0]) / (1 - a).sqrt()  # level 0: a std of 0.01 around the frame
    assert float((got - want[0]).abs().max()) < 0.1 and 0.5 < float(noise.std()) < 1.5
    assert calls[0][1].tolist() == [0]


def test_pipelines_sharing_a_denoiser_keep_their_levels(upscaler):
    folder, _ = upscaler
    p20 = WarpedDiffusionPipeline.from_pretrained(folder, prompt="", sr_factor=4)
    p40 = WarpedDiffusionPipeline(p20.denoiser, p20.autoencoder, sr_factor=4, prompt=p20.prompt,
                                  noise_augmentation=NoiseAugmentation.from_folder(folder, 40))  # fmt: skip
    v = _video(1, 8, 12)
    for pipe, level in ((p20, 20), (p40, 40), (p20, 20)):
        calls, handle = _record_unet(pipe.denoiser.unet)
        try:
            pipe(v, **RUN)
            streamed = list(pipe.stream(v, **RUN))
        finally:
            handle.remove()
        assert len(streamed) == 1 and {c[1].item() for c in calls} == {level}


def test_bad_input(upscaler, tmp_path):
    folder, parts = upscaler
    with pytest.raises(ValueError, match="noise_level: at most the model's max_noise_level 350, got 400"):
        WarpedDiffusionPipeline.from_pretrained(folder, prompt="", noise_level=400)
    den = DiffusersDenoiser(parts["unet"], scheduler=parts["scheduler"], class_labels=torch.tensor([20]),
                            **encode_prompt(folder, "").denoiser_kwargs(32, 32))  # fmt: skip
    with pytest.raises(ValueError, match="noise_augmentation: an image-conditioned upscaler .* needs one"):
        WarpedDiffusionPipeline(den, DiffusersVAE(parts["vae"]))
    with pytest.raises(TypeError, match="noise_augmentation: expected a NoiseAugmentation or None, got int"):
        WarpedDiffusionPipeline(den, DiffusersVAE(parts["vae"]), noise_augmentation=20)
    with pytest.raises(ValueError, match="task: 'inpaint', but the model is conditioned for 'sr_image'"):
        WarpedDiffusionPipeline(den, DiffusersVAE(parts["vae"]), task="inpaint")
    # a model without the layout: no augmentation, no noise level
    from tests.models.tiny_text import tiny_text_pipeline_folder

    sd = tmp_path / "sd"
    tiny_text_pipeline_folder(sd, xl=False, in_channels=9)
    with pytest.raises(ValueError, match="noise_level: .* has no low_res_scheduler/"):
        WarpedDiffusionPipeline.from_pretrained(sd, prompt="", noise_level=20)
    inpaint = WarpedDiffusionPipeline.from_pretrained(sd, prompt="")
    aug = NoiseAugmentation.from_folder(folder)
    with pytest.raises(
        ValueError, match="noise_augmentation: for an image-conditioned upscaler; .* 'inpaint'"
    ):
        WarpedDiffusionPipeline(inpaint.denoiser, inpaint.autoencoder, noise_augmentation=aug)
    with pytest.raises(ValueError, match="class_labels: this UNet has no class embeddings"):
        inpaint.denoiser.set_class_labels(torch.tensor([1]))
    with pytest.raises(ValueError, match="class_labels: an upscaler's class label is its noise_level"):
        WarpedDiffusionPipeline.from_pretrained(folder, prompt="", class_labels=torch.tensor([3]))
    # an upscaler's UNet without its low_res_scheduler/; a max_noise_level past the class embeddings
    import json
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    shutil.rmtree(bare / "low_res_scheduler")
    with pytest.raises(
        ValueError, match="class_labels: the UNet in .* has class embeddings; .* low_res_scheduler/"
    ):
        WarpedDiffusionPipeline.from_pretrained(bare, prompt="")
    wide = tmp_path / "wide"
    shutil.copytree(folder, wide)
    (wide / "model_index.json").write_text(json.dumps({"max_noise_level": 1000}))
    with pytest.raises(
        ValueError, match=r"noise_level: the UNet has 351 class embeddings \(levels 0 to 350\), got 500"
    ):
        WarpedDiffusionPipeline.from_pretrained(wide, prompt="", noise_level=500)
