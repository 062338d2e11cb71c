"""Inputs a user gets wrong, or gives in another form: checked before any work, with the argument named."""

import math
import os

import numpy as np
import pytest
import torch

from tests.models.tiny import scheduler, tiny_unet
from warped_fast.flow import estimate_flow
from warped_fast.io import load_mask
from warped_fast.models import DiffusersDenoiser
from warped_fast.pipelines import WarpedDiffusionPipeline
from warped_fast.sampling import GuidanceConfig

from .test_pipeline import _inpaint_pipe, _video


@pytest.mark.parametrize("lam", [math.nan, math.inf, -1.0, "1", True])
def test_guidance_lam_is_a_finite_number(lam):
    with pytest.raises(ValueError, match="lam: expected a finite number >= 0"):
        GuidanceConfig(mode="exact", lam=lam)


def test_one_step_of_a_linspace_schedule_is_refused(monkeypatch):
    import warped_fast.pipelines.warped_diffusion as wd

    def no_work(*a, **k):
        raise AssertionError("the flow was estimated before the check")

    monkeypatch.setattr(wd, "estimate_flow", no_work)
    pipe = _inpaint_pipe()
    with pytest.raises(ValueError, match="num_inference_steps: 1 step of this scheduler starts at sigma 0.0"):
        pipe(_video(2), "box", num_inference_steps=1, progress=False)
    assert pipe.denoiser.sampling_schedule(2).sigmas[0] > 1  # from the top of the range
    from diffusers import EulerDiscreteScheduler

    from warped_fast.sampling.schedules import diffusers_schedule

    trailing = EulerDiscreteScheduler(timestep_spacing="trailing")
    assert diffusers_schedule(trailing, 1).timesteps[0] == 999  # one step from the top: fine
    continuous = EulerDiscreteScheduler(
        timestep_spacing="trailing", timestep_type="continuous", prediction_type="v_prediction"
    )
    one = diffusers_schedule(continuous, 1)  # timestep 0.25 log sigma_max: from the top, fine too
    assert one.timesteps[0] == pytest.approx(0.25 * one.sigmas[0].log().item(), rel=1e-6)
    zsnr = EulerDiscreteScheduler(beta_schedule="scaled_linear", rescale_betas_zero_snr=True)
    for n in (2, 3, 50):  # zero terminal SNR and few steps: valid schedules
        diffusers_schedule(zsnr, n)
        diffusers_schedule(EulerDiscreteScheduler(timestep_spacing="leading"), n)


def test_masks_overshoot_frames_and_bad_values():
    base = torch.zeros(3, 16, 24)
    base[:, 4:9, 6:15] = 1.0
    expect = load_mask(base, 3, 16, 24)
    assert expect.sum() == 3 * 5 * 9
    assert torch.equal(load_mask(base * 1.02, 3, 16, 24), expect)  # a bicubic resize's overshoot
    assert torch.equal(load_mask((base * 255).to(torch.uint8), 3, 16, 24), expect)
    assert torch.equal(load_mask(base.long(), 3, 16, 24), expect)  # 0/1 integers
    assert torch.equal(load_mask(base * 255.0, 3, 16, 24), expect)  # 0..255 floats
    assert torch.equal(load_mask(base, 2, 16, 24), expect[:2])  # a longer clip's mask: its first frames
    with pytest.raises(ValueError, match="mask: NaN or infinite"):
        load_mask(torch.full((16, 24), math.nan), 3, 16, 24)


