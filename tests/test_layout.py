"""House rules that keep the op set complete: every public op has a reference, a fake kernel, a test
file and a benchmark; the backend report is consistent."""

from pathlib import Path

import pytest
import torch

import warped_fast as wf
from warped_fast import reference
from warped_fast.ops import OP_BACKENDS

ROOT = Path(__file__).resolve().parents[1]
# Public function -> (custom ops behind it, module stem of its files)
PUBLIC = {
    "gp_noise": (["gp_noise"], "gp_noise"),
    "warp": (["warp", "warp_image_grad", "warp_flow_grad"], "warp"),
    "occlusion_mask": (["warp"], "warp"),
    "compose_coords": (["compose_coords"], "warp"),
    "guidance_residual": (["guidance_residual"], "guidance"),
    "guidance_grad": (["guidance_residual", "warp_image_grad"], "guidance"),
    "guidance_loss": (["guidance_residual"], "guidance"),
    "euler_guided_step": (["euler_guided_step"], "guidance"),
}


def test_every_public_op_has_reference_fake_test_and_bench():
    for name, (custom, stem) in PUBLIC.items():
        assert callable(getattr(wf, name)), name
        assert hasattr(reference, name) or name == "guidance_loss", f"{name}: no reference"
        assert (ROOT / "warped_fast" / "reference" / f"{stem}.py").exists()
        assert (ROOT / "tests" / "ops" / f"test_{stem}.py").exists(), f"{name}: no test file"
        assert (ROOT / "bench" / f"bench_{stem}.py").exists(), f"{name}: no benchmark"
        for op in custom:
            assert op in OP_BACKENDS, f"{op}: not registered with the dispatcher"
            overload = getattr(torch.ops.warped_fast, op).default
            assert (
                torch._library.simple_registry.singleton.find(overload.name()).fake_impl.kernel is not None
            ), f"{op}: no fake kernel"


def test_backend_info_reports_every_op():
    info = wf.backend_info("cpu")
    assert set(info["ops"]) == set(OP_BACKENDS)
    assert info["cpu_ext"], "the C++ CPU kernels must be built by the package install"
    import warped_fast.noise  # noqa: F401 - registers the noise transports

    info = wf.backend_info("cpu")
    for op, be in info["ops"].items():  # every op, the noise transports included, has a C++ kernel
        assert be in OP_BACKENDS[op]
        assert be == "cpu", f"{op} should report cpu on CPU tensors, got {be}"
    assert wf.backend_info("cuda")["ops"]["gp_noise"] in ("cuda", "reference")
    with wf.use_backend("triton"):  # an op without a Triton path is reported, not raised
        assert wf.backend_info("cpu")["ops"]["gp_noise"].startswith("unavailable: ")


def test_use_backend_none_is_automatic_despite_the_environment(monkeypatch):
    from warped_fast.ops import select

    monkeypatch.setenv("WARPED_FAST_BACKEND", "reference")
    assert select("warp", "cpu") == "reference"
    with wf.use_backend(None):
        assert select("warp", "cpu") == "cpu"
        with wf.use_backend("reference"):
            assert select("warp", "cpu") == "reference"
        assert select("warp", "cpu") == "cpu"
    assert select("warp", "cpu") == "reference"


def test_use_backend_and_gp_kernel_choice_work_as_plain_calls_too():
    from warped_fast.ops import select
    from warped_fast.ops.gp_noise import _kernel_choice

    setting = wf.use_backend("reference")  # a plain call holds until changed ...
    try:
        assert select("warp", "cpu") == "reference"
    finally:
        setting.__exit__(None, None, None)  # ... and restores the previous choice like a with block
    assert select("warp", "cpu") == "cpu"
    setting = wf.ops.gp_noise_cuda_kernel("tensor_cores", 4)
    try:
        assert _kernel_choice() == (2, 4)
    finally:
        setting.__exit__(None, None, None)
    assert _kernel_choice() == (0, 0)
    with pytest.raises(ValueError, match="backend must be one of"):  # checked at the call, not on entry
        wf.use_backend("nonsense")
    with pytest.raises(ValueError, match="gp_noise_cuda_kernel: expected one of"):
        wf.ops.gp_noise_cuda_kernel("nonsense")


def test_select_follows_forced_backend_after_caching(monkeypatch):
    from warped_fast.ops import select

    assert select("warp", "cpu") == "cpu"  # cached for the automatic choice
    with wf.use_backend("reference"):
        assert select("warp", "cpu") == "reference"
    monkeypatch.setenv("WARPED_FAST_BACKEND", "reference")
    assert select("warp", "cpu") == "reference"
    monkeypatch.setenv("WARPED_FAST_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="cannot run on cpu"):
        select("gp_noise", "cpu")
    for bad in ("bogus", "CPU"):  # named, in the ops and in backend_info (not "unavailable" for each op)
        monkeypatch.setenv("WARPED_FAST_BACKEND", bad)
        with pytest.raises(ValueError, match=f"WARPED_FAST_BACKEND: expected one of .* got '{bad}'"):
            select("warp", "cpu")
        with pytest.raises(ValueError, match="WARPED_FAST_BACKEND"):
            wf.backend_info("cpu")
    monkeypatch.delenv("WARPED_FAST_BACKEND")
    assert select("warp", "cpu") == "cpu"
