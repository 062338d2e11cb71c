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


def _reference(kind, parts, negative, clip_skip=None):
    pipe = _diffusers_pipe(kind, parts)
    if kind == "sd":
        pos, neg = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=negative, clip_skip=clip_skip)
        return pos, neg, None, None
    return pipe.encode_prompt(PROMPT, device="cpu", negative_prompt=negative, clip_skip=clip_skip)


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
    folder, parts = folders[kind]
    pipe = _diffusers_pipe(kind, parts)
    proj = parts["text_encoder_2"].config.projection_dim
    emb = encode_prompt(
        folder, PROMPT, crops_coords_top_left=(4, 8), aesthetic_score=7.0, negative_aesthetic_score=2.0
    )
    assert emb.time_ids == ("size" if kind == "xl" else "aesthetic")
    pos, neg = pipe._get_add_time_ids(
        (64, 96), (4, 8), (64, 96), 7.0, 2.0, (64, 96), (4, 8), (64, 96), torch.float32, proj
    )
    kw = emb.denoiser_kwargs(64, 96)
    assert torch.equal(kw["added_cond_kwargs"]["time_ids"], pos)
    assert torch.equal(kw["negative_added_cond_kwargs"]["time_ids"], neg)
    assert kw["added_cond_kwargs"]["text_embeds"] is emb.pooled_prompt_embeds
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
    with pytest.raises(FileNotFoundError, match="folder: no text encoder in"):
        encode_prompt(tmp_path, PROMPT)
    (tmp_path / "text_encoder").mkdir()
    with pytest.raises(FileNotFoundError, match="has text_encoder/ but no tokenizer/"):
        encode_prompt(tmp_path, PROMPT)
    # encoders that do not fit the UNet: the SD folder's width-16 encoder against the refiner's config
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
