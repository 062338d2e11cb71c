"""The Python examples of the README and docs/noise.md run as printed (on a two-frame clip for the
pipeline example; on the CPU where the noise example names CUDA and no GPU is present)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks(path: Path = README) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_readme_has_its_examples():
    blocks = python_blocks()
    assert len(blocks) == 4
    assert "WarpedDiffusionPipeline" in blocks[0] and "make_noise_warper" in blocks[1]
    assert "negative_prompt=" in blocks[2] and "sd-x4-upscaler" in blocks[3]


def test_readme_text_prompt_example_runs(tmp_path, monkeypatch):
    """The SDXL example on a tiny SDXL inpainting folder, on the CPU in float32."""
    import torch

    import warped_fast as wf
    from tests.models.tiny_text import tiny_text_pipeline_folder
    from warped_fast.pipelines import WarpedDiffusionPipeline

    tiny_text_pipeline_folder(tmp_path / "sdxl-inpainting", xl=True, in_channels=9)
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    wf.io.write_video(torch.rand(2, 3, 32, 48, generator=g), "clip.mp4")
    from PIL import Image

    mask = torch.zeros(32, 48, dtype=torch.uint8)
    mask[8:24, 16:32] = 255
    Image.fromarray(mask.numpy()).save("mask.png")
    code = (
        python_blocks()[2].replace("torch.float16", "torch.float32").replace('device="cuda"', 'device="cpu"')
    )
    scope: dict = {"torch": torch, "WarpedDiffusionPipeline": WarpedDiffusionPipeline}
    exec(compile(code, "README.md (text prompt example)", "exec"), scope)
    assert scope["out"].frames.shape == (2, 3, 32, 48)


def test_readme_upscaler_example_runs(tmp_path, monkeypatch):
    """The x4 upscaler example on a tiny upscaler folder."""
    import torch

    import warped_fast as wf
    from tests.models.tiny_text import tiny_upscaler_folder
    from warped_fast.pipelines import WarpedDiffusionPipeline

    tiny_upscaler_folder(tmp_path / "sd-x4-upscaler")
    monkeypatch.chdir(tmp_path)
    wf.io.write_video(torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(0)), "small.mp4")
    scope: dict = {"WarpedDiffusionPipeline": WarpedDiffusionPipeline}
    exec(compile(python_blocks()[3], "README.md (upscaler example)", "exec"), scope)
    assert scope["out"].frames.shape == (2, 3, 32, 48)


def test_readme_low_level_example_runs():
    scope: dict = {}
    exec(compile(python_blocks()[1], "README.md (low-level example)", "exec"), scope)
    assert scope["noise1"].shape == (1, 4, 128, 128) and scope["n1"].shape == (4, 128, 128)
    assert scope["u"].shape == scope["pred"].shape


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path, monkeypatch):
    import warped_fast as wf
    from warped_fast.pipelines.demo import bigbuckbunny

    monkeypatch.chdir(tmp_path)
    wf.io.write_video(bigbuckbunny(2, (32, 48)), "clip.mp4")
    scope: dict = {}
    exec(compile(python_blocks()[0], "README.md (quickstart)", "exec"), scope)
    assert scope["out"].frames.shape == (2, 3, 32, 48)
    assert (tmp_path / "out" / "inpainted.mp4").stat().st_size > 0
    assert len(list((tmp_path / "out" / "frames").glob("frame_*.png"))) == 2


def test_noise_doc_example_runs(tmp_path, monkeypatch):
    import torch

    import warped_fast as wf
    from warped_fast.pipelines.demo import bigbuckbunny

    (code,) = python_blocks(ROOT / "docs" / "noise.md")
    if not torch.cuda.is_available():
        code = code.replace('device="cuda"', 'device="cpu"').replace(".cuda()", "")
    monkeypatch.chdir(tmp_path)
    wf.io.write_video(bigbuckbunny(3, (64, 96)), "clip.mp4")  # the clip the example reads
    scope: dict = {}
    exec(compile(code, "docs/noise.md", "exec"), scope)
    assert scope["noise"].shape == (3, 4, 8, 12) and scope["n1"].shape == (4, 8, 12)
