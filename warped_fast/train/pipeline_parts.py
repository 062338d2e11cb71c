"""Fine-tuning a diffusers pipeline folder (``pretrained`` with ``unet/``, e.g. SDXL inpainting) with GP
noise (method section 6): the parts besides the UNet that the denoising loss needs.

- the autoencoder (``vae/``, frozen; none: pixel space), so the loss is in the model's latent space and
  the conditioning is the pipeline's (:func:`warped_fast.models.layouts.frame_condition`);
- the text conditioning of a text-conditioned UNet: one prompt for every image (``TrainConfig.prompt``,
  encoded once with the folder's encoders), SDXL's time ids for the training crop size;
- the model's own training noise schedule (its ``alphas_cumprod``) and prediction type.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..models.autoencoder import DiffusersVAE, IdentityAutoencoder
from ..models.default import load_pretrained, load_unet_folder
from ..models.denoiser import text_conditioned
from ..models.layouts import ConditioningLayout, frame_condition
from ..models.prompts import encode_prompt

# Subfolders an export shares with the folder it was fine-tuned from (everything but unet/, scheduler/)
SHARED_PARTS = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")


def pipeline_root(folder: str | Path | None) -> Path | None:
    """The diffusers pipeline folder of ``pretrained``: itself where it has a ``unet/`` subfolder, its
    parent where it is that ``unet/`` (as inference takes it); None for a bare UNet's folder."""
    if folder is None:
        return None
    folder = Path(folder).resolve()
    if (folder / "transformer").is_dir() or folder.name == "transformer":
        raise ValueError(
            f"pretrained: {folder} is a transformer (FLUX) pipeline; fine-tuning takes UNet pipelines and UNets"
        )
    for root in (folder, folder.parent if folder.name == "unet" else None):
        if root is not None and (root / "unet" / "config.json").is_file():
            return root
    return None


class PipelineParts:
    """The UNet of a pipeline folder and what its loss needs.

    Attributes:
        unet: the UNet (float32, on ``device``); scheduler: its inference scheduler (for the export).
        autoencoder: :class:`DiffusersVAE` (frozen) or :class:`IdentityAutoencoder`.
        alphas_cumprod: ``[T_train]`` the model's training schedule; prediction_type: "epsilon" or
            "v_prediction".
        latent_channels, latent_size: the noise's ``C`` and ``R / f``.
    """

    def __init__(self, cfg, device: torch.device, root: Path):
        self.root = root
        if cfg.residual:
            raise ValueError(
                "residual: for the pixel-space models trained here, not a pipeline folder's UNet"
            )
        if (root / "low_res_scheduler").is_dir():
            raise ValueError(
                f"pretrained: {root} is an image-conditioned upscaler (a low_res_scheduler/, such as Stable "
                "Diffusion's x4); fine-tuning takes inpainting and latent-conditioned SR pipelines"
            )
        self.unet, self.scheduler = load_unet_folder(root / "unet", device, scheduler_dir=root / "scheduler")
        ac = getattr(self.scheduler, "alphas_cumprod", None)
        if ac is None:
            raise ValueError(
                f"pretrained: {root}'s scheduler ({type(self.scheduler).__name__}) has no alphas_cumprod; "
                "fine-tuning takes DDPM-family models (epsilon or v prediction), not EDM ones"
            )
        self.alphas_cumprod = torch.as_tensor(ac, dtype=torch.float32)
        kind = self.scheduler.config.prediction_type
        if kind not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"pretrained: the model predicts {kind!r}; fine-tuning takes epsilon or v_prediction"
            )
        if cfg.prediction_type not in (None, kind):
            raise ValueError(
                f"prediction_type: the pretrained model predicts {kind!r}, the config says "
                f"{cfg.prediction_type!r}; leave it unset (the model's) or set {kind!r}"
            )
        self.prediction_type = kind
        if (root / "vae").is_dir():
            from diffusers import AutoencoderKL

            vae = load_pretrained(AutoencoderKL, root / "vae", "pretrained", torch_dtype=torch.float32)
            self.autoencoder = DiffusersVAE(vae.to(device).requires_grad_(False))
        else:
            self.autoencoder = IdentityAutoencoder()
        c, f = self.autoencoder.latent_channels, self.autoencoder.factor
        if cfg.resolution % f:
            raise ValueError(
                f"resolution: expected a multiple of the autoencoder's factor {f}, got {cfg.resolution}"
            )
        self.latent_channels, self.latent_size = c, cfg.resolution // f
        layout = ConditioningLayout.inpaint(c) if cfg.task == "inpaint" else ConditioningLayout.sr(c)
        if self.unet.config.in_channels != layout.in_channels:
            raise ValueError(
                f"pretrained: {root / 'unet'} takes {self.unet.config.in_channels} input channels; a {cfg.task} "
                f"model on {c}-channel latents takes {layout.in_channels} ({layout})"
            )
        self.text: dict[str, torch.Tensor | dict] = {}
        if text_conditioned(self.unet.config):
            emb = encode_prompt(root, cfg.prompt, unet_config=self.unet.config, device=device)
            kw = emb.denoiser_kwargs(cfg.resolution, cfg.resolution)
            self.text["encoder_hidden_states"] = kw["prompt_embeds"]
            if "added_cond_kwargs" in kw:
                self.text["added_cond_kwargs"] = kw["added_cond_kwargs"]

    @torch.no_grad()
    def inputs(self, task: str, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean latents ``[B, C, R/f, R/f]`` and the conditioning of a batch of clean crops ``x`` and
        their pixel conditioning ``cond`` (:func:`~warped_fast.train.tasks.task_condition`, in [-1, 1]) as
        the pipeline builds it from the degraded frames."""
        ae = self.autoencoder
        if task == "inpaint":
            _, c = frame_condition("inpaint", (x + 1) / 2, cond[:, :1], ae)
        else:  # the pipeline upsamples the low-resolution frame itself: the same bicubic, in [0, 1]
            c = ae.encode((cond + 1) / 2)
        return ae.encode((x + 1) / 2), c

    def unet_kwargs(self, n: int) -> dict:
        """The text conditioning for a batch of ``n`` (one prompt for every item)."""
        out = {}
        if "encoder_hidden_states" in self.text:
            e = self.text["encoder_hidden_states"]
            out["encoder_hidden_states"] = e.expand(n, *e.shape[1:])
        if "added_cond_kwargs" in self.text:
            out["added_cond_kwargs"] = {
                k: v.expand(n, *v.shape[1:]) for k, v in self.text["added_cond_kwargs"].items()
            }
        return out

    def export_shared(self, folder: Path) -> None:
        """Give an export the parts it shares with the pretrained folder (hard links where the file system
        allows, else copies) and its ``model_index.json``."""
        for name in SHARED_PARTS:
            src = self.root / name
            if src.is_dir() and not (folder / name).exists():
                shutil.copytree(src, folder / name, copy_function=_link_or_copy)
        index = self.root / "model_index.json"
        if index.is_file():
            shutil.copy2(index, folder / "model_index.json")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
