"""Fine-tuning on a CUDA device (a tiny pixel-space pipeline folder built in code): bf16 autocast with
gradient checkpointing, fp16 with the gradient scaler, the fused AdamW, LoRA, resume and export."""

import pytest
import torch

from tests.models.tiny import scheduler, tiny_unet
from warped_fast.pipelines import WarpedDiffusionPipeline
from warped_fast.train import TrainConfig, Trainer

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixel_pipeline")
    tiny_unet(7, 3, seed=1).save_pretrained(root / "unet")
    scheduler().save_pretrained(root / "scheduler")
    return root


def _cfg(folder, out, **kw):
    base = dict(task="inpaint", pretrained=str(folder), output_dir=str(out), resolution=32, batch_size=4,
                steps=3, lr=1e-3, warmup_steps=0, checkpoint_every=1, progress=False)  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {"mixed_precision": "bf16", "gradient_checkpointing": True},
        {"mixed_precision": "fp16"},
        {"mixed_precision": "bf16", "lora_rank": 4, "lr": 1e-2},
    ],
)
def test_fine_tuning_on_cuda(folder, tmp_path, kw):
    # the loss of a fixed batch falls (a constant learning rate over these steps)
    tr = Trainer(_cfg(folder, tmp_path / "a", **{"steps": 1000, **kw}), "cuda")
    assert tr.opt.defaults.get("fused") is True
    raw = tr.data[0]
    with torch.no_grad():
        before = float(tr.loss(*tr._on_device(raw)))
    for _ in range(20):
        tr.train_step(raw)
    with torch.no_grad():
        after = float(tr.loss(*tr._on_device(raw)))
    assert after < before, (before, after)
    # a resumed run restores exactly what its checkpoint saved (CUDA kernels make two runs differ by
    # rounding, so the check is of the restore, not of two trajectories)
    part = Trainer(_cfg(folder, tmp_path / "b", **kw), "cuda")
    part.train(steps=2)
    resumed = Trainer(_cfg(folder, tmp_path / "b", **kw), "cuda")
    assert resumed.step == 2
    for k, v in part.unet.state_dict().items():
        assert torch.equal(resumed.unet.state_dict()[k], v), k
    assert all(torch.equal(resumed.ema[k], v) for k, v in part.ema.items())
    state, saved = resumed.opt.state_dict()["state"], part.opt.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg_sq"], saved[i]["exp_avg_sq"]) for i in saved)
    assert resumed.scaler.get_scale() == part.scaler.get_scale()
    model = resumed.train()
    pipe = WarpedDiffusionPipeline.from_pretrained(model, device="cuda")
    v = torch.rand(2, 3, 16, 24)
    assert torch.isfinite(pipe(v, "box", num_inference_steps=2, progress=False).frames).all()
