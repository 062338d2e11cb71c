"""The command line on small inputs with the shipped models (offline, CPU)."""

import json
import sys

import pytest
import torch

import warped_fast.pipelines  # noqa: F401 - imported before tests patch the readers it binds
from warped_fast.cli import main
from warped_fast.flow import estimate_flow, flow_to_latent
from warped_fast.io import read_video, video_fps, write_video


def _clip(tmp_path, t=3, h=16, w=24, fps=8.0):
    g = torch.Generator().manual_seed(0)
    base = torch.rand(3, h, w + t, generator=g)
    v = torch.stack([base[:, :, t - j : t - j + w] for j in range(t)])
    return write_video(v, tmp_path / "in.mp4", fps=fps)


def test_info(capsys):
    assert main(["info", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["ops"]["gp_noise"] == "cpu"


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "warped_fast", "info", "--device", "cpu"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["ops"]["gp_noise"] == "cpu"


def test_inpaint_and_sr_write_videos_and_resume(tmp_path, capsys):
    src = _clip(tmp_path, fps=24)
    args = ["inpaint", str(src), "--out", str(tmp_path / "o"), "--steps", "2", "--quiet", "--mask", "center"]
    args += ["--noise-option", "occlusion=true", "--noise-option", "num_features=512"]
    assert main(args) == 0
    out = read_video(tmp_path / "o" / "inpaint.mp4")
    assert out.shape[0] == 3
    assert video_fps(src) == 24 and video_fps(tmp_path / "o" / "inpaint.mp4") == 24  # the input's rate
    frames = sorted((tmp_path / "o" / "frames").glob("frame_*.png"))
    stamps = [f.stat().st_mtime_ns for f in frames]
    assert main(args) == 0  # a finished job is not redone
    assert [f.stat().st_mtime_ns for f in frames] == stamps
    lr = write_video(read_video(src)[..., :2, :3], tmp_path / "lr.gif")
    assert (
        main(["sr", str(lr), "--out", str(tmp_path / "s"), "--steps", "2", "--quiet", "--guidance", "off"])
        == 0
    )
    assert read_video(tmp_path / "s" / "sr.mp4").shape[-2:] == (16, 24)
    bad = ["inpaint", str(src), "--out", str(tmp_path / "b"), "--noise", "gwtf", "--noise-option", "sigma=1"]
    assert main(bad) == 2  # before any reading or loading
    assert "--noise-option: sigma: not an option of the 'gwtf' method" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_inpaint_mask_video_follows_size_and_max_frames(tmp_path):
    """--size and --max-frames apply to a mask video as to the input video."""
    src = _clip(tmp_path, t=4, h=32, w=48)
    m = torch.zeros(4, 3, 32, 48)
    m[:, :, 8:24, 12:36] = 1
    mask = write_video(m, tmp_path / "mask.gif")
    out = tmp_path / "o"
    args = [
        "inpaint",
        str(src),
        "--mask",
        str(mask),
        "--size",
        "16x24",
        "--max-frames",
        "2",
        "--flow-preset",
        "fast",
    ]
    assert main([*args, "--out", str(out), "--steps", "2", "--quiet", "--guidance", "off"]) == 0
    assert read_video(out / "inpaint.mp4").shape == (2, 3, 16, 24)
    assert json.loads((out / "frames" / "progress.json").read_text())["params"]["flows"][1] == "fast"


def test_warp_noise(tmp_path, capsys):
    from safetensors.torch import load_file

    src = _clip(tmp_path, h=32, w=48)
    assert main(["warp-noise", str(src), "--out", str(tmp_path / "n.safetensors"), "--method", "gp"]) == 0
    d = load_file(str(tmp_path / "n.safetensors"))
    assert d["noise"].shape == (3, 4, 4, 6) and d["fwd_flow"].shape == (2, 2, 4, 6)
    # the video streamed pair by pair: the flows of the whole clip at once, mapped to the latent grid
    fwd, back = estimate_flow(read_video(src))
    assert torch.equal(d["fwd_flow"], flow_to_latent(fwd, 8)) and torch.equal(
        d["back_flow"], flow_to_latent(back, 8)
    )
    one = tmp_path / "new" / "one.safetensors"  # in a folder that does not exist yet
    assert main(["warp-noise", str(src), "--out", str(one), "--max-frames", "1", "--method", "hiwyn"]) == 0
    d1 = load_file(str(one))
    assert d1["noise"].shape == (1, 4, 4, 6) and d1["fwd_flow"].shape == d1["back_flow"].shape == (0, 2, 4, 6)
    args = ["warp-noise", str(src), "--out", str(tmp_path / "m.safetensors")]
    assert main([*args, "--size", "36x52"]) == 2
    assert "the frames are 36x52; --factor 8 must be >= 1 and divide both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--size", "36"])
    assert "argument --size: expected HxW such as 64x96, got '36'" in capsys.readouterr().err


