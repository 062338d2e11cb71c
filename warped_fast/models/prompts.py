"""Text prompts of Stable Diffusion (1.x / 2.x) and SDXL UNets, encoded with the CLIP text encoders and
tokenizers of a local diffusers folder (``text_encoder/`` + ``tokenizer/``, and for SDXL ``text_encoder_2/`` +
``tokenizer_2/``). Never downloads; safetensors only.

The embeddings are diffusers' (``StableDiffusionPipeline.encode_prompt`` and
``StableDiffusionXLPipeline.encode_prompt``, one prompt per call): SD's last hidden state (after the final layer
norm); SDXL's penultimate hidden states of both encoders side by side, the second encoder's projected pooled
output, zeros for an absent negative prompt where the folder says ``force_zeros_for_empty_prompt``, and SDXL's
micro-conditioning ``time_ids`` (original size, crop corner, target size; or the aesthetic score of refiner
and img2img-style UNets).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io.frames import read_json
from ..ops._checks import check_device, check_float_dtype
from .default import weights_variant
from .denoiser import config_value, embedding_width

logger = logging.getLogger("warped_fast")

# The encoder classes a folder may name (its config.json's "architectures")
_ENCODERS = ("CLIPTextModel", "CLIPTextModelWithProjection")


@dataclass(frozen=True)
class PromptEmbeddings:
    """One encoded prompt and its negative, for a :class:`~warped_fast.models.DiffusersDenoiser`.

    Attributes:
        prompt_embeds, negative_prompt_embeds: ``[1, L, D]`` token embeddings.
        pooled_prompt_embeds, negative_pooled_prompt_embeds: ``[1, P]`` (SDXL's ``text_embeds``), else None.
        time_ids: what SDXL's added ``time_ids`` hold: "size" (original size, crop corner, target size),
            "aesthetic" (original size, crop corner, aesthetic score), or None (not an SDXL UNet).
        original_size, target_size: ``(height, width)`` in pixels; None: the output frames' size.
        crops_coords_top_left, aesthetic_score, negative_aesthetic_score: the other micro-conditions.
        negative_original_size, negative_target_size: the negative time ids' (None: the positive ones');
            negative_crops_coords_top_left: the aesthetic negative's crop corner (diffusers' defaults).
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None
    time_ids: str | None = None
    original_size: tuple[int, int] | None = None
    target_size: tuple[int, int] | None = None
    crops_coords_top_left: tuple[int, int] = (0, 0)
    aesthetic_score: float = 6.0
    negative_aesthetic_score: float = 2.5
    negative_original_size: tuple[int, int] | None = None
    negative_target_size: tuple[int, int] | None = None
    negative_crops_coords_top_left: tuple[int, int] = (0, 0)

    def __post_init__(self):
        if self.time_ids not in (None, "size", "aesthetic"):
            raise ValueError(f"time_ids: expected None, 'size' or 'aesthetic', got {self.time_ids!r}")
        if self.time_ids is not None and self.pooled_prompt_embeds is None:
            raise ValueError("pooled_prompt_embeds: required with SDXL time_ids")
        for name in ("original_size", "target_size", "crops_coords_top_left", "negative_original_size",
                     "negative_target_size", "negative_crops_coords_top_left"):  # fmt: skip
            v = getattr(self, name)
            if v is not None and (len(v) != 2 or not all(isinstance(x, int) and x >= 0 for x in v)):
                raise ValueError(f"{name}: expected (height, width) as two ints >= 0, got {v!r}")

    def denoiser_kwargs(self, height: int | None = None, width: int | None = None) -> dict:
        """``prompt_embeds``, ``negative_prompt_embeds`` and, for SDXL, ``added_cond_kwargs`` and
        ``negative_added_cond_kwargs`` for output frames ``height x width`` pixels (the size SDXL's
        ``time_ids`` name where ``original_size`` / ``target_size`` are None)."""
        out = {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}
        if self.time_ids is None:
            return out
        if (self.original_size is None or self.target_size is None) and (height is None or width is None):
            raise ValueError("height / width: SDXL's time_ids name the output size; give it")
        size = (height, width)
        orig, target = self.original_size or size, self.target_size or size
        neg_orig = self.negative_original_size or orig
        # as diffusers' SDXL inpaint / img2img pipelines (the base pipeline's agree for the defaults)
        if self.time_ids == "size":
            pos = [*orig, *self.crops_coords_top_left, *target]
            neg = [*neg_orig, *self.crops_coords_top_left, *(self.negative_target_size or target)]
        else:
            pos = [*orig, *self.crops_coords_top_left, self.aesthetic_score]
            neg = [*neg_orig, *self.negative_crops_coords_top_left, self.negative_aesthetic_score]
        dtype = self.prompt_embeds.dtype
        ids = [torch.tensor([v], dtype=dtype, device=self.prompt_embeds.device) for v in (pos, neg)]
        out["added_cond_kwargs"] = {"text_embeds": self.pooled_prompt_embeds, "time_ids": ids[0]}
        out["negative_added_cond_kwargs"] = {
            "text_embeds": self.negative_pooled_prompt_embeds,
            "time_ids": ids[1],
        }
        return out


