"""Test setup: without a GPU, Triton runs in its CPU interpreter (set before triton is imported); hub
offline.

With a GPU (or ``TRITON_INTERPRET=0``, as bench/gpu_check.sh sets) the Triton kernels run compiled on
CUDA tensors, so the cuda-marked tests check the real kernels; the tests of Triton on CPU tensors then
skip. ``TRITON_INTERPRET=1`` on a GPU machine runs the interpreter instead."""

import os

import torch  # does not import triton

os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util  # noqa: E402

import pytest  # noqa: E402

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