def test_flow_presets_match_the_library(tmp_path):
    from typing import get_args

    from safetensors.torch import load_file

    from warped_fast.cli import FLOW_PRESETS
    from warped_fast.flow.dis import Preset

    assert FLOW_PRESETS == get_args(Preset)
    src = _clip(tmp_path, h=32, w=48)
    out = tmp_path / "fast.safetensors"
    assert main(["warp-noise", str(src), "--out", str(out), "--flow-preset", "ultrafast"]) == 0
    fwd, _ = estimate_flow(read_video(src), "ultrafast")
    assert torch.equal(load_file(str(out))["fwd_flow"], flow_to_latent(fwd, 8))


def test_noise_methods_and_options_match_the_library():
    import inspect

    from warped_fast.cli import NOISE_METHOD_OPTIONS
    from warped_fast.noise import METHODS

    assert sorted(NOISE_METHOD_OPTIONS) == sorted(METHODS)
    for name, options in NOISE_METHOD_OPTIONS.items():
        params = [p for p in inspect.signature(METHODS[name]).parameters if p != "rff"]
        assert tuple(params) == options, name


def test_warp_noise_options_reach_the_method(tmp_path):
    """--noise-option values (JSON where they parse) and the GP field settings give the same noise as
    the library called with those options on the flows the file holds."""
    from safetensors.torch import load_file

    from warped_fast.noise import RFFConfig, warp_noise_video

    src = _clip(tmp_path, h=32, w=48)
    out = tmp_path / "n.safetensors"
    opts = ["occlusion=true", "lengthscale=2.5", "num_features=64", "shared_features=true"]
    args = ["warp-noise", str(src), "--out", str(out), "--seed", "3"]
    assert main([*args, *(x for o in opts for x in ("--noise-option", o))]) == 0
    d = load_file(str(out))
    rff = RFFConfig(num_features=64, lengthscale=2.5, shared_features=True)
    expect = warp_noise_video(
        "gp", (4, 4, 6), d["back_flow"], d["fwd_flow"], generator=3, occlusion=True, rff=rff
    )
    torch.testing.assert_close(d["noise"], expect, rtol=0, atol=0)
    default = warp_noise_video("gp", (4, 4, 6), d["back_flow"], d["fwd_flow"], generator=3)
    assert not torch.equal(d["noise"], default)

    assert main([*args, "--method", "hiwyn", "--noise-option", "upsample=2"]) == 0
    d = load_file(str(out))
    expect = warp_noise_video("hiwyn", (4, 4, 6), d["back_flow"], d["fwd_flow"], generator=3, upsample=2)
    torch.testing.assert_close(d["noise"], expect, rtol=0, atol=0)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--noise-option", "colour=1"], "--noise-option: colour: not an option of the 'gp' method"),
        (
            ["--method", "hiwyn", "--noise-option", "lengthscale=2"],
            "lengthscale: GP field settings; the 'hiwyn'",
        ),
        (["--noise-option", "lengthscale=-1"], "--noise-option: lengthscale: expected a finite value > 0"),
        (["--method", "nearest", "--noise-option", "base=pink"], "--noise-option: base"),
    ],
)
def test_warp_noise_bad_options(tmp_path, capsys, extra, message):
    src = _clip(tmp_path, h=32, w=48)
    assert main(["warp-noise", str(src), "--out", str(tmp_path / "n.safetensors"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("warped-fast warp-noise: ") and message in err, err
    assert not (tmp_path / "n.safetensors").exists()


def test_warp_noise_missing_input(tmp_path, capsys):
    assert main(["warp-noise", str(tmp_path / "no.mp4"), "--out", str(tmp_path / "n.safetensors")]) == 2
    assert "warped-fast warp-noise: video: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--noise-option", "occlusion"], "expected KEY=VALUE such as occlusion=true, got 'occlusion'"),
        (["--method", "perlin"], "argument --method: invalid choice: 'perlin'"),
        (["--channels", "0"], "argument --channels: expected an int >= 1, got 0"),
        (["--max-frames", "0"], "argument --max-frames: expected an int >= 1, got 0"),
        (["--seed", "99999999999999999999"], "argument --seed: expected a seed of 64 bits"),
        (["--factor", "x"], "argument --factor: expected an int, got 'x'"),
        (["--flow-preset", "slow"], "argument --flow-preset: invalid choice: 'slow'"),
    ],
)
def test_warp_noise_bad_arguments(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        main(["warp-noise", "in.mp4", "--out", str(tmp_path / "n.safetensors"), *extra])
    assert message in capsys.readouterr().err


def test_train_from_config(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'task = "sr"\noutput_dir = "{tmp_path / "run"}"\nresolution = 16\nbatch_size = 2\nsteps = 2\n'
        "num_features = 100\nprogress = false\nmodel = { block_out_channels = [16, 32], norm_num_groups = 8 }\n"
    )
    assert main(["train", "--config", str(cfg)]) == 0
    assert (tmp_path / "run" / "model" / "diffusion_pytorch_model.safetensors").exists()
    # not a run of the default length: a clear message, exit status 2 (the traceback with --verbose)
    assert main(["train", "--steps", "0", "--output-dir", str(tmp_path / "zero")]) == 2
    assert "warped-fast train: steps: expected >= 1, got 0" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('steps = "10"\n')  # a type error in the config: exit 2 naming the key
    assert main(["train", "--config", str(bad)]) == 2
    assert "warped-fast train: steps: expected" in capsys.readouterr().err
    with pytest.raises(ValueError, match="steps: expected >= 1, got 0"):
        main(["--verbose", "train", "--steps", "0", "--output-dir", str(tmp_path / "zero")])


def test_train_and_release_name_missing_files_and_unwritable_folders(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for argv, message in (
        (["train", "--config", str(tmp_path / "nosuch.toml")], "train: config: "),
        (
            ["train", "--steps", "2", "--output-dir", str(blocker / "run")],
            "train: output_dir: cannot write to",
        ),
        (
            ["release-model", "--task", "sr", "--run", str(tmp_path / "norun")],
            "is not a training run's folder",
        ),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"warped-fast {argv[0]}: ") and message in err, err


def test_demo_small(tmp_path):
    from warped_fast.io import FrameStore
    from warped_fast.io.frames import OtherJobError
    from warped_fast.pipelines.demo import DEMO_MARK, _demo_store, run_demo

    store = tmp_path / "d" / "frames"
    # another job's frames in the demo's folder: refused, nothing deleted
    other = FrameStore(store, {"an": "inpaint job"}, 3)
    other.write(0, torch.zeros(3, 4, 4))
    with pytest.raises(OtherJobError, match="different job"):
        run_demo(tmp_path / "d", frames=3, size=(16, 24), steps=2, progress=False)
    assert other.done() == [0]
    (store / DEMO_MARK).write_text("not this job's digest\n")  # a mark left by an earlier demo run
    assert not _demo_store(store)
    with pytest.raises(OtherJobError, match="different job"):
        run_demo(tmp_path / "d", frames=3, size=(16, 24), steps=2, progress=False)
    assert other.done() == [0]
    # the demo's own job there (its mark names it): other settings restart it
    (store / DEMO_MARK).unlink()
    other.folder.joinpath("frame_00000.png").unlink()
    res = run_demo(tmp_path / "d", frames=2, size=(16, 24), steps=2, progress=False)
    assert _demo_store(store)
    res = run_demo(tmp_path / "d", frames=3, size=(16, 24), steps=2, progress=False)
    assert _demo_store(store) and len(list(store.glob("frame_*.png"))) == 3
    for p in res["paths"].values():
        assert (tmp_path / "d" / p.split("/")[-1]).exists()
    assert set(res["warping_error_first"]) == {
        "Warped Diffusion",
        "GP warping (lambda = 0)",
        "Fixed noise",
        "Resample",
    }


def test_output_into_the_input_folder_is_refused(tmp_path, capsys):
    from PIL import Image

    shot = tmp_path / "shot"
    (shot / "frames").mkdir(parents=True)
    for i, f in enumerate(read_video(_clip(tmp_path))):
        a = (f.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(a).save(shot / "frames" / f"{i:04d}.png")
    before = sorted(p.name for p in (shot / "frames").iterdir())
    args = [
        "inpaint",
        str(shot / "frames"),
        "--out",
        str(shot),
        "--steps",
        "2",
        "--quiet",
        "--mask",
        "center",
    ]
    assert main(args) == 2  # the job's frames would go to shot/frames, among the input's
    err = capsys.readouterr().err
    assert "output: " in err and "holds other images (0000.png" in err
    assert sorted(p.name for p in (shot / "frames").iterdir()) == before


def test_flags_checked_at_parse_and_verbose_after_the_subcommand(tmp_path, capsys):
    src = _clip(tmp_path)
    base = ["inpaint", str(src), "--out", str(tmp_path / "o"), "--steps", "2", "--quiet"]
    for bad, flag in (
        [["--fps", "0"], "--fps"],
        [["--fps", "1e-5"], "--fps"],
        [["--fps", "inf"], "--fps"],
        [["--fps", "20000"], "--fps"],  # write_video's bound, checked before the job
        [["--device", "foo"], "--device"],
    ):
        with pytest.raises(SystemExit) as e:
            main([*base, *bad])
        assert e.value.code == 2 and flag in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main([*base, "--device", "cuda"])
        assert "no CUDA device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--frames", "1"])
    assert "--frames: expected an int >= 2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing ran
    # -v after the subcommand: the traceback instead of the message
    with pytest.raises(ValueError, match="steps: expected >= 1"):
        main(["train", "--steps", "0", "--output-dir", str(tmp_path / "zero"), "-v"])
    # a folder where a file goes: exit 2 before any work
    (tmp_path / "adir").mkdir()
    assert main(["warp-noise", str(src), "--out", str(tmp_path / "adir")]) == 2
    assert "--out: " in capsys.readouterr().err


def test_noise_option_order_and_number_form_are_one_job(tmp_path):
    src = _clip(tmp_path)
    base = ["inpaint", str(src), "--out", str(tmp_path / "o"), "--steps", "2", "--quiet", "--mask", "center"]
    assert main([*base, "--noise-option", "occlusion=true", "--noise-option", "sigma=2"]) == 0
    frames = sorted((tmp_path / "o" / "frames").glob("frame_*.png"))
    stamps = [f.stat().st_mtime_ns for f in frames]
    # the same job: resumed (finished, so nothing redone), not refused as another one
    assert main([*base, "--noise-option", "sigma=2.0", "--noise-option", "occlusion=true"]) == 0
    assert [f.stat().st_mtime_ns for f in frames] == stamps


def test_warp_noise_unwritable_output_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    # the input does not exist: the output is checked first
    assert main(["warp-noise", str(tmp_path / "missing.mp4"), "--out", str(blocker / "n.safetensors")]) == 2
    assert "--out: cannot write" in capsys.readouterr().err
    assert main(["warp-noise", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "n.txt")]) == 2
    assert "--out: expected a .safetensors file path" in capsys.readouterr().err


