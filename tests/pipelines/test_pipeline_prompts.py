"""WarpedDiffusionPipeline.from_pretrained with a text prompt: a tiny SDXL inpainting folder (two CLIP
encoders, VAE) end to end, SDXL's time ids following each job's frame size, and bad input."""

import pytest
import torch

from tests.models.tiny_text import tiny_text_pipeline_folder
from tests.pipelines.test_pipeline import _video
from warped_fast.models import DiffusersDenoiser, DiffusersVAE, encode_prompt, load_unet_folder
from warped_fast.models.default import default_model_dir
from warped_fast.pipelines import WarpedDiffusionPipeline

RUN = dict(num_inference_steps=2, progress=False)


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl_inpaint")
    tiny_text_pipeline_folder(folder, xl=True, in_channels=9)
    return folder


def test_sdxl_inpainting_from_a_prompt(sdxl):
    pipe = WarpedDiffusionPipeline.from_pretrained(sdxl, prompt="the cat", negative_prompt="dark",
                                                   guidance_scale=3.0)  # fmt: skip
    assert pipe.task == "inpaint" and pipe.autoencoder.factor == 8
    # before any job: the UNet's own size (sample_size 16 latents: 128 pixels)
    assert pipe.denoiser.added_cond_kwargs["time_ids"].tolist() == [[128, 128, 0, 0, 128, 128]]
    v = _video(3, 32, 48, shift=4)
    out = pipe(v, "center", **RUN)
    assert out.frames.shape == (3, 3, 32, 48) and torch.isfinite(out.frames).all()
    assert pipe.denoiser.added_cond_kwargs["time_ids"].tolist() == [[32, 48, 0, 0, 32, 48]]
    assert pipe.denoiser.negative_added_cond_kwargs["time_ids"].tolist() == [[32, 48, 0, 0, 32, 48]]

    # the same job by hand: the UNet folder, the prompt encoded for the frame size, the VAE
    unet, sch = load_unet_folder(sdxl / "unet", scheduler_dir=sdxl / "scheduler")
    emb = encode_prompt(sdxl, "the cat", "dark")
    from diffusers import AutoencoderKL

    den = DiffusersDenoiser(unet, scheduler=sch, guidance_scale=3.0, **emb.denoiser_kwargs(32, 48))
    manual = WarpedDiffusionPipeline(den, DiffusersVAE(AutoencoderKL.from_pretrained(sdxl / "vae")))
    assert torch.equal(manual(v, "center", **RUN).frames, out.frames)

    # the prompt matters, and so does classifier-free guidance
    other = WarpedDiffusionPipeline.from_pretrained(
        sdxl, prompt="a dog", negative_prompt="dark", guidance_scale=3.0
    )
    assert not torch.allclose(other(v, "center", **RUN).frames, out.frames)
    plain = WarpedDiffusionPipeline.from_pretrained(sdxl, prompt="the cat")
    assert not torch.allclose(plain(v, "center", **RUN).frames, out.frames)

    # stream: the time ids of its frames' size, and __call__'s frames
    streamed = torch.stack(list(pipe.stream(v[:, :, :16, :24], "center", **RUN)))
    assert pipe.denoiser.added_cond_kwargs["time_ids"].tolist() == [[16, 24, 0, 0, 16, 24]]
    assert torch.allclose(streamed, pipe(v[:, :, :16, :24], "center", **RUN).frames, atol=1e-5)


def test_the_unet_folder_finds_its_siblings(sdxl):
    """Given the pipeline's unet/ folder: the scheduler, VAE and text encoders beside it."""
    pipe = WarpedDiffusionPipeline.from_pretrained(sdxl / "unet", prompt="")
    assert isinstance(pipe.autoencoder, DiffusersVAE) and pipe.prompt.time_ids == "size"
    assert pipe.denoiser.scheduler.config.beta_schedule == "scaled_linear"


def test_prompt_embeddings_and_bad_input(sdxl):
    emb = encode_prompt(sdxl, "the cat", original_size=(1024, 1024), target_size=(1024, 1024))
    pipe = WarpedDiffusionPipeline.from_pretrained(sdxl, prompt=emb)
    pipe(_video(2, 16, 24), "box", **RUN)
    assert pipe.denoiser.added_cond_kwargs["time_ids"].tolist() == [[1024, 1024, 0, 0, 1024, 1024]]
    with pytest.raises(ValueError, match="prompt: the UNet in .* is text-conditioned; give prompt"):
        WarpedDiffusionPipeline.from_pretrained(sdxl)
    with pytest.raises(ValueError, match="negative_prompt: steers classifier-free guidance"):
        WarpedDiffusionPipeline.from_pretrained(sdxl, prompt="a", negative_prompt="dark")
    with pytest.raises(ValueError, match="guidance_scale: expected a finite number, got nan"):
        WarpedDiffusionPipeline.from_pretrained(
            sdxl, prompt="a", negative_prompt="b", guidance_scale=float("nan")
        )
    with pytest.raises(ValueError, match="negative_prompt: needs a text prompt"):
        WarpedDiffusionPipeline.from_pretrained(sdxl, prompt=emb, negative_prompt="dark")
    with pytest.raises(TypeError, match="prompt: expected a str or PromptEmbeddings, got int"):
        WarpedDiffusionPipeline.from_pretrained(sdxl, prompt=3)
    with pytest.raises(ValueError, match="give prompt or prompt_embeds, not both"):
        WarpedDiffusionPipeline.from_pretrained(sdxl, prompt="a", prompt_embeds=emb.prompt_embeds)
    with pytest.raises(ValueError, match="prompt: the UNet in .* is not text-conditioned"):
        WarpedDiffusionPipeline.from_pretrained(default_model_dir("inpaint"), prompt="a cat")
    with pytest.raises(ValueError, match="prompt: the denoiser's UNet is not text-conditioned"):
        WarpedDiffusionPipeline(WarpedDiffusionPipeline.from_default("inpaint").denoiser, prompt=emb)
    cfg = WarpedDiffusionPipeline.from_pretrained(sdxl, prompt="a", guidance_scale=2.0)
    kw = {**emb.denoiser_kwargs(8, 8), "negative_prompt_embeds": None}
    with pytest.raises(ValueError, match="negative_prompt_embeds: required for classifier-free guidance"):
        cfg.denoiser.set_text_conditioning(**kw)


