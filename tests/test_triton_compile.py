"""Every Triton kernel compiles for sm_90 with the real compiler (tests/triton_compile.py), on a machine
without a GPU: the interpreter that runs the kernels in these tests accepts code the compiler rejects."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HAS_NVIDIA_BACKEND = importlib.util.find_spec("triton") is not None and (
    importlib.util.find_spec("triton.backends.nvidia") is not None
)


@pytest.mark.skipif(not HAS_NVIDIA_BACKEND, reason="needs triton with its NVIDIA backend")
def test_triton_kernels_compile_for_sm90():
    script = Path(__file__).with_name("triton_compile.py")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "compiled _warp_fwd_kernel" in run.stdout