def test_restore_checks_output_input_and_mask_before_any_work(tmp_path, monkeypatch, capsys):
    """inpaint / sr refuse an unwritable --out, a missing input or mask file before the model is loaded
    or the video decoded, and leave no folder behind."""
    import warped_fast.cli as cli

    def no_work(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(cli, "_pipeline", no_work)
    monkeypatch.setattr("warped_fast.io.read_video", no_work)
    src = _clip(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (["sr", str(src), "--out", str(blocker / "o")], "--out: cannot write"),
        (["inpaint", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o1")], "input: "),
        (["inpaint", str(src), "--out", str(tmp_path / "o2"), "--mask", str(tmp_path / "m.png")], "--mask: "),
        (
            ["inpaint", str(src), "--out", str(tmp_path / "o3"), "--lam", "-1"],
            "--lam: expected a finite number >= 0",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_a_step_count_the_schedule_cannot_take_is_named_before_decoding(tmp_path, monkeypatch, capsys):
    def no_work(*a, **k):
        raise AssertionError("the video was decoded before the step count was checked")

    monkeypatch.setattr("warped_fast.io.read_video", no_work)
    monkeypatch.setattr("warped_fast.io.iter_video", no_work)
    assert main(["sr", str(_clip(tmp_path)), "--out", str(tmp_path / "o"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("warped-fast sr: --steps: ") and "step" in err, err


def test_inpaint_keep_known(tmp_path):
    from warped_fast.io import load_mask

    src = _clip(tmp_path)
    args = ["inpaint", str(src), "--out", str(tmp_path / "o"), "--steps", "2", "--quiet", "--guidance", "off"]
    assert main([*args, "--mask", "center", "--keep-known"]) == 0
    v, m = read_video(src), load_mask("center", 3, 16, 24)
    out = read_video(tmp_path / "o" / "frames")
    assert ((out - v) * (1 - m)).abs().max() <= 0.5 / 255 + 1e-6  # the PNGs: 8 bits


def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "skvideo", None)  # as when warped_fast[data] is not installed
    assert main(["demo", "--out", str(tmp_path / "d")]) == 2
    assert (
        "needs skvideo, which is not installed (pip install 'warped_fast[data]')" in capsys.readouterr().err
    )
    assert not (tmp_path / "d").exists()  # refused before any work: no folder left behind
    monkeypatch.delitem(sys.modules, "skvideo")
    for cmd in ("demo", "eval", "inpaint", "sr"):  # checked by the parser: no work, no folder
        args = [cmd] + (["in.mp4"] if cmd in ("inpaint", "sr") else []) + ["--out", str(tmp_path / cmd)]
        with pytest.raises(SystemExit):
            main([*args, "--steps", "0"])
        assert (
            "argument --steps: expected an int >= 1" in capsys.readouterr().err
            and not (tmp_path / cmd).exists()
        )


def test_config_syntax_error_and_info_without_cuda_name_the_cause(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = \n")
    assert main(["train", "--config", str(bad)]) == 2
    assert f"config: {bad} is not valid TOML" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["info", "--device", "cuda"]) == 2
        assert "--device cuda: this torch has no CUDA device" in capsys.readouterr().err


def test_inpaint_with_a_text_conditioned_model(tmp_path, capsys):
    """--prompt / --negative-prompt / --cfg-scale with a local SDXL inpainting folder."""
    from tests.models.tiny_text import tiny_text_pipeline_folder

    model = tmp_path / "sdxl"
    tiny_text_pipeline_folder(model, xl=True, in_channels=9)
    src = _clip(tmp_path, t=2, h=32, w=48)
    base = ["inpaint", str(src), "--model", str(model), "--steps", "2", "--quiet"]
    text = ["--prompt", "the cat", "--negative-prompt", "dark", "--cfg-scale", "3"]
    assert main([*base, "--out", str(tmp_path / "o"), *text]) == 0
    assert read_video(tmp_path / "o" / "inpaint.mp4").shape == (2, 3, 32, 48)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "p")]) == 2
    assert f"--prompt: the model in {model} is text-conditioned; give --prompt" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "p"), "--negative-prompt", "dark"]) == 2
    assert "--negative-prompt: goes with --prompt" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "p"), "--prompt", "a", "--negative-prompt", "dark"]) == 2
    assert "--negative-prompt: steers classifier-free guidance; set --cfg-scale" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--out", str(tmp_path / "p"), "--prompt", "a", "--cfg-scale", "nan"])
    assert "expected a finite number, got 'nan'" in capsys.readouterr().err
    src16 = _clip(tmp_path, t=2)
    assert main(["inpaint", str(src16), "--out", str(tmp_path / "d"), "--prompt", "a cat"]) == 2
    assert (
        "--prompt: the default model is not text-conditioned; leave --prompt out" in capsys.readouterr().err
    )
    assert main(["inpaint", str(src16), "--out", str(tmp_path / "d"), "--cfg-scale", "3"]) == 2
    assert "--cfg-scale: classifier-free guidance needs --prompt" in capsys.readouterr().err
    # the default given: no guidance, as without the flag
    from warped_fast.cli import _pipeline, build_parser

    args = build_parser().parse_args(
        ["inpaint", str(src16), "--out", str(tmp_path / "e"), "--cfg-scale", "1"]
    )
    assert _pipeline(args, "inpaint").denoiser.guidance_scale == 1.0