def encode_prompt(
    folder: str | Path,
    prompt: str,
    negative_prompt: str | None = None,
    *,
    prompt_2: str | None = None,
    negative_prompt_2: str | None = None,
    clip_skip: int | None = None,
    unet_config=None,
    original_size: tuple[int, int] | None = None,
    target_size: tuple[int, int] | None = None,
    crops_coords_top_left: tuple[int, int] = (0, 0),
    aesthetic_score: float = 6.0,
    negative_aesthetic_score: float = 2.5,
    negative_original_size: tuple[int, int] | None = None,
    negative_target_size: tuple[int, int] | None = None,
    negative_crops_coords_top_left: tuple[int, int] = (0, 0),
    device=None,
    dtype: torch.dtype = torch.float32,
) -> PromptEmbeddings:
    """Encode ``prompt`` and ``negative_prompt`` with the text encoders of a local diffusers folder.

    Args:
        folder: a diffusers pipeline folder (``text_encoder/``, ``tokenizer/``; SDXL adds
            ``text_encoder_2/``, ``tokenizer_2/``; a refiner has only those).
        prompt, negative_prompt: the text (None: SDXL with ``force_zeros_for_empty_prompt`` takes zeros,
            else the empty prompt).
        prompt_2, negative_prompt_2: SDXL's second encoder's text (None: the same as the first's).
        clip_skip: use the output of this many layers before the last (as diffusers; not for negatives).
        unet_config: the UNet's config (default: ``folder/unet/config.json``); says what SDXL's
            ``time_ids`` hold and checks the embeddings fit it.
        original_size, target_size, crops_coords_top_left, aesthetic_score, negative_aesthetic_score,
        negative_original_size, negative_target_size, negative_crops_coords_top_left: SDXL's
            micro-conditioning (:class:`PromptEmbeddings`).
        device, dtype: where the encoders run and the embeddings' dtype.

    The encoders are loaded for the call and released after it.
    """
    device, dtype = check_device("device", device), check_float_dtype("dtype", dtype)
    folder = Path(folder)
    for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt), ("prompt_2", prompt_2),
                       ("negative_prompt_2", negative_prompt_2)):  # fmt: skip
        if text is not None and not isinstance(text, str):
            raise TypeError(f"{name}: expected a str, got {type(text).__name__}")
    if prompt is None:
        raise ValueError("prompt: required (a str; '' for no text)")
    if clip_skip is not None and (not isinstance(clip_skip, int) or clip_skip < 0):
        raise ValueError(f"clip_skip: expected an int >= 0, got {clip_skip!r}")
    pairs = [(sub, _load_text_pair(folder, sub, device, dtype)) for sub in ("", "_2")]
    pairs = [(sub, p) for sub, p in pairs if p is not None]
    if not pairs:
        raise FileNotFoundError(
            f"folder: no text encoder in {folder} (expected text_encoder/ and tokenizer/ subfolders)"
        )
    depth = min(p[1].config.num_hidden_layers for _, p in pairs)
    if clip_skip is not None and clip_skip + 2 > depth + 1:  # SDXL reads hidden state -(clip_skip + 2)
        raise ValueError(f"clip_skip: the text encoders have {depth} layers; expected at most {depth - 1}")
    xl = any(sub == "_2" for sub, _ in pairs)
    if unet_config is None and (folder / "unet" / "config.json").exists():
        unet_config = read_json(folder / "unet" / "config.json", "folder")
    index = read_json(folder / "model_index.json", "folder") if (folder / "model_index.json").exists() else {}
    with torch.no_grad():
        if xl:
            emb = _encode_xl(pairs, prompt, negative_prompt, prompt_2, negative_prompt_2, clip_skip,
                             bool(index.get("force_zeros_for_empty_prompt", True)))  # fmt: skip
        else:
            emb = _encode_sd(pairs[0][1], prompt, negative_prompt, clip_skip)
    emb = [None if e is None else e.to(device=device, dtype=dtype) for e in emb]
    time_ids = _time_ids_kind(unet_config, emb[2]) if xl else None
    _check_width(unet_config, emb[0])
    return PromptEmbeddings(
        *emb, time_ids=time_ids, original_size=_pair(original_size), target_size=_pair(target_size),
        crops_coords_top_left=_pair(crops_coords_top_left), aesthetic_score=float(aesthetic_score),
        negative_aesthetic_score=float(negative_aesthetic_score),
        negative_original_size=_pair(negative_original_size), negative_target_size=_pair(negative_target_size),
        negative_crops_coords_top_left=_pair(negative_crops_coords_top_left),
    )  # fmt: skip


