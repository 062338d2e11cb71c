"""Test setup: Triton runs in its CPU interpreter (set before triton is imported), hub offline.

``TRITON_INTERPRET=0`` (bench/gpu_check.sh, for the cuda-marked tests) runs the compiled Triton kernels
on CUDA tensors instead; the tests of Triton on CPU tensors then skip."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()
TRITON_ON_CPU = HAS_TRITON and os.environ["TRITON_INTERPRET"] == "1"


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU (run bench/gpu_check.sh on the GPU machine)")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)


def _fast_backends():
    out = [pytest.param("cpu", id="cpu")]
    out.append(
        pytest.param(
            "triton",
            id="triton",
            marks=pytest.mark.skipif(not TRITON_ON_CPU, reason="needs triton with TRITON_INTERPRET=1"),
        )
    )
    return out


@pytest.fixture(params=_fast_backends())
def fast_backend(request):
    """A fast CPU-runnable backend: the C++ kernels, or Triton under its interpreter."""
    return request.param


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
