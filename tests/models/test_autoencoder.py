"""DiffusersVAE: scaling, and the float32 upcast of a float16 VAE whose config asks for it."""

import pytest
import torch

from warped_fast.models import DiffusersVAE


def _tiny_vae(**kw):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, layers_per_block=1,
        mid_block_add_attention=False, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("force_upcast", [True, False])
def test_float16_vae_upcast_when_its_config_asks(force_upcast):
    given = _tiny_vae(force_upcast=force_upcast).half()
    vae = DiffusersVAE(given)
    assert vae._dtype == (torch.float32 if force_upcast else torch.float16)
    assert next(given.parameters()).dtype == torch.float16  # the caller's module is left in float16
    assert vae.factor == 2 and vae.latent_channels == 4


def test_encode_decode_shapes_and_scaling():
    vae = DiffusersVAE(_tiny_vae(scaling_factor=0.5), chunk=2)
    frames = torch.rand(3, 3, 8, 12, generator=torch.Generator().manual_seed(1))
    z = vae.encode(frames)
    assert z.shape == (3, 4, 4, 6) and z.dtype == torch.float32
    with torch.no_grad():
        raw = vae.vae.encode(frames * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(z, raw * 0.5)
    out = vae.decode(z)
    assert out.shape == (3, 3, 8, 12) and 0 <= out.min() and out.max() <= 1


def test_latents_mean_and_std_normalize_as_diffusers_sdxl_pipelines():
    mean, std = [0.1, -0.2, 0.3, 0.0], [2.0, 0.5, 1.0, 4.0]
    vae = DiffusersVAE(_tiny_vae(scaling_factor=0.5, latents_mean=mean, latents_std=std))
    frames = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(2))
    z = vae.encode(frames)
    with torch.no_grad():
        raw = vae.vae.encode(frames * 2 - 1).latent_dist.mode()
    m, s = torch.tensor(mean).view(1, 4, 1, 1), torch.tensor(std).view(1, 4, 1, 1)
    torch.testing.assert_close(z, (raw - m) * 0.5 / s)  # diffusers: (z - mean) * scaling_factor / std
    with torch.no_grad():
        want = ((vae.vae.decode(z * s / 0.5 + m).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(vae.decode(z), want)


def test_frames_move_to_the_vae_device():
    """Frames read on the CPU reach a VAE on another device (the meta device stands in for a GPU)."""
    vae = DiffusersVAE(_tiny_vae().to("meta"))
    z = vae.encode(torch.rand(2, 3, 8, 12))
    assert z.device.type == "meta" and z.shape == (2, 4, 4, 6)
    assert vae.decode(torch.zeros(2, 4, 4, 6)).device.type == "meta"