def _pair(v):
    return None if v is None else tuple(v)


def _load_text_pair(folder: Path, sub: str, device, dtype, encoders: tuple[str, ...] = _ENCODERS):
    """(tokenizer, encoder) of ``text_encoder{sub}/`` and ``tokenizer{sub}/``, or None if the folder has
    neither; one without the other is an error. ``encoders``: the architectures taken."""
    enc_dir, tok_dir = folder / f"text_encoder{sub}", folder / f"tokenizer{sub}"
    if not enc_dir.is_dir() and not tok_dir.is_dir():
        return None
    for d in (enc_dir, tok_dir):
        if not d.is_dir():
            raise FileNotFoundError(
                f"folder: {folder} has {enc_dir.name if d is tok_dir else tok_dir.name}/ but no {d.name}/"
            )
    try:
        import transformers
    except ImportError as e:
        raise ModuleNotFoundError(
            "prompt: encoding text needs transformers (pip install 'warped_fast[text]')", name="transformers"
        ) from e
    arch = (read_json(enc_dir / "config.json", "folder").get("architectures") or [encoders[0]])[0]
    if arch not in encoders:
        raise ValueError(f"folder: {enc_dir.name}/ is a {arch}; expected one of {encoders}")
    if not any(enc_dir.glob("*.safetensors")):
        raise FileNotFoundError(
            f"folder: no .safetensors weights in {enc_dir} (pickled weights are not loaded)"
        )
    tokenizer = transformers.AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    # loaded in dtype, not cast after: a model's float32 islands (T5's feed-forward output) stay float32
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    encoder, info = getattr(transformers, arch).from_pretrained(
        enc_dir, local_files_only=True, use_safetensors=True, output_loading_info=True,
        variant=weights_variant(enc_dir, "model"), **{key: dtype},
    )  # fmt: skip
    missing = [k for k in info.get("missing_keys") or [] if not k.endswith("position_ids")]
    bad = missing + list(info.get("mismatched_keys") or [])
    if bad:
        raise ValueError(f"folder: the weights in {enc_dir} do not fit its config.json ({bad[:3]})")
    return tokenizer, encoder.to(device).eval()


