"""FLUX Fill (a rectified-flow inpainting transformer) on a tiny FLUX Fill folder: one frame as diffusers'
FluxFillPipeline computes it, video jobs with the method's guidance, the resolution-dependent schedule,
and bad input."""

import diffusers.pipelines.flux.pipeline_flux_fill as flux_fill
import pytest
import torch
from diffusers import FluxFillPipeline

from tests.helpers import assert_close
from tests.models.tiny_text import tiny_flux_fill_folder
from tests.pipelines.test_pipeline import _video
from warped_fast.models import DiffusersVAE
from warped_fast.models.flux import FluxFillDenoiser, encode_flux_prompt, pack_latents, unpack_latents
from warped_fast.models.layouts import frame_condition
from warped_fast.pipelines import WarpedDiffusionPipeline
from warped_fast.sampling import GuidanceConfig, sample_image

RUN = dict(num_inference_steps=2, progress=False)


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flux_fill")
    return folder, tiny_flux_fill_folder(folder)


def test_packing_round_trips():
    x = torch.randn(2, 5, 6, 8)
    p = pack_latents(x)
    assert p.shape == (2, 12, 20) and torch.equal(unpack_latents(p, 6, 8), x)
    assert torch.equal(p[0, 1, :4], x[0, 0, 0:2, 2:4].reshape(4))  # patch (0, 1), channel 0 first


def test_one_frame_is_diffusers_flux_fill(flux, monkeypatch):
    """Embeddings, conditioning, sigmas, transformer calls and decoding as FluxFillPipeline's, given the
    same starting noise; its VAE posterior sampled at the mode, as the library encodes (deterministic)."""
    folder, parts = flux
    monkeypatch.setattr(
        flux_fill,
        "retrieve_latents",
        lambda enc, generator=None, sample_mode="sample": enc.latent_dist.mode(),
    )
    ref = FluxFillPipeline(**parts)
    ref.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 16, 24, generator=g)
    mask = torch.zeros(1, 1, 16, 24)
    mask[..., 4:12, 6:18] = 1
    noise = torch.randn(1, 4, 8, 12, generator=g)
    want_emb, want_pooled, _ = ref.encode_prompt("the cat", prompt_2=None, max_sequence_length=16)
    emb, pooled = encode_flux_prompt(folder, "the cat", max_sequence_length=16)
    assert_close(emb, want_emb, atol=1e-6, what="T5 embeddings")
    assert torch.equal(pooled, want_pooled)
    want = ref(
        prompt="the cat", image=image, mask_image=mask, height=16, width=24, num_inference_steps=3,
        guidance_scale=5.0, max_sequence_length=16, latents=pack_latents(noise), output_type="pt",
    ).images  # fmt: skip

    den = FluxFillDenoiser(parts["transformer"], parts["scheduler"], emb, pooled, guidance_scale=5.0)
    assert (den.latent_channels, den.mask_factor, den.layout.cond_channels) == (4, 2, 8)
    schedule = den.sampling_schedule(3, (8, 12))
    assert float(schedule.sigmas[0]) == 1.0 and float(schedule.sigmas[-1]) == 0.0
    ae = DiffusersVAE(parts["vae"])
    _, cond = frame_condition("inpaint", image, mask, ae, kind="fill")
    mk, ml = ref.prepare_mask_latents(
        mask, (image * 2 - 1) * (1 - mask), 1, 4, 1, 16, 24, torch.float32, "cpu", None
    )
    assert_close(pack_latents(cond), torch.cat([ml, mk], -1), atol=1e-6, what="the Fill conditioning")
    got = ae.decode(sample_image(den, noise, schedule, cond))  # u = sigma_max * noise: x_1 = noise
    assert_close(got, want, atol=2e-6, what="the inpainted frame")
    with pytest.raises(ValueError, match=r"pooled_prompt_embeds: expected \[B, 16\] for this transformer"):
        den.set_text_conditioning(emb, pooled[:, :8])


def _record_timesteps(module):
    calls = []
    handle = module.register_forward_pre_hook(
        lambda m, a, kw: calls.append(kw["timestep"].clone()), with_kwargs=True
    )
    return calls, handle