def test_sr_with_the_x4_upscaler(tmp_path, capsys):
    """--sr-factor and --noise-level with a local Stable Diffusion x4 upscaler folder."""
    from tests.models.tiny_text import tiny_upscaler_folder

    model = tmp_path / "x4"
    tiny_upscaler_folder(model)
    src = _clip(tmp_path, t=2, h=8, w=12)
    base = ["sr", str(src), "--model", str(model), "--steps", "2", "--quiet", "--prompt", "the cat"]
    assert main([*base, "--out", str(tmp_path / "o"), "--sr-factor", "4", "--noise-level", "50"]) == 0
    assert read_video(tmp_path / "o" / "sr.mp4").shape == (2, 3, 32, 48)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "p"), "--noise-level", "351"]) == 2
    assert "--noise-level: at most the model's max_noise_level 350, got 351" in capsys.readouterr().err
    src16 = _clip(tmp_path, t=2)
    assert main(["sr", str(src16), "--out", str(tmp_path / "d"), "--noise-level", "20"]) == 2
    assert "--noise-level: the default model is not an image-conditioned upscaler" in capsys.readouterr().err


def test_inpaint_with_flux_fill(tmp_path, capsys):
    from tests.models.tiny_text import tiny_flux_fill_folder

    model = tmp_path / "flux"
    tiny_flux_fill_folder(model)
    src = _clip(tmp_path, t=2, h=16, w=24)
    base = ["inpaint", str(src), "--model", str(model), "--steps", "2", "--quiet", "--prompt", "the cat"]
    assert main([*base, "--out", str(tmp_path / "o"), "--cfg-scale", "5"]) == 0
    assert read_video(tmp_path / "o" / "inpaint.mp4").shape == (2, 3, 16, 24)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "p"), "--negative-prompt", "dark", "--cfg-scale", "5"]) == 2
    assert "--negative-prompt: a FLUX model takes distilled guidance (--cfg-scale)" in capsys.readouterr().err
    # its distilled guidance: 30 unless given, 1 included
    from warped_fast.cli import _pipeline, build_parser

    for extra, want in (([], 30.0), (["--cfg-scale", "1"], 1.0)):
        args = build_parser().parse_args([*base, "--out", str(tmp_path / "q"), *extra])
        assert _pipeline(args, "inpaint").denoiser.guidance_scale == want
    assert main([*base[:-2], "--out", str(tmp_path / "r")]) == 2
    assert f"--prompt: the model in {model} is text-conditioned; give --prompt" in capsys.readouterr().err


