"""Tiny Stable Diffusion / SDXL pipeline folders built in code (offline): CLIP text encoders with a
character-level tokenizer, a tiny UNet, VAE and scheduler, saved as diffusers saves them."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler

from tests.models.tiny import tiny_cond_unet

MAX_TOKENS = 12


def tiny_tokenizer(folder: Path):
    """A CLIP BPE tokenizer over single characters (plus 'the'), ``MAX_TOKENS`` long."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ",.!-'":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    vocab["th"], vocab["the</w>"] = len(vocab), len(vocab) + 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS)


def tiny_text_encoder(projection: bool, seed: int, hidden: int = 8, vocab_size: int = 90):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=2,
        num_hidden_layers=3, max_position_embeddings=MAX_TOKENS, projection_dim=16, bos_token_id=0,
        eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def tiny_vae():
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4, layers_per_block=1,
        mid_block_add_attention=False,
    ).eval()  # fmt: skip


def tiny_text_pipeline_folder(
    folder: Path, xl: bool = True, in_channels: int = 9, refiner: bool = False, variant: str | None = None
):
    """A diffusers pipeline folder: SDXL (two encoders, pooled + time ids; ``refiner``: the second encoder
    only and aesthetic-score time ids) or SD (one encoder of width 16); the models' weights saved as
    ``variant`` (e.g. "fp16": ``*.fp16.safetensors``) where given. Returns the components."""
    folder = Path(folder)
    parts = {}
    if xl:
        if not refiner:
            parts["text_encoder"] = tiny_text_encoder(False, 1)
        parts["text_encoder_2"] = tiny_text_encoder(True, 2, hidden=16 if refiner else 8)
    else:
        parts["text_encoder"] = tiny_text_encoder(False, 1, hidden=16)
    for name in [k for k in parts]:
        tok = tiny_tokenizer(folder / "_vocab")
        parts[name.replace("text_encoder", "tokenizer")] = tok
    unet = tiny_cond_unet(in_channels, 4, sdxl=xl)
    if refiner:  # 5 time ids: original size, crop corner, aesthetic score
        unet = _refiner_unet(in_channels)
    parts.update(unet=unet, vae=tiny_vae(), scheduler=EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))  # fmt: skip
    for name, part in parts.items():
        weights = isinstance(part, torch.nn.Module)
        part.save_pretrained(folder / name, **({"variant": variant} if weights else {}))
    index = {"_class_name": "StableDiffusionXLInpaintPipeline" if xl else "StableDiffusionInpaintPipeline"}
    if xl:
        index["force_zeros_for_empty_prompt"] = True
    (folder / "model_index.json").write_text(json.dumps(index))
    return parts


def _refiner_unet(in_channels: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 5 + 16,
    ).eval()  # fmt: skip


def tiny_upscaler_models(max_noise_level: int = 350) -> dict:
    """A Stable Diffusion x4 upscaler's models (no text parts): a UNet taking the latent and the
    low-resolution RGB frame (4 + 3 channels) with the noise level as its class label (cross-attention
    width 16), a factor-4 VAE with the upscaler's scaling factor, a v-prediction DDIM scheduler and the DDPM
    ``low_res_scheduler``."""
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=7, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8, num_class_embeds=max_noise_level + 1,
    ).eval()  # fmt: skip
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=4, layers_per_block=1,
        mid_block_add_attention=False, scaling_factor=0.08333,
    ).eval()  # fmt: skip
    betas = dict(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02)
    return {
        "unet": unet,
        "vae": vae,
        "scheduler": DDIMScheduler(
            prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1, **betas
        ),
        "low_res_scheduler": DDPMScheduler(**betas),
    }


def tiny_upscaler_folder(folder: Path, max_noise_level: int = 350):
    """A Stable Diffusion x4 upscaler pipeline folder (as diffusers saves one): :func:`tiny_upscaler_models`
    and one text encoder. Returns the components."""
    folder = Path(folder)
    parts = tiny_upscaler_models(max_noise_level)
    parts["text_encoder"] = tiny_text_encoder(False, 1, hidden=16)
    parts["tokenizer"] = tiny_tokenizer(folder / "_vocab")
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    index = {"_class_name": "StableDiffusionUpscalePipeline", "max_noise_level": max_noise_level}
    (folder / "model_index.json").write_text(json.dumps(index))
    return parts


def tiny_flux_fill_models() -> dict:
    """A FLUX.1 Fill's models (no text parts), tiny: a FluxTransformer2DModel taking the packed latent,
    masked-image latent and 2 x 2 pixel mask (4 (4 + 4 + 4) = 48 channels) with guidance embeddings (text
    widths 16), a factor-2 VAE with a shift factor, and the dynamically shifted flow-matching scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=48, out_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16, guidance_embeds=True,
        axes_dims_rope=(2, 2, 4),
    ).eval()  # fmt: skip
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, layers_per_block=1,
        mid_block_add_attention=False, scaling_factor=0.5, shift_factor=0.1, use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )  # fmt: skip
    return {"transformer": transformer, "vae": vae, "scheduler": scheduler}


def tiny_flux_fill_folder(folder: Path):
    """A FLUX.1 Fill pipeline folder (as diffusers saves one): :func:`tiny_flux_fill_models`, a CLIP and a
    T5 text encoder. Returns the components."""
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    parts = tiny_flux_fill_models()
    cfg = T5Config(vocab_size=90, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, pad_token_id=1,
                   eos_token_id=1, decoder_start_token_id=0)  # fmt: skip
    torch.manual_seed(3)
    t5 = T5EncoderModel(cfg).eval()
    parts.update(
        text_encoder=tiny_text_encoder(False, 1, hidden=16), tokenizer=tiny_tokenizer(folder / "_vocab"),
        text_encoder_2=t5, tokenizer_2=tiny_tokenizer(folder / "_vocab"),
    )  # fmt: skip
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxFillPipeline"}))
    return parts


def tiny_controlnet(unet, seed: int = 4):
    """A ControlNet of ``unet`` (diffusers' ``ControlNetModel.from_unet``: a control image 8x the latent's
    size) with its zero-initialized convolutions perturbed, so that its residuals are not zero."""
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(unet)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()
