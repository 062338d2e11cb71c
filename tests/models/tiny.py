"""Tiny diffusers models built in code (offline) for tests and CPU benchmarks."""

from __future__ import annotations

import torch
from diffusers import EulerDiscreteScheduler, UNet2DConditionModel, UNet2DModel


def tiny_cond_unet(in_channels: int = 4, out_channels: int = 4, seed: int = 0, sdxl: bool = False):
    torch.manual_seed(seed)
    kw = {}
    if sdxl:
        kw = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=8 * 6 + 16,
        )
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
        **kw,
    ).eval()


def tiny_unet(in_channels: int = 4, out_channels: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()


def scheduler(prediction_type: str = "epsilon", **kw):
    return EulerDiscreteScheduler(prediction_type=prediction_type, **kw)