def test_sr_with_a_tile_controlnet(tmp_path, capsys):
    from tests.models.tiny_text import tiny_controlnet, tiny_text_pipeline_folder

    model = tmp_path / "sdxl"
    parts = tiny_text_pipeline_folder(model, xl=True, in_channels=4)
    tiny_controlnet(parts["unet"]).save_pretrained(tmp_path / "tile")
    src = _clip(tmp_path, t=2, h=4, w=6)
    base = [
        "sr",
        str(src),
        "--model",
        str(model),
        "--steps",
        "2",
        "--quiet",
        "--prompt",
        "",
        "--noise",
        "gwtf",
    ]
    assert main([*base, "--out", str(tmp_path / "o"), "--controlnet", str(tmp_path / "tile"),
                 "--controlnet-scale", "0.7"]) == 0  # fmt: skip
    assert read_video(tmp_path / "o" / "sr.mp4").shape == (2, 3, 32, 48)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "p"), "--controlnet", str(tmp_path / "nothing")]) == 2
    assert "--controlnet: " in capsys.readouterr().err
    for scale in ("0.5", "1"):
        assert main([*base, "--out", str(tmp_path / "p"), "--controlnet-scale", scale]) == 2
        assert "--controlnet-scale: goes with --controlnet" in capsys.readouterr().err