def test_sdxl_super_resolution_time_ids_name_the_output_size(tmp_path):
    tiny_text_pipeline_folder(tmp_path, xl=True, in_channels=8)  # [noisy latent | upsampled input latent]
    pipe = WarpedDiffusionPipeline.from_pretrained(tmp_path, prompt="")
    assert pipe.task == "sr"
    out = pipe(_video(2, 4, 6, shift=1), **RUN)
    assert out.frames.shape == (2, 3, 32, 48)
    assert pipe.denoiser.added_cond_kwargs["time_ids"].tolist() == [[32, 48, 0, 0, 32, 48]]


def test_a_folder_of_fp16_variant_weights(sdxl, tmp_path):
    """Weights saved as ``*.fp16.safetensors`` only (a folder downloaded with variant="fp16") load."""
    from warped_fast.models.default import weights_variant

    tiny_text_pipeline_folder(tmp_path, xl=True, in_channels=9, variant="fp16")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    assert weights_variant(tmp_path / "unet") == "fp16" and weights_variant(sdxl / "unet") is None
    assert weights_variant(tmp_path / "text_encoder", "model") == "fp16"
    v = _video(2, 16, 24)
    got = WarpedDiffusionPipeline.from_pretrained(tmp_path, prompt="the cat")(v, "box", **RUN).frames
    ref = WarpedDiffusionPipeline.from_pretrained(sdxl, prompt="the cat")(v, "box", **RUN).frames
    assert torch.equal(got, ref)
    (tmp_path / "unet" / "diffusion_pytorch_model.bf16.safetensors").write_bytes(b"")
    assert weights_variant(tmp_path / "unet") == "fp16"
    (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    (tmp_path / "unet" / "diffusion_pytorch_model.ema.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights variants \['bf16', 'ema'\]; keep one"):
        weights_variant(tmp_path / "unet")


def test_a_stream_keeps_its_time_ids_while_other_jobs_run(sdxl):
    pipe = WarpedDiffusionPipeline.from_pretrained(sdxl, prompt="the cat")
    small, big = _video(3, 16, 24), _video(2, 32, 48)
    alone = torch.stack(list(pipe.stream(small, "box", **RUN)))
    s = pipe.stream(small, "box", **RUN)
    first = next(s)
    pipe(big, "box", **RUN)  # SDXL time ids of 32x48 frames meanwhile
    assert torch.equal(torch.stack([first, *s]), alone)


def test_a_prompt_sets_all_the_text_conditioning(sdxl):
    emb = encode_prompt(sdxl, "the cat")
    for key, value in emb.denoiser_kwargs(16, 24).items():
        with pytest.raises(ValueError, match=f"give prompt or {key}, not both"):
            WarpedDiffusionPipeline.from_pretrained(sdxl, prompt="a", **{key: value})


def test_encoding_without_transformers_names_the_extra(sdxl, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModuleNotFoundError, match=r"warped_fast\[text\]") as e:
        encode_prompt(sdxl, "the cat")
    assert e.value.name == "transformers"


def test_stable_diffusion_inpainting_from_a_prompt(tmp_path):
    """An SD 1.x/2.x-style folder (one text encoder, no added conditions) with CFG."""
    tiny_text_pipeline_folder(tmp_path, xl=False, in_channels=9)
    pipe = WarpedDiffusionPipeline.from_pretrained(
        tmp_path, prompt="a cat", negative_prompt="dark", guidance_scale=4.0
    )
    assert pipe.prompt.time_ids is None and pipe.denoiser.added_cond_kwargs is None
    out = pipe(_video(2, 32, 48), "box", **RUN)
    assert out.frames.shape == (2, 3, 32, 48) and torch.isfinite(out.frames).all()


def test_gp_noise_on_a_white_noise_model_is_warned_once(sdxl, caplog):
    """A folder without a GP fine-tune's train_config.json was trained on white noise."""
    pipe = WarpedDiffusionPipeline.from_pretrained(sdxl, prompt="")
    assert pipe.trained_noise == "white"
    v = _video(1, 16, 24)
    with caplog.at_level("WARNING", logger="warped_fast"):
        pipe(v, "box", noise_method="gwtf", **RUN)
        assert "GP noise" not in caplog.text
        pipe(v, "box", **RUN)
        pipe(v, "box", noise_method="bilinear", noise_options={"base": "gp"}, **RUN)
    assert caplog.text.count("GP noise (noise_method 'gp') for a model trained on white noise") == 1
    caplog.clear()
    shipped = WarpedDiffusionPipeline.from_default("inpaint")  # trained with GP noise
    assert shipped.trained_noise == "gp"
    with caplog.at_level("WARNING", logger="warped_fast"):
        shipped(v[:, :, :16, :16], "box", **RUN)
    assert "GP noise" not in caplog.text
    with pytest.raises(ValueError, match="trained_noise: expected 'gp', 'white' or None, got 'pink'"):
        WarpedDiffusionPipeline(pipe.denoiser, pipe.autoencoder, trained_noise="pink")
