"""A model trained on GP noise samples with the lengthscale it was trained with."""

import json
import shutil

import pytest
import torch

from tests.pipelines.test_pipeline import _video
from warped_fast.models.default import default_model_dir, trained_lengthscale
from warped_fast.noise import RFFConfig
from warped_fast.pipelines import WarpedDiffusionPipeline
from warped_fast.sampling import GuidanceConfig


def _folder(tmp_path, **changes):
    folder = tmp_path / "model"
    shutil.copytree(default_model_dir("inpaint"), folder)
    cfg = json.loads((folder / "train_config.json").read_text())
    (folder / "train_config.json").write_text(json.dumps({**cfg, **changes}))
    return folder


def _noise(pipe, method="gp", **options):
    out = pipe(_video(2), "box", num_inference_steps=2, guidance=GuidanceConfig(mode="off"), progress=False,
               noise_method=method, noise_options=options or None, generator=torch.Generator().manual_seed(3))  # fmt: skip
    return out.noise


def test_the_trained_lengthscale_is_the_default_of_gp_noise(tmp_path):
    folder = _folder(tmp_path, lengthscale=1.5)
    assert trained_lengthscale(folder) == 1.5
    pipe = WarpedDiffusionPipeline.from_pretrained(folder)
    assert pipe.trained_lengthscale == 1.5
    trained = _noise(pipe)
    assert torch.equal(trained, _noise(pipe, rff=RFFConfig(lengthscale=1.5)))
    assert not torch.allclose(trained, _noise(pipe, rff=RFFConfig()))  # the job's own rff wins
    # a warper of a GP base takes it too; a white base stays white
    assert torch.equal(
        _noise(pipe, "fixed", base="gp"), _noise(pipe, "fixed", base="gp", rff=RFFConfig(lengthscale=1.5))
    )
    _noise(pipe, "fixed")


def test_white_noise_and_untrained_folders_record_no_lengthscale(tmp_path):
    assert trained_lengthscale(default_model_dir("inpaint")) == pytest.approx(2 / torch.pi)
    assert trained_lengthscale(_folder(tmp_path, noise="white", lengthscale=1.5)) is None
    assert trained_lengthscale(tmp_path) is None
    with pytest.raises(ValueError, match="lengthscale"):
        WarpedDiffusionPipeline.from_pretrained(_folder(tmp_path / "bad", lengthscale=-1.0))


def test_cli_field_settings_keep_the_trained_lengthscale():
    from warped_fast.cli import noise_options

    assert noise_options("gp", [("num_features", 100)], 1.5)["rff"] == RFFConfig(
        num_features=100, lengthscale=1.5
    )
    assert noise_options("gp", [("lengthscale", 2.5)], 1.5)["rff"].lengthscale == 2.5
    assert "rff" not in noise_options("gp", [("occlusion", True)], 1.5)  # the pipeline fills it in
