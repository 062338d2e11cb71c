"""WarpedDiffusionPipeline on a CUDA device (tiny models built in code): a guided wavefront job with an
output folder, whose step predictions travel to pinned host memory without waiting, matches the same
job without a folder, and resumes. On CUDA two runs agree to rounding only: the guidance gradient's splat
adds with atomics, in no fixed order."""

import pytest
import torch

from tests.models.tiny import scheduler, tiny_unet
from tests.pipelines.test_pipeline import _video, static_clip_latents
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


def _text(width: int, tokens: int = 8):
    g = torch.Generator().manual_seed(5)
    return torch.randn(1, tokens, width, generator=g), torch.randn(1, width, generator=g)


def test_flux_fill_job_on_cuda():
    """A guided FLUX Fill job (no text encoders: random text embeddings) on CUDA matches the CPU's; bf16 runs."""
    import copy

    from tests.models.tiny_text import tiny_flux_fill_models
    from warped_fast.models import DiffusersVAE, FluxFillDenoiser

    parts = tiny_flux_fill_models()
    emb, pooled = _text(16)
    v = _video(3, 16, 24, shift=2)
    kw = {"num_inference_steps": 3, "progress": False}
    outs = {}
    for dev in ("cpu", "cuda"):
        tr, vae = (copy.deepcopy(parts[k]).to(dev) for k in ("transformer", "vae"))
        pipe = WarpedDiffusionPipeline(
            FluxFillDenoiser(tr, parts["scheduler"], emb, pooled), DiffusersVAE(vae)
        )
        outs[dev] = pipe(v, "center", **kw)
    _close(outs["cuda"].latents, outs["cpu"].latents, rel=1e-4)
    tr = copy.deepcopy(parts["transformer"]).to("cuda", torch.bfloat16)
    pipe = WarpedDiffusionPipeline(
        FluxFillDenoiser(tr, parts["scheduler"], emb, pooled), DiffusersVAE(parts["vae"].to("cuda"))
    )
    assert torch.isfinite(pipe(v, "center", frame_schedule="wavefront", **kw).latents).all()


def test_x4_upscaler_job_on_cuda():
    """A guided x4-upscaler job (class labels, noise augmentation warped on the device) matches the CPU's."""
    import copy

    from diffusers import EulerDiscreteScheduler

    from tests.models.tiny_text import tiny_upscaler_models
    from warped_fast.models import DiffusersVAE, NoiseAugmentation

    parts = tiny_upscaler_models()
    sch = EulerDiscreteScheduler.from_config(parts["scheduler"].config)
    emb, _ = _text(16)
    aug = NoiseAugmentation(20, parts["low_res_scheduler"].alphas_cumprod)
    v = _video(3, 8, 12)
    outs = {}
    for dev in ("cpu", "cuda"):
        unet, vae = (copy.deepcopy(parts[k]).to(dev) for k in ("unet", "vae"))
        den = DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=emb, class_labels=aug.class_labels())
        pipe = WarpedDiffusionPipeline(den, DiffusersVAE(vae), sr_factor=4, noise_augmentation=aug)
        outs[dev] = pipe(v, num_inference_steps=3, progress=False, noise_method="gwtf")
    _close(outs["cuda"].latents, outs["cpu"].latents, rel=1e-4)


def test_sdxl_tile_controlnet_job_on_cuda():
    """A guided SR job with a text-to-image SDXL UNet and a ControlNet on CUDA matches the CPU's."""
    import copy

    from tests.models.tiny import tiny_cond_unet
    from tests.models.tiny_text import tiny_controlnet, tiny_vae
    from warped_fast.models import DiffusersVAE

    unet0 = tiny_cond_unet(4, 4, sdxl=True)
    net0 = tiny_controlnet(unet0)
    emb, pooled = _text(16)
    added = {"text_embeds": pooled, "time_ids": torch.tensor([[32.0, 48, 0, 0, 32, 48]])}
    v = _video(3, 4, 6)
    outs = {}
    for dev in ("cpu", "cuda"):
        unet, net, vae = (copy.deepcopy(m).to(dev) for m in (unet0, net0, tiny_vae()))
        den = DiffusersDenoiser(unet, scheduler=scheduler(), prompt_embeds=emb, added_cond_kwargs=added, controlnet=net,
                                controlnet_scale=0.7)  # fmt: skip
        outs[dev] = WarpedDiffusionPipeline(den, DiffusersVAE(vae)).__call__(
            v, num_inference_steps=3, progress=False
        )
    _close(outs["cuda"].latents, outs["cpu"].latents, rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_static_clip_stays_static_under_the_wavefront_schedule_on_cuda(dtype):
    """cuDNN rounds each batch layout differently (float32 convolutions in TF32 by default); the guidance
    dead zone, one rounding of the precision the model computes in, keeps a static clip static."""
    out = static_clip_latents(WarpedDiffusionPipeline.from_default("inpaint", device="cuda", dtype=dtype), 4)
    for s, lat in out.items():
        assert (lat[1:] - lat[0]).abs().max() < 0.01, s