def test_dtype_and_compile_reach_the_model(tmp_path):
    from warped_fast.cli import _pipeline, build_parser

    args = build_parser().parse_args(
        [
            "inpaint",
            "in.mp4",
            "--out",
            str(tmp_path / "o"),
            "--dtype",
            "bfloat16",
            "--compile",
            "--device",
            "cpu",
        ]
    )
    pipe = _pipeline(args, "inpaint")
    assert next(pipe.denoiser.unet.parameters()).dtype == torch.bfloat16
    assert pipe.denoiser.runner.backend == "compile"
    src = _clip(tmp_path, t=2)
    out = tmp_path / "b"
    assert (
        main(["inpaint", str(src), "--out", str(out), "--steps", "2", "--quiet", "--dtype", "bfloat16"]) == 0
    )
    assert read_video(out / "inpaint.mp4").shape == (2, 3, 16, 24)


def test_the_input_is_decoded_a_frame_at_a_time_and_a_wrong_mask_named_first(tmp_path, monkeypatch, capsys):
    """The input video is never read whole at its full size (each frame is resized as it is decoded), and
    a mask file of another size is named after the first frame, before the rest is decoded."""
    import warped_fast.io as wio

    src = _clip(tmp_path, t=4, h=32, w=48)
    real_iter, real_read, decoded = wio.iter_video, wio.read_video, []

    def counted(source, *a, **k):
        for f in real_iter(source, *a, **k):
            decoded.append(tuple(f.shape))
            yield f

    def read(source, *a, **k):
        assert str(source) != str(src), "the input was read whole"
        return real_read(source, *a, **k)

    monkeypatch.setattr(wio, "iter_video", counted)
    monkeypatch.setattr(wio.video, "iter_video", counted)  # the mask's reader
    monkeypatch.setattr(wio, "read_video", read)
    bad = tmp_path / "bad.png"
    from PIL import Image

    Image.new("L", (16, 16), 255).save(bad)
    args = ["inpaint", str(src), "--quiet", "--steps", "2", "--guidance", "off", "--flow-preset", "fast"]
    assert main([*args, "--out", str(tmp_path / "o1"), "--mask", str(bad)]) == 2
    assert "mask: expected size 32x48" in capsys.readouterr().err and len(decoded) == 1
    decoded.clear()
    m = torch.zeros(4, 3, 32, 48)
    for j in range(4):  # a moving box (a GIF merges identical frames)
        m[j, :, 8:24, 12 + 2 * j : 36 + 2 * j] = 1
    mask = write_video(m, tmp_path / "mask.gif")
    assert main([*args, "--out", str(tmp_path / "o2"), "--mask", str(mask), "--size", "16x24"]) == 0
    assert decoded.count((3, 32, 48)) == 8  # the input's 4 frames and the mask's, one at a time
    assert read_video(tmp_path / "o2" / "inpaint.mp4").shape == (4, 3, 16, 24)


def test_out_as_a_video_name_a_missing_model_and_a_diverged_run_are_named(tmp_path, capsys):
    src = _clip(tmp_path)
    assert main(["sr", str(src), "--out", str(tmp_path / "restored.mp4")]) == 2
    assert "--out: a folder" in capsys.readouterr().err and not (tmp_path / "restored.mp4").exists()
    assert main(["sr", str(src), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "sdxl-typo")]) == 2
    err = capsys.readouterr().err
    assert "--model: " in err and "does not exist" in err


def test_a_diverged_training_run_is_one_line_with_status_1(tmp_path, monkeypatch, capsys):
    import warped_fast.train as train

    def diverge(self, *a, **k):
        raise FloatingPointError("training diverged: 10 steps in a row ...")

    monkeypatch.setattr(train.Trainer, "train", diverge)
    assert main(["train", "--steps", "3", "--output-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("warped-fast train: training diverged") and "Traceback" not in err
