"""Held-out evaluation: per-crop scores, paired margins and the model card's verdict."""

import pytest
import torch

from warped_fast.train.evaluate import paired_margin, psnr_ssim
from warped_fast.train.release import _verdict


def _entry(psnr, ssim):
    return {
        "psnr": sum(psnr) / len(psnr),
        "ssim": sum(ssim) / len(ssim),
        "per_crop": {"psnr": psnr, "ssim": ssim},
    }


def test_psnr_ssim_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 24, 24, generator=g) * 2 - 1
    y = x + 0.1 * torch.randn(x.shape, generator=g) * torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1, 1)
    p, s = psnr_ssim(y, x)
    assert p.shape == s.shape == (3,)
    assert p[0] > p[1] > p[2] and s[0] > s[1] > s[2]  # more noise, lower scores
    mse = (((y.clamp(-1, 1) - x) / 2) ** 2).mean((1, 2, 3)).double()
    torch.testing.assert_close(p, 10 * torch.log10(1 / mse), rtol=1e-6, atol=1e-6)


def test_paired_margin_and_verdict():
    a = _entry([30.0, 31.0, 32.0, 33.0], [0.80, 0.81, 0.82, 0.83])
    b = _entry([29.0, 30.5, 31.0, 33.5], [0.70, 0.80, 0.80, 0.84])
    mean, se, wins = paired_margin(a, b, "psnr")
    d = torch.tensor([1.0, 0.5, 1.0, -0.5], dtype=torch.float64)
    assert mean == pytest.approx(0.5) and se == pytest.approx(float(d.std() / 2)) and wins == 3
    clear = _entry([31.0, 32.0, 33.0, 34.0], [0.90, 0.91, 0.92, 0.93])
    ev = {"model (x)": clear, "near": b, "better": _entry([40.0] * 4, [0.99] * 4), "_meta": {"crops": 4}}
    text = _verdict(ev)
    assert "Beats on PSNR and SSIM: near (+1.50" in text and "4/4 crops" in text
    assert "Does **not** beat: better" in text
    ev = {"model (x)": a, "near": b, "_meta": {"crops": 4}}
    assert "within noise" in _verdict(ev)  # +0.5 dB with a standard error of 0.35 dB


def test_training_stages_follow_the_pretrained_chain(tmp_path):
    from warped_fast.train import TrainConfig, Trainer
    from warped_fast.train.release import _commands, _stages_text, training_stages

    from .test_train import TINY

    kw = dict(task="sr", resolution=16, batch_size=2, num_features=300, warmup_steps=1, progress=False)
    first = TrainConfig(output_dir=str(tmp_path / "first"), steps=2, model=TINY, **kw)
    Trainer(first).train()
    second = TrainConfig(
        output_dir=str(tmp_path / "second"), steps=3, pretrained=str(tmp_path / "first" / "model"), **kw
    )
    Trainer(second).train()
    # the fine-tuned export records the architecture it has (the first stage's), not the default
    recorded = TrainConfig.from_file(tmp_path / "second" / "model" / "train_config.json")
    assert recorded.model["block_out_channels"] == TINY["block_out_channels"]
    stages = training_stages(tmp_path / "second")
    assert [st["run"] for st in stages] == [first.output_dir, second.output_dir]
    assert [st["steps"] for st in stages] == [2, 3] and stages[1]["pretrained"] == second.pretrained
    assert all(st["train_seconds"] >= 0 and st["config_file"] is None for st in stages)
    assert all(len(st["hardware"]) == 1 and "CPU" in st["hardware"][0] for st in stages)
    card = {"task": "sr", "stages": stages, "config": {}}
    assert "2 steps of batch" in _stages_text(card) and "fine-tuned from the stage before" in _stages_text(
        card
    )
    assert _commands(card).endswith(f"`warped-fast release-model --task sr --run {second.output_dir}`")
    assert len(training_stages(tmp_path / "first")) == 1


def test_release_model_to_a_folder_leaves_the_shipped_model(tmp_path, monkeypatch):
    from warped_fast.cli import main
    from warped_fast.train import Trainer, release
    from warped_fast.train.release import WEIGHTS_DIR

    from .test_train import _cfg

    monkeypatch.setattr(release, "EVAL", {**release.EVAL, "size": 32, "steps": 2, "per_image": 2, "draws": 1})
    shipped = {p: p.stat().st_mtime_ns for p in (WEIGHTS_DIR / "inpaint").iterdir()}
    tr = Trainer(_cfg(tmp_path, steps=2))
    tr.train()
    dest = tmp_path / "rel"
    assert main(["release-model", "--task", "inpaint", "--run", str(tr.out), "--dest", str(dest)]) == 0
    assert (dest / "diffusion_pytorch_model.safetensors").exists() and (dest / "card.json").exists()
    assert {p: p.stat().st_mtime_ns for p in (WEIGHTS_DIR / "inpaint").iterdir()} == shipped
