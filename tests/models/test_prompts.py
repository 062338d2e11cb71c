"""Text prompts: encode_prompt against diffusers' own pipelines' encode_prompt (SD, SDXL, an SDXL refiner)
on tiny CLIP encoders built in code, SDXL's time ids, and bad input."""

import json

import pytest
import torch

from tests.models.tiny_text import tiny_text_pipeline_folder
from warped_fast.models import PromptEmbeddings, encode_prompt

PROMPT = "the cat, a dog"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    return {
        kind: (
            root / kind,
            tiny_text_pipeline_folder(root / kind, xl=kind != "sd", refiner=kind == "refiner"),
        )
        for kind in ("sd", "xl", "refiner")
    }


def _diffusers_pipe(kind, parts):
    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLInpaintPipeline,
    )

    if kind == "sd":
        # diffusers reads the final layer norm off text_model, which transformers 5 folded into the model
        enc = parts["text_encoder"]
        if not hasattr(enc, "text_model"):
            object.__setattr__(enc, "text_model", enc)  # not registered as a submodule (no cycle)
        return StableDiffusionInpaintPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    if kind == "xl":
        return StableDiffusionXLInpaintPipeline(**parts)
    return StableDiffusionXLImg2ImgPipeline(
        text_encoder=None, tokenizer=None, **parts, requires_aesthetics_score=True
    )


def _reference(kind, parts, negative, clip_skip=None, prompt=PROMPT):
    pipe = _diffusers_pipe(kind, parts)
    if kind == "sd":
        pos, neg = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt=negative, clip_skip=clip_skip)
        return pos, neg, None, None
    return pipe.encode_prompt(prompt, device="cpu", negative_prompt=negative, clip_skip=clip_skip)


@pytest.mark.parametrize("kind", ["sd", "xl", "refiner"])
@pytest.mark.parametrize("negative", [None, "blurry"])
@pytest.mark.parametrize("clip_skip", [None, 1])
def test_embeddings_are_diffusers(folders, kind, negative, clip_skip):
    folder, parts = folders[kind]
    got = encode_prompt(folder, PROMPT, negative, clip_skip=clip_skip)
    ref = _reference(kind, parts, negative, clip_skip)
    fields = (
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    )
    for name, r in zip(fields, ref, strict=True):
        g = getattr(got, name)
        if r is None:
            assert g is None, name
        else:
            assert g.shape == r.shape and torch.allclose(g, r, atol=1e-6, rtol=0), name
    if kind == "xl" and negative is None:  # force_zeros_for_empty_prompt
        assert not got.negative_prompt_embeds.any() and not got.negative_pooled_prompt_embeds.any()
    if kind != "sd" and clip_skip is None:
        assert not torch.equal(got.prompt_embeds, encode_prompt(folder, "a dog").prompt_embeds)


def test_the_second_encoder_takes_prompt_2(folders):
    folder, parts = folders["xl"]
    got = encode_prompt(folder, PROMPT, "blurry", prompt_2="a dog", negative_prompt_2="dark")
    ref = _diffusers_pipe("xl", parts).encode_prompt(
        PROMPT, "a dog", device="cpu", negative_prompt="blurry", negative_prompt_2="dark"
    )
    for g, r in zip(
        (got.prompt_embeds, got.negative_prompt_embeds, got.pooled_prompt_embeds), ref[:3], strict=True
    ):
        assert torch.allclose(g, r, atol=1e-6, rtol=0)
    assert not torch.allclose(got.prompt_embeds, encode_prompt(folder, PROMPT, "blurry").prompt_embeds)


@pytest.mark.parametrize("kind", ["xl", "refiner"])
def test_time_ids_are_diffusers(folders, kind):
    """As diffusers' SDXL inpaint / img2img pipelines' _get_add_time_ids, with their call defaults: the
    negative sizes the positive ones, the negative crop corner (0, 0)."""
    folder, parts = folders[kind]
    pipe = _diffusers_pipe(kind, parts)
    proj = parts["text_encoder_2"].config.projection_dim
    opts = dict(crops_coords_top_left=(4, 8), aesthetic_score=7.0, negative_aesthetic_score=2.0)
    emb = encode_prompt(folder, PROMPT, **opts)
    assert emb.time_ids == ("size" if kind == "xl" else "aesthetic")

    def reference(neg_orig=(64, 96), neg_crop=(0, 0), neg_target=(64, 96)):
        return pipe._get_add_time_ids(
            (64, 96), (4, 8), (64, 96), 7.0, 2.0, neg_orig, neg_crop, neg_target, torch.float32, proj
        )

    def ours(e):
        kw = e.denoiser_kwargs(64, 96)
        assert kw["added_cond_kwargs"]["text_embeds"] is e.pooled_prompt_embeds
        return kw["added_cond_kwargs"]["time_ids"], kw["negative_added_cond_kwargs"]["time_ids"]

    for got, ref in zip(ours(emb), reference(), strict=True):
        assert torch.equal(got, ref)
    neg = dict(
        negative_original_size=(32, 48), negative_crops_coords_top_left=(2, 2), negative_target_size=(16, 24)
    )
    for got, ref in zip(
        ours(encode_prompt(folder, PROMPT, **opts, **neg)), reference(*neg.values()), strict=True
    ):
        assert torch.equal(got, ref)
    fixed = encode_prompt(folder, PROMPT, original_size=(1024, 1024), target_size=(512, 768))
    ids = fixed.denoiser_kwargs(64, 96)["added_cond_kwargs"]["time_ids"][0].tolist()
    assert ids[:4] == [1024, 1024, 0, 0] and (kind == "refiner" or ids[4:] == [512, 768])


