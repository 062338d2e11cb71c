"""Per-frame conditioning of the restoration tasks (frame_condition): degraded frames and latents."""

import pytest
import torch


def test_frame_condition_lives_on_the_autoencoders_device():
    """A VAE on another device than the frames (a GPU VAE, CPU frames): the conditioning is on the VAE's
    device (the mask follows the latent). A 'meta' device stands in for the GPU."""
    from warped_fast.models.layouts import frame_condition

    class MetaVAE:
        factor = 8

        def encode(self, frames):
            n, _, h, w = frames.shape
            return torch.empty(n, 4, h // 8, w // 8, device="meta")

    frames, mask = torch.rand(2, 3, 16, 24), torch.zeros(2, 1, 16, 24)
    mask[..., 3:5, 9:10] = 1
    degraded, cond = frame_condition("inpaint", frames, mask, MetaVAE())
    assert cond.device.type == "meta" and cond.shape == (2, 5, 2, 3)
    assert degraded.device.type == "cpu" and (degraded[:, :, 3:5, 9] == 0.5).all()
    up, cond = frame_condition("sr", frames, None, MetaVAE())
    assert up.shape == (2, 3, 128, 192) and cond.shape == (2, 4, 16, 24)
    with pytest.raises(ValueError, match="task: expected 'inpaint' or 'sr'"):
        frame_condition("deblur", frames, None, MetaVAE())
