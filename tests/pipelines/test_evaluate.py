"""The evaluation protocols at a tiny scale: rows written as they finish, a rerun resumes."""

import json

import pytest

from warped_fast.pipelines import evaluate
from warped_fast.pipelines.warped_diffusion import WarpedDiffusionPipeline


def test_rows_are_saved_as_they_finish_and_reused(tmp_path, monkeypatch):
    rows = evaluate.evaluate_all(tmp_path, frames=2, steps=2, quick=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"]["steps"] == 2 and saved["rows"] == rows
    assert {r["protocol"] for r in rows} == {"inpaint-translated-photo", "sr-x8-bigbuckbunny"}
    assert (tmp_path / "results.md").exists() and (tmp_path / "warping_error.png").exists()

    def fail(*args, **kwargs):
        raise RuntimeError("the pipeline ran")

    monkeypatch.setattr(WarpedDiffusionPipeline, "__call__", fail)
    assert evaluate.evaluate_all(tmp_path, frames=2, steps=2, quick=True) == rows  # nothing recomputed
    with pytest.raises(RuntimeError, match="the pipeline ran"):  # other settings: computed anew
        evaluate.evaluate_all(tmp_path, frames=2, steps=3, quick=True)
    # Another model (e.g. re-released) under the same settings: computed anew too.
    real = WarpedDiffusionPipeline.from_default

    def other_model(task, *args, **kwargs):
        pipe = real(task, *args, **kwargs)
        pipe.denoiser.residual_scale *= 2
        return pipe

    monkeypatch.setattr(WarpedDiffusionPipeline, "from_default", other_model)
    with pytest.raises(RuntimeError, match="the pipeline ran"):
        evaluate.evaluate_all(tmp_path, frames=2, steps=2, quick=True)
    with pytest.raises(ValueError, match="frames: expected an int >= 2"):
        evaluate.evaluate_all(tmp_path, frames=1)


def test_sr_clip_moves():
    from warped_fast.flow import estimate_flow

    p = evaluate.sr_clip(4)
    fwd, _ = estimate_flow(p.target)
    assert fwd.norm(dim=1).mean() > 0.2  # a pan, not a still shot: methods differ in consistency
