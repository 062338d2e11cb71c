"""Fine-tuning a diffusers pipeline folder with GP noise (a tiny SDXL inpainting folder and an SR one,
built in code): the loss in the model's latent space with the pipeline's own conditioning and text,
resume, the exported pipeline folder, a folder of the user's images, and bad input."""

import shutil

import pytest
import torch
from PIL import Image

from tests.models.tiny_text import tiny_text_pipeline_folder
from tests.pipelines.test_pipeline import _video
from warped_fast.models import encode_prompt
from warped_fast.pipelines import WarpedDiffusionPipeline
from warped_fast.train import TrainConfig, Trainer
from warped_fast.train.data import ImageFolder
from warped_fast.train.tasks import downsample


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    tiny_text_pipeline_folder(root / "inpaint", xl=True, in_channels=9)
    tiny_text_pipeline_folder(root / "sr", xl=True, in_channels=8)
    return root


def _cfg(folders, out, task="inpaint", **kw):
    base = dict(task=task, pretrained=str(folders / task), output_dir=str(out), resolution=32, batch_size=4,
                steps=3, lr=1e-3, warmup_steps=0, checkpoint_every=2, progress=False, prompt="a photo")  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("task", ["inpaint", "sr"])
def test_the_loss_is_the_pipelines_in_its_latent_space(folders, tmp_path, task):
    tr = Trainer(_cfg(folders, tmp_path / "run", task), "cpu")
    assert tr.cfg.prediction_type == "epsilon"  # the folder's scheduler's, not the from-scratch default
    x, cond, noise, t = tr.batch(0)
    assert noise.shape == (4, 4, 4, 4)  # latent channels, resolution / 8
    # the conditioning the pipeline builds from the same degraded frames
    pipe = WarpedDiffusionPipeline.from_pretrained(folders / task, prompt="a photo")
    latent, c = tr.parts.inputs(task, x, cond)
    if task == "inpaint":
        _, ref = pipe._condition((x + 1) / 2, cond[:, :1])
    else:
        _, ref = pipe._condition((downsample(x) + 1) / 2, None)
    assert torch.allclose(c, ref, atol=1e-5, rtol=0)
    assert torch.allclose(latent, pipe.autoencoder.encode((x + 1) / 2), atol=1e-6, rtol=0)
    # one prompt for every item, SDXL's time ids for the training size
    kw = tr.parts.unet_kwargs(4)
    emb = encode_prompt(folders / task, "a photo")
    assert torch.equal(kw["encoder_hidden_states"][3], emb.prompt_embeds[0])
    assert kw["added_cond_kwargs"]["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 4
    # training steps on a fixed batch lower its loss
    raw = tr.data[0]
    with torch.no_grad():
        before = float(tr.loss(*tr._on_device(raw)))
    for _ in range(8):
        tr.train_step(raw)
    with torch.no_grad():
        assert float(tr.loss(*tr._on_device(raw))) < before


def test_resume_and_the_exported_pipeline_folder(folders, tmp_path):
    straight = Trainer(_cfg(folders, tmp_path / "a"), "cpu")
    straight.train()
    Trainer(_cfg(folders, tmp_path / "b"), "cpu").train(steps=2)  # checkpoint at step 2
    resumed = Trainer(_cfg(folders, tmp_path / "b"), "cpu")
    assert resumed.step == 2
    model = resumed.train()
    for (k, v), (_, w) in zip(
        straight.unet.state_dict().items(), resumed.unet.state_dict().items(), strict=True
    ):
        assert torch.equal(v, w), f"{k} differs after resume"
    assert sorted(p.name for p in model.iterdir()) == [
        "model_index.json", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "vae",
    ]  # fmt: skip
    pipe = WarpedDiffusionPipeline.from_pretrained(model, prompt="a photo")
    sd = pipe.denoiser.unet.state_dict()
    assert all(torch.equal(sd[k], straight.ema[k]) for k in straight.ema)  # the EMA weights
    assert pipe(_video(2, 32, 48), "box", num_inference_steps=2, progress=False).frames.shape == (
        2,
        3,
        32,
        48,
    )
    # the shared parts are the pretrained folder's files
    assert (model / "vae" / "config.json").read_text() == (
        folders / "inpaint" / "vae" / "config.json"
    ).read_text()

    # a pipeline-folder run is not a default model: its release is refused before anything is written
    from warped_fast.train.release import release_default_model

    with pytest.raises(ValueError, match="fine-tunes the pipeline folder .* default models are pixel-space"):
        release_default_model("inpaint", tmp_path / "b", dest=tmp_path / "release")
    assert not (tmp_path / "release").exists()

    # resuming without the pretrained folder: named
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "b", moved)
    cfg = _cfg(folders, moved, steps=4, pretrained=str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="is not a pipeline folder; this run fine-tunes"):
        Trainer(cfg, "cpu")