def test_video_jobs_take_the_schedule_of_their_size(flux):
    folder, _ = flux
    pipe = WarpedDiffusionPipeline.from_pretrained(
        folder, prompt="the cat", guidance_scale=5.0, max_sequence_length=16
    )
    assert pipe.task == "inpaint" and pipe.denoiser.layout.kind == "fill" and pipe.autoencoder.factor == 2
    v = _video(3, 16, 24, shift=2)
    fwd = torch.zeros(2, 2, 16, 24)
    fwd[:, 0] = 2.0
    calls, handle = _record_timesteps(pipe.denoiser.unet)
    try:
        out = pipe(v, "center", flows=(fwd, -fwd), **RUN)  # exact guidance: gradients through the transformer
    finally:
        handle.remove()
    assert out.frames.shape == (3, 3, 16, 24) and torch.isfinite(out.frames).all()
    assert out.latents.shape == (3, 4, 8, 12) and len(calls) == 6
    sig = pipe.denoiser.sampling_schedule(2, (8, 12)).sigmas
    assert float(sig[1]) != float(pipe.denoiser.sampling_schedule(2, (16, 24)).sigmas[1])
    assert_close(calls[1], sig[1:2].float(), atol=1e-6, what="the second step's timestep")
    # guidance changes the frames after the first; stream and the wavefront schedule give __call__'s
    off = pipe(v, "center", flows=(fwd, -fwd), guidance=GuidanceConfig(mode="off"), **RUN)
    assert torch.equal(off.frames[0], out.frames[0]) and not torch.allclose(off.frames[2], out.frames[2])
    wave = pipe(v, "center", flows=(fwd, -fwd), frame_schedule="wavefront", **RUN)
    assert_close(wave.frames, out.frames, atol=1e-5, what="wavefront")
    calls, handle = _record_timesteps(pipe.denoiser.unet)
    try:
        streamed = torch.stack(list(pipe.stream(v, "center", flow_fn=lambda p: (fwd[:1], -fwd[:1]), **RUN)))
    finally:
        handle.remove()
    assert_close(streamed, out.frames, atol=1e-5, what="stream")
    assert_close(calls[1], sig[1:2].float(), atol=1e-6, what="the stream's second timestep")


def test_bad_input(flux):
    folder, parts = flux
    with pytest.raises(ValueError, match="negative_prompt: FLUX takes distilled guidance"):
        WarpedDiffusionPipeline.from_pretrained(folder, prompt="a", negative_prompt="b", guidance_scale=3.0)
    with pytest.raises(ValueError, match="noise_level: for an image-conditioned upscaler, not a FLUX model"):
        WarpedDiffusionPipeline.from_pretrained(folder, prompt="a", noise_level=20)
    with pytest.raises(ValueError, match="guidance_rescale: not an option of a FLUX model"):
        WarpedDiffusionPipeline.from_pretrained(folder, prompt="a", guidance_rescale=0.5)
    with pytest.raises(ValueError, match="prompt: the FLUX model in .* is text-conditioned; give prompt"):
        WarpedDiffusionPipeline.from_pretrained(folder)
    with pytest.raises(TypeError, match="prompt: a FLUX model takes its text as a str"):
        WarpedDiffusionPipeline.from_pretrained(folder, prompt=["a"])
    pipe = WarpedDiffusionPipeline.from_pretrained(folder / "transformer", prompt="", max_sequence_length=8)
    with pytest.raises(ValueError, match="video: frame size 18x24 must be a multiple of 4"):
        pipe(_video(1, 18, 24), "center", **RUN)
    from diffusers import FluxTransformer2DModel

    plain = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=(2, 2, 4),
    )  # fmt: skip
    emb, pooled = pipe.denoiser.prompt_embeds, pipe.denoiser.pooled_prompt_embeds
    with pytest.raises(ValueError, match="transformer: 16 inputs and 16 outputs are not a Fill model's"):
        FluxFillDenoiser(plain, parts["scheduler"], emb, pooled)