def _tokens(tokenizer, text: str, max_length: int, encoder):
    """Token ids ``[1, max_length]`` of ``text`` (padded, truncated with a warning) on the encoder's device."""
    ids = tokenizer(text, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    whole = tokenizer(text, padding="longest", return_tensors="pt").input_ids
    if whole.shape[-1] > max_length:
        logger.warning("prompt: truncated to the text encoder's %d tokens: %r", max_length, text)
    dev = next(encoder.parameters()).device
    mask = ids.attention_mask.to(dev) if getattr(encoder.config, "use_attention_mask", False) else None
    return ids.input_ids.to(dev), mask


def _encode_sd(pair, prompt, negative_prompt, clip_skip):
    """SD 1.x / 2.x: (embeds, negative embeds, None, None)."""
    tokenizer, encoder = pair
    ids, mask = _tokens(tokenizer, prompt, tokenizer.model_max_length, encoder)
    if clip_skip is None:
        pos = encoder(ids, attention_mask=mask)[0]
    else:
        hidden = encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        # the final layer norm (transformers 5 keeps it on the model, earlier ones on its text_model)
        pos = getattr(encoder, "text_model", encoder).final_layer_norm(hidden[-(clip_skip + 1)])
    ids, mask = _tokens(tokenizer, negative_prompt or "", pos.shape[1], encoder)
    neg = encoder(ids, attention_mask=mask)[0]
    return pos, neg, None, None


def _encode_xl(pairs, prompt, negative_prompt, prompt_2, negative_prompt_2, clip_skip, force_zeros):
    """SDXL: (embeds, negative embeds, pooled, negative pooled)."""
    # one encoder (a refiner's): it takes the first text, as diffusers'
    texts = [prompt, prompt_2 or prompt][: len(pairs)]
    layer = -2 if clip_skip is None else -(clip_skip + 2)
    pos, pooled = _encode_xl_texts(pairs, texts, layer, None)
    if negative_prompt is None and force_zeros:
        return pos, torch.zeros_like(pos), pooled, torch.zeros_like(pooled)
    negative_prompt = negative_prompt or ""
    neg_texts = [negative_prompt, negative_prompt_2 or negative_prompt][: len(pairs)]
    neg, neg_pooled = _encode_xl_texts(pairs, neg_texts, -2, pos.shape[1])
    return pos, neg, pooled, neg_pooled


def _encode_xl_texts(pairs, texts, layer, max_length):
    """Both encoders' hidden states at ``layer`` side by side ``[1, L, D1 + D2]``, and the pooled output
    ``[1, P]`` of the first encoder that gives one (the projection model)."""
    states, pooled = [], None
    for (_, (tokenizer, encoder)), text in zip(pairs, texts, strict=True):
        ids, _ = _tokens(tokenizer, text, max_length or tokenizer.model_max_length, encoder)
        out = encoder(ids, output_hidden_states=True)
        if pooled is None and out[0].dim() == 2:
            pooled = out[0]
        states.append(out.hidden_states[layer])
    if pooled is None:
        raise ValueError("folder: SDXL needs a text encoder with a projection (CLIPTextModelWithProjection)")
    return torch.cat(states, -1), pooled


def _time_ids_kind(cfg, pooled: torch.Tensor) -> str | None:
    """ "size" or "aesthetic": how many time ids SDXL's added embedding takes (6 or 5) beside the pooled
    text embedding; None for a UNet without SDXL's added conditions."""
    if cfg is None or config_value(cfg, "addition_embed_type") != "text_time":
        return None
    inputs = int(config_value(cfg, "projection_class_embeddings_input_dim"))
    n, rem = divmod(inputs - pooled.shape[-1], int(config_value(cfg, "addition_time_embed_dim")))
    if rem or n not in (5, 6):
        raise ValueError(
            f"unet_config: its added embedding takes {inputs} values, which is not a pooled text embedding "
            f"of {pooled.shape[-1]} plus 5 or 6 time ids"
        )
    return "size" if n == 6 else "aesthetic"


def _check_width(cfg, embeds: torch.Tensor) -> None:
    dim = None if cfg is None else embedding_width(cfg)
    if dim is not None and embeds.shape[-1] != dim:
        raise ValueError(
            f"folder: the text encoders give embeddings of width {embeds.shape[-1]}, the UNet takes {dim}"
        )