def test_pipeline_arguments_checked_before_any_work(tmp_path):
    pipe = _inpaint_pipe()
    v = _video(2)
    with pytest.raises(ValueError, match="sr_factor: expected an int >= 1"):
        WarpedDiffusionPipeline(pipe.denoiser, task="inpaint", sr_factor=0)
    with pytest.raises(ValueError, match="task: 'sr', but the model is conditioned for 'inpaint'"):
        WarpedDiffusionPipeline(pipe.denoiser, task="sr")
    concat = DiffusersDenoiser(tiny_unet(6, 4), scheduler=scheduler())  # 4 + 2: no task's layout
    with pytest.raises(ValueError, match="denoiser: its UNet's conditioning layout is 'concat' "):
        WarpedDiffusionPipeline(concat)
    # checked before the video is read (it does not exist) or its flow estimated
    missing = tmp_path / "missing.mp4"
    blocker = tmp_path / "file"
    blocker.write_text("")
    for kw, err, message in (
        ({"noise_method": "gpp"}, ValueError, "method: expected one of"),
        ({"noise_options": {"sigmaa": 1.0}}, (TypeError, ValueError), "sigmaa"),
        ({"frame_schedule": "zigzag"}, ValueError, "frame_schedule: expected"),
        ({"max_batch": "4"}, ValueError, "max_batch: expected an int >= 1"),
        ({"output_dir": blocker / "o"}, PermissionError, "output: cannot write"),
        ({"output_dir": 123}, TypeError, "output_dir: expected a folder path or None, got int"),
        ({"guidance": {"lam": 1.0}}, TypeError, "guidance: expected a GuidanceConfig"),
        ({"noise_options": "occlusion=true"}, TypeError, "noise_options: expected a dict"),
    ):
        with pytest.raises(err, match=message):
            pipe(missing, "box", num_inference_steps=2, progress=False, **kw)
    with pytest.raises(ValueError, match="output_type: expected one of"):
        pipe(v, "box", num_inference_steps=2, progress=False, output_type="jpg", output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    # a call refused after the output check (the video does not exist) leaves no empty folders behind
    with pytest.raises(FileNotFoundError):
        pipe(missing, "box", num_inference_steps=2, progress=False, output_dir=tmp_path / "new" / "o")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(FileNotFoundError):
        pipe(missing, "box", num_inference_steps=2, progress=False, output_dir=tmp_path / "kept")
    assert (tmp_path / "kept").is_dir()
    with pytest.raises(ValueError, match=r"flows: expected a pair \(fwd, back\)"):
        pipe(v, "box", num_inference_steps=2, progress=False, flows=(1, 2, 3))
    with pytest.raises(TypeError, match="flows\\[0\\]: expected a floating-point tensor or array, got str"):
        pipe(v, "box", num_inference_steps=2, progress=False, flows=("x", "y"))


def test_flows_as_numpy_arrays():
    pipe = _inpaint_pipe()
    v = _video(2)
    fwd, back = estimate_flow(v)
    ref = pipe(v, "box", num_inference_steps=2, progress=False, flows=(fwd, back)).frames
    out = pipe(v, "box", num_inference_steps=2, progress=False, flows=(fwd.numpy(), back.numpy())).frames
    assert torch.equal(out, ref)
    chl = pipe(
        v,
        "box",
        num_inference_steps=2,
        progress=False,
        flows=[np.moveaxis(f.numpy(), 1, -1) for f in (fwd, back)],
    )
    assert torch.equal(chl.frames, ref)  # channels-last arrays, as flow files hold them


def test_job_key_does_not_depend_on_the_process():
    """diffusers keeps "_use_default_values" in a config built in code, a list made from a set whose order
    changes with the process's hash seed: a job's key leaves such keys out, or no run could resume."""
    import subprocess
    import sys

    code = (
        "from diffusers import EulerDiscreteScheduler\n"
        "from warped_fast.pipelines.resume import value_digest\n"
        "print(value_digest(EulerDiscreteScheduler(prediction_type='v_prediction')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            env=env | {"PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
        ).stdout
        for seed in range(3)
    }
    assert len(keys) == 1 and "v_prediction" in keys.pop()


def test_weights_digest_sees_permuted_channels():
    from warped_fast.pipelines.resume import module_digest

    conv = torch.nn.Conv2d(4, 3, 3)
    before = module_digest(conv)
    with torch.no_grad():
        conv.weight[[0, 1]] = conv.weight[[1, 0]].clone()  # same sums, other model
    assert module_digest(conv) != before


def test_exact_guidance_under_inference_mode_where_it_never_runs():
    """torch.inference_mode() forbids exact guidance's gradient: refused before the flow is estimated, but
    only where guidance runs (not for one frame, lam = 0 or a start step past the last step)."""
    pipe = _inpaint_pipe()
    with torch.inference_mode():
        pipe(_video(1), "box", num_inference_steps=2, progress=False)
        pipe(_video(2), "box", num_inference_steps=2, progress=False, guidance=GuidanceConfig(lam=0.0))
        pipe(_video(2), "box", num_inference_steps=2, progress=False, guidance=GuidanceConfig(start_step=2))
        with pytest.raises(RuntimeError, match="torch.inference_mode"):
            pipe(_video(2), "box", num_inference_steps=2, progress=False)
    out = pipe(_video(2), "box", num_inference_steps=2, progress=False, max_batch=np.int64(2))  # numpy ints
    assert out.frames.shape[0] == 2


def test_default_step_counts(monkeypatch):
    """The paper's step counts: 50 with guidance, 25 without (mode "off" or lambda = 0)."""
    pipe = _inpaint_pipe()
    seen = []
    real = pipe.denoiser.sampling_schedule
    monkeypatch.setattr(pipe.denoiser, "sampling_schedule", lambda n: seen.append(n) or real(2))
    for g in (GuidanceConfig(mode="off"), GuidanceConfig(lam=0.0), GuidanceConfig()):
        pipe(_video(1), "box", guidance=g, progress=False)
    assert seen == [25, 25, 50]


def test_an_empty_mask_is_reported(caplog):
    """A mask with no masked pixel (an image marking its region some other way, say) generates nothing:
    a warning says so."""
    import logging

    pipe = _inpaint_pipe()
    with caplog.at_level(logging.WARNING, logger="warped_fast"):
        pipe(_video(1), torch.zeros(16, 24), num_inference_steps=2, progress=False)
    assert any("no pixel of any frame is masked" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="warped_fast"):
        pipe(_video(1), "box", num_inference_steps=2, progress=False)
    assert not any("is masked" in r.getMessage() for r in caplog.records)
