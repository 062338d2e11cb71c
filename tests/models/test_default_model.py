"""The shipped default models: they load (safetensors), are real denoisers (held-out scores as in the
model card), and run the main job."""

import json

import pytest
import torch

from warped_fast.models import default_model, default_model_dir
from warped_fast.train.evaluate import evaluate
from warped_fast.train.release import EVAL


@pytest.mark.parametrize("task", ["inpaint", "sr"])
def test_shipped_weights_load_and_reproduce_the_card(task):
    d = default_model_dir(task)
    assert (d / "diffusion_pytorch_model.safetensors").exists()
    assert not list(d.glob("*.bin")) and not list(d.glob("*.pt")), "weights must be safetensors only"
    card = json.loads((d / "card.json").read_text())
    model = default_model(task)
    assert model.layout.kind == task and model.prediction_type == card["config"]["prediction_type"]
    # The card's held-out evaluation rerun on 8 of its crops (4 of each photo): same crops, masks,
    # noise and steps, so each crop's scores must match the card's.
    per = EVAL["per_image"]
    subset = [0, 1, 2, 3, per, per + 1, per + 2, per + 3]
    res = evaluate(model, task, **EVAL, subset=subset)
    assert card["eval"]["_meta"]["crops"] == 2 * per
    for name, want in card["eval"].items():
        if name.startswith("_"):
            continue
        for metric, tol in (("psnr", 0.05), ("ssim", 0.002)):
            got, exp = res[name]["per_crop"][metric], [want["per_crop"][metric][i] for i in subset]
            assert max(abs(a - b) for a, b in zip(got, exp, strict=True)) < tol, (name, metric, got, exp)
    # A real denoiser: from pure noise, its one-step estimate is far better than the noise itself.
    assert res["model (one-step MMSE)"]["psnr"] > 15.0


def test_bad_task():
    with pytest.raises(ValueError, match="task"):
        default_model("deblur")


def test_default_model_is_offline_and_deterministic():
    a, b = default_model("sr"), default_model("sr")
    x = torch.randn(1, 3, 16, 16)
    cond = torch.zeros(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(a(x, torch.tensor([5.0]), cond), b(x, torch.tensor([5.0]), cond))


def test_load_model_reads_the_scheduler_beside_unet(tmp_path):
    """A diffusers model folder: ``unet/`` and ``scheduler/`` side by side; load_model(root / "unet")
    takes the scheduler from ``scheduler/`` (not EulerDiscreteScheduler's defaults)."""
    from tests.models.tiny import scheduler, tiny_unet
    from warped_fast.models import load_model

    tiny_unet(4, 4).save_pretrained(tmp_path / "unet")
    scheduler(
        "v_prediction", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    ).save_pretrained(tmp_path / "scheduler")
    cfg = load_model(tmp_path / "unet").scheduler.config
    assert cfg.prediction_type == "v_prediction" and cfg.beta_schedule == "scaled_linear"
    # the method's Karras grid between the config's own end points, unless the config names a grid
    assert cfg.use_karras_sigmas
    scheduler("epsilon", use_exponential_sigmas=True).save_pretrained(tmp_path / "scheduler")
    cfg = load_model(tmp_path / "unet").scheduler.config
    assert cfg.use_exponential_sigmas and not cfg.use_karras_sigmas
    from diffusers import EDMDPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    EDMDPMSolverMultistepScheduler(sigma_data=1.0, prediction_type="v_prediction").save_pretrained(
        tmp_path / "scheduler"
    )  # an EDM model (as CosXL): its own preconditioning, not a VP Euler schedule with default betas
    den = load_model(tmp_path / "unet")
    assert type(den.scheduler).__name__ == "EDMEulerScheduler" and den.sigma_data == 1.0
    assert den.prediction_type == "v_prediction"
    FlowMatchEulerDiscreteScheduler().save_pretrained(tmp_path / "scheduler")
    with pytest.raises(
        ValueError, match="scheduler: FlowMatchEulerDiscreteScheduler in .* is a flow-matching"
    ):
        load_model(tmp_path / "unet")
    # Stable Audio's cosine schedule: EDM's scalings with another timestep rule, refused
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "CosineDPMSolverMultistepScheduler", "sigma_data": 1.0})
    )
    with pytest.raises(ValueError, match=r"CosineDPMSolverMultistepScheduler in .* atan\(sigma\)"):
        load_model(tmp_path / "unet")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    """A missing, renamed (a compiled model's "_orig_mod." prefix) or reshaped parameter would load as
    uninitialized memory: refused, naming the folder; so is a damaged config.json."""
    import shutil

    from safetensors.torch import load_file, save_file

    from warped_fast.models import load_model

    src = default_model_dir("inpaint")
    weights = load_file(next(src.glob("*.safetensors")))
    first = next(iter(weights))
    extra = tmp_path / "extra"  # tensors the model does not use: ignored (diffusers does), not refused
    shutil.copytree(src, extra)
    save_file(weights | {"unused": torch.zeros(2)}, str(next(extra.glob("*.safetensors"))))
    load_model(extra)
    for name, edit in (
        ("missing", lambda sd: {k: v for k, v in sd.items() if k != first}),
        ("prefixed", lambda sd: {"_orig_mod." + k: v for k, v in sd.items()}),
        ("reshaped", lambda sd: sd | {first: sd[first].flatten()[:-1]}),
    ):
        d = tmp_path / name
        shutil.copytree(src, d)
        save_file(edit(weights), str(next(d.glob("*.safetensors"))))
        with pytest.raises(
            ValueError, match="folder: (the weights in .* do not fit its config.json|cannot load UNet2DModel)"
        ):
            load_model(d)
    (d / "config.json").write_text("{damaged")
    with pytest.raises(ValueError, match="config.json: damaged, not valid JSON"):
        load_model(d)


def test_loading_checks_device_and_dtype():
    """A dtype given as a string or a non-float dtype, an unknown device or CUDA without CUDA: errors
    naming the argument, before the weights are read."""
    import torch

    from warped_fast.pipelines import WarpedDiffusionPipeline

    for kw, err, message in (
        ({"dtype": "float16"}, TypeError, "dtype: expected a floating torch dtype"),
        ({"dtype": torch.int8}, TypeError, "dtype: expected a floating torch dtype"),
        ({"device": "bogus"}, ValueError, "device: expected cpu, cuda or cuda:N"),
    ):
        with pytest.raises(err, match=message):
            WarpedDiffusionPipeline.from_default("inpaint", **kw)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: 'cuda', but this torch has no CUDA device"):
            WarpedDiffusionPipeline.from_default("sr", device="cuda")
