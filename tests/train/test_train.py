"""Training with GP noise: loss goes down, exact resume, noise switch, configs, shipped weights."""

import json
import shutil
from dataclasses import replace

import pytest
import torch

from warped_fast.train import TrainConfig, Trainer, training_noise
from warped_fast.train.tasks import downsample, random_masks, task_condition, upsample

TINY = {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8}


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "run"), resolution=16, batch_size=4, steps=3, model=TINY, num_features=300,
                checkpoint_every=2, warmup_steps=1, progress=False)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("task", ["inpaint", "sr"])
def test_training_steps_lower_the_loss_on_a_fixed_batch(task, tmp_path):
    tr = Trainer(_cfg(tmp_path, task=task, lr=2e-3, warmup_steps=1))
    batch = list(tr.batch())
    before = float(tr.loss(*batch))
    for _ in range(8):
        for g in tr.opt.param_groups:
            g["lr"] = 2e-3
        loss = tr.loss(*batch)
        tr.opt.zero_grad()
        loss.backward()
        tr.opt.step()
    after = float(tr.loss(*batch))
    assert after < 0.9 * before, f"loss {before:.4f} -> {after:.4f}"


def test_resume_from_checkpoint_gives_the_same_state(tmp_path):
    straight = Trainer(_cfg(tmp_path / "a", steps=3))
    straight.train()
    part = Trainer(_cfg(tmp_path / "b", steps=3))
    part.train(steps=2)  # checkpoint at step 2
    resumed = Trainer(_cfg(tmp_path / "b", steps=3))
    assert resumed.step == 2
    resumed.train()
    for (k, v), (_, w) in zip(
        straight.unet.state_dict().items(), resumed.unet.state_dict().items(), strict=True
    ):
        assert torch.equal(v, w), f"{k} differs after resume"
    for k in straight.ema:
        assert torch.equal(straight.ema[k], resumed.ema[k]), f"EMA {k} differs after resume"
    model_dir = tmp_path / "b" / "run" / "model"
    assert (model_dir / "diffusion_pytorch_model.safetensors").exists() and (
        tmp_path / "b" / "run" / "loss.png"
    ).exists()
    rows = (tmp_path / "b" / "run" / "loss.csv").read_text().strip().splitlines()
    assert len(rows) == 4  # header + 3 steps, none redone


def test_resume_refuses_other_settings_and_steps_are_checked(tmp_path):
    Trainer(_cfg(tmp_path, steps=2)).train()
    with pytest.raises(ValueError, match=r"config: .* other settings \(lr: 0.001 -> 0.5, seed: 0 -> 9\)"):
        Trainer(_cfg(tmp_path, steps=2, seed=9, lr=0.5))
    more = Trainer(_cfg(tmp_path, steps=3, progress=True))  # running longer is a resume
    assert more.step == 2
    run = tmp_path / "run"
    (run / "config.json").write_text("{")  # damaged: named
    with pytest.raises(ValueError, match="config.json: damaged"):
        Trainer(_cfg(tmp_path, steps=2))
    (run / "config.json").unlink()  # gone: the checkpoint's run cannot be told
    with pytest.raises(ValueError, match="holds a checkpoint but no config.json"):
        Trainer(_cfg(tmp_path, steps=2, seed=9))
    with pytest.raises(ValueError, match="steps: expected an int >= 1, got 0"):
        more.train(steps=0)