@pytest.mark.parametrize("mode", ["exact", "jacobian_free"])
def test_guidance_is_the_methods_in_its_coordinates(flux, mode):
    """One guided step in the flow's (x_t, t) equals Algorithm 1's in the method's coordinates
    u = x_t / (1 - t), sigma = t / (1 - t), mapped back: the same lam means the same guidance."""
    from warped_fast.ops import euler_guided_step
    from warped_fast.sampling.guidance import predict_and_guide

    folder, parts = flux
    den = FluxFillDenoiser(
        parts["transformer"],
        parts["scheduler"],
        *encode_flux_prompt(folder, "the cat", max_sequence_length=8),
    )
    g = torch.Generator().manual_seed(1)
    x, prev = torch.randn(2, 1, 4, 8, 12, generator=g).unbind(0)
    cond = torch.randn(1, 8, 8, 12, generator=g)
    flow = torch.zeros(1, 2, 8, 12)
    flow[:, 0] = 1.0
    t, tn = torch.tensor([0.6]), torch.tensor([0.35])
    cfg = GuidanceConfig(mode=mode, lam=2.0)
    d, gx, _ = predict_and_guide(den, x, t, cond, [True], prev, flow, None, cfg)
    mine = euler_guided_step(x, d, t, tn, gx * den.guidance_weight(t, tn, mode).view(-1, 1, 1, 1), cfg.lam)

    def edm(u, s, c):  # the same model as an x0-predictor in the method's coordinates
        return den(u / (1 + s.view(-1, 1, 1, 1)), s / (1 + s), c)

    s, sn = t / (1 - t), tn / (1 - tn)
    d2, gu, _ = predict_and_guide(edm, x / (1 - t), s, cond, [True], prev, flow, None, cfg)
    want = euler_guided_step(x / (1 - t), d2, s, sn, gu, cfg.lam) * (1 - tn)
    assert_close(mine, want, atol=2e-5, what=f"a guided step ({mode})")
    assert not torch.allclose(mine, euler_guided_step(x, d, t, tn, gx, cfg.lam), atol=1e-3)


def test_loading_details(flux, tmp_path):
    """T5 keeps its float32 feed-forward output in float16; an empty prompt_2 is the prompt (as diffusers);
    the sequence length is at most 512; other transformer folders are refused before loading."""
    import json
    import shutil

    from warped_fast.models.prompts import _load_text_pair

    folder, _ = flux
    _, t5 = _load_text_pair(folder, "_2", "cpu", torch.float16, encoders=("T5EncoderModel",))
    assert {p.dtype for n, p in t5.named_parameters() if n.endswith("wo.weight")} == {torch.float32}
    a = encode_flux_prompt(folder, "the cat", "", max_sequence_length=8)
    b = encode_flux_prompt(folder, "the cat", max_sequence_length=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match=r"max_sequence_length: expected an int in \[1, 512\], got 1024"):
        encode_flux_prompt(folder, "a", max_sequence_length=1024)
    sd3 = tmp_path / "sd3"
    shutil.copytree(folder, sd3)
    cfg = json.loads((sd3 / "transformer" / "config.json").read_text())
    (sd3 / "transformer" / "config.json").write_text(
        json.dumps({**cfg, "_class_name": "SD3Transformer2DModel"})
    )
    with pytest.raises(ValueError, match="folder: .* holds a SD3Transformer2DModel; .* FLUX Fill"):
        WarpedDiffusionPipeline.from_pretrained(sd3, prompt="")
    pipe = WarpedDiffusionPipeline.from_pretrained(folder, prompt="", max_sequence_length=8)
    from warped_fast.models import PromptEmbeddings

    emb = PromptEmbeddings(torch.zeros(1, 8, 16), torch.zeros(1, 8, 16))
    with pytest.raises(ValueError, match="prompt: a FluxFillDenoiser holds its own text"):
        WarpedDiffusionPipeline(pipe.denoiser, pipe.autoencoder, prompt=emb)
    from warped_fast.train import TrainConfig, Trainer

    with pytest.raises(ValueError, match="pretrained: .* is a transformer \\(FLUX\\) pipeline"):
        Trainer(TrainConfig(pretrained=str(folder), output_dir=str(tmp_path / "run"), progress=False), "cpu")


def test_the_compiled_backend_tells_keyword_shapes_apart():
    from warped_fast.models import UNetRunner

    runner = UNetRunner(torch.nn.Identity(), "compile")
    runner._fn = lambda **kw: kw["hidden_states"]  # the bookkeeping only, no compiler
    for n in (1, 2, 2, 3):
        runner(hidden_states=torch.zeros(n, 4), timestep=torch.zeros(n))
    assert len(runner.compile_seconds) == 3