def test_sd_has_no_added_conditions(folders):
    kw = encode_prompt(folders["sd"][0], PROMPT).denoiser_kwargs()
    assert set(kw) == {"prompt_embeds", "negative_prompt_embeds"}


def test_bad_input(folders, tmp_path):
    folder = folders["xl"][0]
    with pytest.raises(TypeError, match="prompt: expected a str, got list"):
        encode_prompt(folder, ["a", "b"])
    with pytest.raises(ValueError, match="prompt: required"):
        encode_prompt(folder, None)
    with pytest.raises(ValueError, match="clip_skip: expected an int >= 0"):
        encode_prompt(folder, PROMPT, clip_skip=-1)
    with pytest.raises(ValueError, match="clip_skip: the text encoders have 3 layers; expected at most 2"):
        encode_prompt(folder, PROMPT, clip_skip=3)
    encode_prompt(folder, PROMPT, clip_skip=2)
    with pytest.raises(FileNotFoundError, match="folder: no text encoder in"):
        encode_prompt(tmp_path, PROMPT)
    (tmp_path / "text_encoder").mkdir()
    with pytest.raises(FileNotFoundError, match="has text_encoder/ but no tokenizer/"):
        encode_prompt(tmp_path, PROMPT)
    # encoders that do not fit the UNet: the SD folder's width-16 encoder against a width-32 UNet
    sd_unet = json.loads((folders["sd"][0] / "unet" / "config.json").read_text())
    with pytest.raises(ValueError, match="embeddings of width 16, the UNet takes 32"):
        encode_prompt(folders["sd"][0], PROMPT, unet_config={**sd_unet, "cross_attention_dim": 32})
    with pytest.raises(ValueError, match="not a pooled text embedding of 16 plus 5 or 6 time ids"):
        encode_prompt(folder, PROMPT, unet_config={**sd_unet, "addition_embed_type": "text_time",
                                                   "projection_class_embeddings_input_dim": 30,
                                                   "addition_time_embed_dim": 8})  # fmt: skip
    with pytest.raises(ValueError, match="original_size: expected"):
        encode_prompt(folder, PROMPT, original_size=(64,))
    emb = encode_prompt(folder, PROMPT)
    with pytest.raises(ValueError, match="height / width"):
        emb.denoiser_kwargs()
    with pytest.raises(ValueError, match="time_ids: expected"):
        PromptEmbeddings(emb.prompt_embeds, emb.negative_prompt_embeds, time_ids="sizes")


def test_long_prompts_attention_masks_and_encoded_empty_negatives(folders, tmp_path):
    """A prompt past the tokenizer's length (truncated as diffusers truncates it), an encoder configured with
    ``use_attention_mask``, and an SDXL folder whose model_index says force_zeros_for_empty_prompt false
    (its absent negative prompt is the encoded "")."""
    import shutil

    long = "the quick brown fox jumps over the lazy dog"
    for kind in ("sd", "xl"):
        folder, parts = folders[kind]
        got = encode_prompt(folder, long)
        pos = _reference(kind, parts, None, prompt=long)[0]
        assert torch.allclose(got.prompt_embeds, pos, atol=1e-6, rtol=0)
        assert not torch.allclose(got.prompt_embeds, encode_prompt(folder, "the quick").prompt_embeds)

    masked = tmp_path / "sd_masked"
    shutil.copytree(folders["sd"][0], masked)
    cfg_path = masked / "text_encoder" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "use_attention_mask": True}))
    parts = dict(folders["sd"][1])
    enc = parts["text_encoder"] = type(parts["text_encoder"]).from_pretrained(masked / "text_encoder")
    assert enc.config.use_attention_mask
    got = encode_prompt(masked, "the cat")
    pipe = _diffusers_pipe("sd", parts)
    ref = pipe.encode_prompt("the cat", "cpu", 1, True, negative_prompt=None)
    assert torch.allclose(got.prompt_embeds, ref[0], atol=1e-6, rtol=0)
    assert torch.allclose(got.negative_prompt_embeds, ref[1], atol=1e-6, rtol=0)
    # the mask changes the result: padding is not attended to
    assert not torch.allclose(got.prompt_embeds, encode_prompt(folders["sd"][0], "the cat").prompt_embeds)

    encoded = tmp_path / "xl_encoded"
    shutil.copytree(folders["xl"][0], encoded)
    (encoded / "model_index.json").write_text(json.dumps({"force_zeros_for_empty_prompt": False}))
    got = encode_prompt(encoded, PROMPT)
    from diffusers import StableDiffusionXLInpaintPipeline

    ref = StableDiffusionXLInpaintPipeline(
        **folders["xl"][1], force_zeros_for_empty_prompt=False
    ).encode_prompt(PROMPT, device="cpu")
    assert got.negative_prompt_embeds.any()
    for g, r in zip((got.negative_prompt_embeds, got.negative_pooled_prompt_embeds), ref[1::2], strict=True):
        assert torch.allclose(g, r, atol=1e-6, rtol=0)