def test_a_folder_of_images(folders, tmp_path):
    data = tmp_path / "images" / "nested"
    data.mkdir(parents=True)
    for i, color in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (48, 40), color).save(data / f"{i}.png")
    (data / "notes.txt").write_text("not an image")
    images = ImageFolder(tmp_path / "images")
    assert len(images) == 2 and images[1][1].shape == (3, 40, 48)
    tr = Trainer(_cfg(folders, tmp_path / "run", data_dir=str(tmp_path / "images")), "cpu")
    x = tr.data[0][0]
    # every crop is one of the two flat colors (in [-1, 1]): red or blue, nothing else
    red, blue = x[:, 0].flatten(1).mean(1), x[:, 2].flatten(1).mean(1)
    assert torch.allclose(red.abs(), torch.ones(4), atol=1e-5) and torch.allclose(red, -blue, atol=1e-5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="data_dir: no images"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="data_dir: .* is not a folder"):
        ImageFolder(tmp_path / "missing")
    # the images are opened at the first batch: a run whose images moved still loads (to export it)
    tr.train(steps=1)
    shutil.move(tmp_path / "images", tmp_path / "moved")
    again = Trainer(_cfg(folders, tmp_path / "run", data_dir=str(tmp_path / "images")), "cpu")
    assert again.step == 1 and again.export(tmp_path / "export").is_dir()
    with pytest.raises(FileNotFoundError, match="data_dir: .* is not a folder"):
        again.train(steps=2)


def test_bad_settings_are_named(folders, tmp_path):
    with pytest.raises(ValueError, match="prediction_type: the pretrained model predicts 'epsilon'"):
        Trainer(_cfg(folders, tmp_path / "a", prediction_type="v_prediction"), "cpu")
    with pytest.raises(ValueError, match="residual: for the pixel-space models"):
        Trainer(_cfg(folders, tmp_path / "b", residual=True), "cpu")
    with pytest.raises(ValueError, match=r"takes 9 input channels; a sr model on 4-channel latents takes 8"):
        Trainer(_cfg(folders, tmp_path / "c", task="sr", pretrained=str(folders / "inpaint")), "cpu")
    from tests.models.tiny_text import tiny_upscaler_folder

    tiny_upscaler_folder(tmp_path / "x4")
    with pytest.raises(ValueError, match="pretrained: .* is an image-conditioned upscaler"):
        Trainer(_cfg(folders, tmp_path / "d", task="sr", pretrained=str(tmp_path / "x4")), "cpu")
    from warped_fast.train.lora import add_lora

    with pytest.raises(ValueError, match="lora_rank: Sequential has no attention projections"):
        add_lora(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Linear(3, 3)), 2, 0)


def test_the_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))
    assert any(p.name == "sdxl_inpaint_gp.toml" for p in configs)
    for p in configs:
        TrainConfig.from_file(p)
    sdxl = TrainConfig.from_file(configs[[p.name for p in configs].index("sdxl_inpaint_gp.toml")])
    assert sdxl.gradient_checkpointing and sdxl.mixed_precision == "bf16" and sdxl.lr == 5e-6
    assert sdxl.prediction_type is None  # the model's own, read when the run starts