def test_fine_tuned_run_loads_from_anywhere(tmp_path, monkeypatch):
    """A run fine-tuned from a relative pretrained path resumes (and releases) from another working
    directory: the checkpoint has the weights, the run folder the architecture."""
    from warped_fast.train.release import load_trained

    monkeypatch.chdir(tmp_path)
    Trainer(_cfg(tmp_path, output_dir="first", steps=2)).train()
    Trainer(_cfg(tmp_path, output_dir="second", steps=2, pretrained="first/model")).train()
    with pytest.raises(
        ValueError, match="pretrained: 'first/model' takes 7 input channels; a sr model takes 6"
    ):
        Trainer(_cfg(tmp_path, output_dir="third", task="sr", pretrained="first/model"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_trained(tmp_path / "second").step == 2


def test_a_pretrained_unet_folder_trains_on_its_own_schedule(tmp_path):
    """A bare UNet folder's scheduler_config.json sets the training schedule (its betas, here a cosine
    one), the export keeps it, and a resumed run keeps it without the folder's file; EDM and
    flow-matching schedules, which have no betas, are refused by name."""
    from diffusers import EulerDiscreteScheduler

    Trainer(_cfg(tmp_path, output_dir=str(tmp_path / "first"), steps=1)).train()
    model = tmp_path / "first" / "model"
    cosine = EulerDiscreteScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    cosine.save_pretrained(model)
    # an earlier from-scratch run in the same folder, its checkpoint removed: its files do not carry over
    Trainer(_cfg(tmp_path, output_dir=str(tmp_path / "second"), steps=1)).train()
    shutil.rmtree(tmp_path / "second" / "checkpoint")
    cfg = _cfg(
        tmp_path, output_dir=str(tmp_path / "second"), steps=2, checkpoint_every=1, pretrained=str(model)
    )
    tr = Trainer(cfg)
    assert torch.allclose(tr.alphas, cosine.alphas_cumprod.float())
    assert tr.cfg.prediction_type == "v_prediction" and tr.timestep_table is None
    exported = tr.train()
    assert (
        json.loads((exported / "scheduler_config.json").read_text())["beta_schedule"] == "squaredcos_cap_v2"
    )
    (model / "scheduler_config.json").unlink()  # the run has its own record of the schedule
    again = Trainer(replace(cfg, steps=3))
    assert again.step == 2 and torch.equal(again.alphas, tr.alphas)
    for name in ("EDMEulerScheduler", "FlowMatchEulerDiscreteScheduler"):
        (model / "scheduler_config.json").write_text(json.dumps({"_class_name": name}))
        with pytest.raises(ValueError, match=f"pretrained: {name} schedule .* has no DDPM betas"):
            Trainer(_cfg(tmp_path, output_dir=str(tmp_path / name), pretrained=str(model)))


def test_a_resolution_the_unet_cannot_halve_is_named(tmp_path):
    deep = {**TINY, "block_out_channels": [16, 16, 16, 16, 16]}  # halves 4 times: 24 is not a multiple of 16
    with pytest.raises(
        ValueError,
        match="resolution: the UNet halves its input 4 times, .* multiple of 16; got resolution 24",
    ):
        Trainer(_cfg(tmp_path, resolution=24, model=deep))


def test_data_workers_make_the_same_batches(tmp_path):
    """A batch depends only on the seed and its step: worker processes change nothing."""
    a = Trainer(_cfg(tmp_path / "a", steps=3))
    b = Trainer(_cfg(tmp_path / "b", steps=3, data_workers=2))
    for u, v in zip(a.batch(2), b.batch(2), strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a.batch(1)[0], a.batch(2)[0])
    a.train()
    b.train()
    for (k, v), (_, w) in zip(a.unet.state_dict().items(), b.unet.state_dict().items(), strict=True):
        assert torch.equal(v, w), f"{k} differs with data workers"
    with pytest.raises(ValueError, match="data_workers"):
        _cfg(tmp_path, data_workers=-1)


def test_high_noise_fraction_draws_the_top_of_the_schedule(tmp_path):
    """The first round(f * B) timesteps of a batch come from the top fifth of the schedule; with f = 0
    the batch is the plain uniform draw; the rest of the batch is unchanged by f."""
    plain = Trainer(_cfg(tmp_path / "a", batch_size=64))
    high = Trainer(_cfg(tmp_path / "b", batch_size=64, high_noise_fraction=0.25))
    t0, t1 = plain.data[1][3], high.data[1][3]
    assert bool((t1[:16] >= 800).all()) and t1.max() < 1000 and t0[:16].float().mean() < 700
    assert torch.equal(t0[16:], t1[16:]) and torch.equal(plain.data[1][0], high.data[1][0])
    with pytest.raises(ValueError, match="high_noise_fraction"):
        _cfg(tmp_path, high_noise_fraction=1.5)


def test_time_budget_stops_checkpoints_and_exports(tmp_path):
    tr = Trainer(_cfg(tmp_path, steps=50))
    folder = tr.train(max_minutes=1e-9)  # out of time after the first step
    assert tr.step == 1 and (folder / "diffusion_pytorch_model.safetensors").exists()
    assert Trainer(_cfg(tmp_path, steps=50)).step == 1  # resumable from there
    hw = json.loads((tmp_path / "run" / "hardware.json").read_text())
    assert len(hw) == 1 and "CPU" in hw[0]
    with pytest.raises(ValueError, match="max_minutes"):
        tr.train(max_minutes=0)


def test_gp_and_white_noise_switch(tmp_path):
    g = torch.Generator().manual_seed(0)
    for kind, lag1 in (("white", 0.0), ("gp", 0.39)):
        cfg = _cfg(tmp_path, noise=kind, resolution=32, num_features=3000)
        n = training_noise(cfg, 8, g, "cpu")
        assert n.shape == (8, 3, 32, 32)
        assert abs(n.var().item() - 1) < 0.1
        c = torch.corrcoef(torch.stack([n[..., :-1].flatten(), n[..., 1:].flatten()]))[0, 1].item()
        assert abs(c - lag1) < 0.06, f"{kind}: lag-1 correlation {c:.3f}"


def test_masks_and_degradations():
    g = torch.Generator().manual_seed(3)
    m = random_masks(64, 32, 32, g)
    assert m.shape == (64, 1, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    cover = m.mean((1, 2, 3))
    assert (cover > 0).all() and (cover < 1).sum() > 40 and (cover == 1).sum() >= 1
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert downsample(x).shape == (2, 3, 4, 4) and upsample(downsample(x), (32, 32)).shape == x.shape
    assert task_condition("inpaint", x, g).shape == (2, 4, 32, 32)
    assert task_condition("sr", x, g).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="divisible by 8"):
        downsample(torch.zeros(1, 3, 20, 20))


def test_config_files(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('task = "sr"\nsteps = 7\nmodel = { block_out_channels = [16, 32] }\n')
    cfg = TrainConfig.from_file(p, steps=9)
    assert cfg.task == "sr" and cfg.steps == 9 and cfg.model["block_out_channels"] == [16, 32]
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"task": "inpaint", "resolution": 24}))
    assert TrainConfig.from_file(j).resolution == 24
    (tmp_path / "bad.toml").write_text("stepz = 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_file(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="resolution"):
        TrainConfig(resolution=20)
    with pytest.raises(ValueError, match="noise"):
        TrainConfig(noise="pink")
    # Types from the annotations (config files give strings and ints), ranges that would train nothing.
    j.write_text(json.dumps({"residual": "false"}))
    with pytest.raises(TypeError, match="residual: expected bool, got str 'false'"):
        TrainConfig.from_file(j)
    for kw, err, msg in (
        ({"steps": "100"}, TypeError, "steps: expected int"),
        ({"batch_size": 2.5}, TypeError, "batch_size: expected int"),
        ({"model": "abc"}, TypeError, "model: expected dict"),
        ({"grad_clip": 0.0}, ValueError, "grad_clip: expected a finite value > 0"),
        ({"lengthscale": -1.0}, ValueError, "lengthscale: expected a finite value > 0"),
        ({"warmup_steps": -5}, ValueError, "warmup_steps: expected a finite value >= 0"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay: expected a finite value >= 0"),
        ({"weight_decay": float("inf")}, ValueError, "weight_decay: expected a finite value >= 0, got inf"),
        ({"seed": 2**31}, ValueError, "seed: expected 0 <= seed < 2\\^31"),
    ):
        with pytest.raises(err, match=msg):
            TrainConfig(**kw)
    cfg = TrainConfig(lr=1, crop_scales=[0.5, 1])  # an int for a float, a list for the pair
    assert isinstance(cfg.lr, float) and cfg.crop_scales == (0.5, 1.0)


def test_lora_rank_needs_a_pretrained_model_and_old_configs_with_zero_load(tmp_path):
    with pytest.raises(ValueError, match="lora_rank: adapts a pretrained UNet"):
        _cfg(tmp_path, lora_rank=4)
    with pytest.raises(ValueError, match="lora_rank: expected >= 0"):
        _cfg(tmp_path, lora_rank=-1)
    j = tmp_path / "old.json"
    j.write_text(json.dumps({"task": "sr", "lora_rank": 0}))
    assert TrainConfig.from_file(j).lora_rank == 0


def test_missing_pretrained_folder_is_named(tmp_path):
    from warped_fast.train.trainer import build_unet

    with pytest.raises(FileNotFoundError, match="pretrained: .*nope.* working directory"):
        build_unet(_cfg(tmp_path, pretrained=str(tmp_path / "nope")))


def test_crops_rescale_both_ways_and_keep_the_held_out_photos_out():
    from warped_fast.train.data import HELD_OUT, load_photos, random_crops

    names = [n for n, _ in load_photos("train")]
    assert not set(HELD_OUT) & set(names) and {"motorcycle_left", "grace_hopper.jpg"} <= set(names)
    assert [n for n, _ in load_photos("heldout")] == ["chelsea", "flower.jpg"]
    # A smooth horizontal ramp: upscaling (bicubic) keeps it a ramp with a smaller step per pixel.
    ramp = torch.linspace(0, 1, 64).view(1, 1, 64).expand(3, 64, 64)
    g = torch.Generator().manual_seed(0)
    up = random_crops((("ramp", ramp),), 4, 16, g, (2.0, 2.0))
    step = (up[..., 1:] - up[..., :-1]).abs()
    assert up.shape == (4, 3, 16, 16) and float(step.max()) < 0.6 * 2 / 63 and float(step.min()) > 0
    down = random_crops((("ramp", ramp),), 4, 16, g, (0.25, 0.25))
    assert torch.allclose((down[..., 1:] - down[..., :-1]).abs(), torch.tensor(2 * 4 / 63), atol=1e-4)
    with pytest.raises(ValueError, match="crop_scales"):
        TrainConfig(crop_scales=(1.0, 0.5))