def test_awkward_image_files(tmp_path):
    """16-bit greyscale keeps its range, transparency goes onto white, EXIF orientation is applied, and
    a file that cannot be read is skipped for the next one (the same every time)."""
    import numpy as np

    from warped_fast.train.data import read_image

    ramp = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "a16.png")
    assert abs(float(read_image(tmp_path / "a16.png").mean()) - 0.5) < 0.01
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "b_clear.png")
    assert torch.equal(read_image(tmp_path / "b_clear.png"), torch.ones(3, 8, 8))
    im = Image.new("RGB", (6, 4), (255, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # rotated: stored 6 wide, shown 4 wide
    im.save(tmp_path / "c_rot.jpg", exif=exif)
    assert read_image(tmp_path / "c_rot.jpg").shape == (3, 6, 4)
    (tmp_path / "d_broken.png").write_bytes(b"not a png")
    good = (tmp_path / "a16.png").read_bytes()  # a PNG whose first data chunk is cut short: SyntaxError
    i = good.index(b"IDAT") - 4
    n = int.from_bytes(good[i : i + 4], "big")
    (tmp_path / "e_chunk.png").write_bytes(good[:i] + (n - 9).to_bytes(4, "big") + good[i + 4 :])
    folder = ImageFolder(tmp_path)
    name, first = folder[3]  # d_broken.png, e_chunk.png: the next one, wrapping around, a16.png
    assert name == "a16.png" and torch.equal(first, folder[0][1])
    assert folder[4][0] == "a16.png"
    # past PIL's decompression-bomb limit: skipped too
    import PIL.Image

    limit = PIL.Image.MAX_IMAGE_PIXELS
    PIL.Image.MAX_IMAGE_PIXELS = 100  # the 64x32 image is then a "bomb" (over twice the limit)
    try:
        assert ImageFolder(tmp_path)[0][0] == "b_clear.png"
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = limit


def test_continuous_time_schedules_train_on_the_samplers_timesteps(tmp_path):
    """A continuous-time v-prediction scheduler: the UNet sees 0.25 log sigma in training, as the sampler
    gives it."""
    import json

    from warped_fast.models import load_model

    tiny_text_pipeline_folder(tmp_path / "m", xl=True, in_channels=9)
    sch = tmp_path / "m" / "scheduler" / "scheduler_config.json"
    sch.write_text(json.dumps({**json.loads(sch.read_text()), "prediction_type": "v_prediction",
                               "timestep_type": "continuous"}))  # fmt: skip
    cfg = TrainConfig(task="inpaint", pretrained=str(tmp_path / "m"), output_dir=str(tmp_path / "run"),
                      resolution=32, batch_size=2, progress=False)  # fmt: skip
    tr = Trainer(cfg, "cpu")
    assert tr.cfg.prediction_type == "v_prediction"
    t = torch.tensor([100, 700])
    den = load_model(tmp_path / "m" / "unet", prompt_embeds=torch.zeros(1, 1, 16),
                     added_cond_kwargs={"text_embeds": torch.zeros(1, 16), "time_ids": torch.zeros(1, 6)})  # fmt: skip
    sigma = ((1 - tr.alphas[t]) / tr.alphas[t]).sqrt()
    assert torch.allclose(tr.timestep_table[t], den.timesteps(sigma).float(), atol=1e-5)
    seen = []
    tr.unet.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    x, cond, noise, _ = tr.batch(0)
    tr.loss(x, cond, noise, t)
    assert torch.allclose(seen[0], den.timesteps(sigma).float(), atol=1e-5)


def test_a_bare_unet_fine_tune_resumes_without_its_pretrained_folder(tmp_path):
    """prediction_type unset: the pretrained folder's (epsilon here); resuming after that folder is gone
    takes the run's own."""
    base = dict(task="inpaint", resolution=16, batch_size=2, steps=2, progress=False, checkpoint_every=1,
                model={"block_out_channels": [8, 16], "norm_num_groups": 4})  # fmt: skip
    first = Trainer(TrainConfig(**base, output_dir=str(tmp_path / "a"), prediction_type="epsilon"), "cpu")
    first.train(steps=1)
    pre = tmp_path / "a" / "model"
    tuned = TrainConfig(**base, output_dir=str(tmp_path / "b"), pretrained=str(pre))
    tr = Trainer(tuned, "cpu")
    assert tr.cfg.prediction_type == "epsilon"
    tr.train(steps=1)
    shutil.rmtree(tmp_path / "a")
    again = Trainer(tuned, "cpu")
    assert again.step == 1 and again.cfg.prediction_type == "epsilon"


def test_ema_decay_zero_keeps_no_average(folders, tmp_path):
    tr = Trainer(_cfg(folders, tmp_path / "run", ema_decay=0.0, steps=2), "cpu")
    assert tr.ema == {}
    model = tr.train()
    pipe = WarpedDiffusionPipeline.from_pretrained(model, prompt="a photo")
    trained = tr.unet.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in pipe.denoiser.unet.state_dict().items())
    assert Trainer(_cfg(folders, tmp_path / "run", ema_decay=0.0, steps=3), "cpu").step == 2  # resumes


def test_lora_trains_the_adapters_only_and_exports_merged_weights(folders, tmp_path):
    from warped_fast.train.lora import LoRALinear, merged_state_dict

    tr = Trainer(_cfg(folders, tmp_path / "run", lora_rank=2, gradient_checkpointing=True, steps=3), "cpu")
    wrapped = [m for m in tr.unet.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == len(tr.lora) > 0 and all(
        n.endswith(("to_q", "to_k", "to_v", "to_out.0")) for n in tr.lora
    )
    assert {id(p) for p in tr.params} == {id(p) for m in wrapped for p in (m.down, m.up)}
    assert set(tr.ema) == {f"{n}.{w}" for n in tr.lora for w in ("down", "up")}  # no copy of the base
    before = {k: v.clone() for k, v in tr.unet.state_dict().items()}
    # up starts at zero: the adapted UNet is the pretrained one
    pretrained = WarpedDiffusionPipeline.from_pretrained(folders / "inpaint", prompt="a photo").denoiser.unet
    assert all(
        torch.equal(merged_state_dict(before, tr.lora)[k], v) for k, v in pretrained.state_dict().items()
    )
    raw = tr.data[0]
    with torch.no_grad():
        loss0 = float(tr.loss(*tr._on_device(raw)))
    for _ in range(6):  # through gradient checkpointing, the adapters get gradients and learn
        tr.train_step(raw)
    with torch.no_grad():
        assert float(tr.loss(*tr._on_device(raw))) < loss0
    after = tr.unet.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.endswith((".down", ".up")) for k in changed)

    # resume gives the same adapters; the export is a plain UNet with the merged (EMA) weights
    def cfg(out):
        return _cfg(folders, tmp_path / out, lora_rank=2, gradient_checkpointing=True, steps=3)

    straight = Trainer(cfg("a"), "cpu")
    model = straight.train()
    Trainer(cfg("b"), "cpu").train(steps=2)
    # the checkpoint holds the adapters (and their optimizer state, EMA), not the frozen base
    from safetensors import safe_open

    with safe_open(str(tmp_path / "b" / "checkpoint" / "state.safetensors"), "pt") as f:
        saved = {k[6:] for k in f.keys() if k.startswith("model.")}
    assert saved == {f"{n}.{w}" for n in straight.lora for w in ("down", "up")}
    resumed = Trainer(cfg("b"), "cpu")
    assert resumed.step == 2
    resumed.train()
    assert all(torch.equal(resumed.unet.state_dict()[k], v) for k, v in straight.unet.state_dict().items())
    sd = WarpedDiffusionPipeline.from_pretrained(model, prompt="a photo").denoiser.unet.state_dict()
    want = merged_state_dict({**straight.unet.state_dict(), **straight.ema}, straight.lora)
    assert set(sd) == set(want) and all(torch.allclose(sd[k], want[k]) for k in sd)
    name = straight.lora[0]
    assert not torch.equal(sd[f"{name}.weight"], pretrained.state_dict()[f"{name}.weight"])


def test_a_lora_run_resumes_on_its_own_base_only(folders, tmp_path):
    """The base is not in a LoRA checkpoint: resuming on other pretrained weights is refused."""
    from diffusers import UNet2DConditionModel

    base = tmp_path / "base"
    shutil.copytree(folders / "inpaint", base)
    cfg = _cfg(folders, tmp_path / "run", pretrained=str(base), lora_rank=2, steps=3)
    Trainer(cfg, "cpu").train(steps=2)
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    with torch.no_grad():
        unet.conv_in.weight.add_(0.01)
    unet.save_pretrained(base / "unet")
    with pytest.raises(
        ValueError, match="pretrained: .* weights are not the ones this LoRA run started from"
    ):
        Trainer(cfg, "cpu")


def test_the_unet_subfolder_names_its_pipeline_and_the_export_records_its_steps(folders, tmp_path):
    import json

    tr = Trainer(
        _cfg(folders, tmp_path / "run", pretrained=str(folders / "inpaint" / "unet"), steps=2), "cpu"
    )
    assert tr.parts is not None and tr.parts.root == (folders / "inpaint").resolve()
    model = tr.train()
    assert json.loads((model / "unet" / "train_config.json").read_text())["steps"] == 2
    more = Trainer(
        _cfg(folders, tmp_path / "run", pretrained=str(folders / "inpaint" / "unet"), steps=5), "cpu"
    )
    model = more.train(steps=3)  # a budget of 3 of the 5
    assert json.loads((model / "unet" / "train_config.json").read_text())["steps"] == 3
