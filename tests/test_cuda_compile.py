"""The CUDA kernels compile for sm_90 without a warning, with their default tuning knobs and with every
knob moved (the variants bench/ab_gp_noise.sh builds on the GPU machine), where nvcc is installed.
The build itself compiles only the defaults; a variant that no longer compiles would cost a GPU run."""

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KNOBS_FILE = ROOT / "kernels" / "gp_noise_tiles.cuh"


def _nvcc() -> str | None:
    for cand in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).is_file():
            return cand
    return None


NVCC = _nvcc()

# Every knob away from its default at least once; the first variant is the defaults.
VARIANTS = {
    "defaults": {},
    "fma_phases": {"WARPED_FAST_GP_MMA_FMA_PHASES": 1, "WARPED_FAST_GP_MMA_UNROLL": 4},
    "fma_phases_4tiles": {
        "WARPED_FAST_GP_MMA_FMA_PHASES": 1,
        "WARPED_FAST_GP_MMA_TILES": 4,
        "WARPED_FAST_GP_MMA_BLOCKS": 2,
        "WARPED_FAST_GP_MMA_SPLIT_ACC": 1,
    },
    "pixels_per_lane": {
        "WARPED_FAST_GP_SHARED_PIX": 8,
        "WARPED_FAST_GP_SHARED_BLOCKS": 2,
        "WARPED_FAST_GP_INDEP_PIX": 8,
        "WARPED_FAST_GP_PDL": 0,
    },
    "others": {
        "WARPED_FAST_GP_MMA_TILES": 1,
        "WARPED_FAST_GP_MMA_BLOCKS": 4,
        "WARPED_FAST_GP_MMA_SPLIT_ACC": 1,
        "WARPED_FAST_GP_FMA_UNROLL": 8,
        "WARPED_FAST_GP_INDEP_FEATURES": 2,
        "WARPED_FAST_GP_EARLY_FETCH_SPLIT": 1,
        "WARPED_FAST_GP_POLY_COS": 3,
        "WARPED_FAST_GP_INDEP_PIX": 4,
    },
}


def test_variants_move_every_knob():
    knobs = set(re.findall(r"^#ifndef (WARPED_FAST_\w+)", KNOBS_FILE.read_text(), flags=re.M))
    moved = {k for v in VARIANTS.values() for k in v}
    assert knobs, "no tuning knobs found"
    assert knobs == moved, f"knobs not compiled here: {knobs - moved}; unknown: {moved - knobs}"


def _compile(defines: dict, out: Path) -> subprocess.CompletedProcess:
    cmd = [NVCC, "-std=c++17", "-arch=sm_90", "-O3", "--use_fast_math", "--Werror", "all-warnings"]
    cmd += [f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'kernels'}", "-cubin", "-o", str(out)]
    cmd += [f"-D{k}={v}" for k, v in defines.items()] + [str(ROOT / "kernels" / "gp_noise.cu")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(NVCC is None, reason="needs nvcc")
def test_cuda_kernels_compile_for_sm90_with_every_knob(tmp_path):
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(_compile, defines, tmp_path / f"{name}.cubin")
            for name, defines in VARIANTS.items()
        }
        runs = {name: f.result() for name, f in futures.items()}
    failed = {name: r.stderr[-2000:] for name, r in runs.items() if r.returncode != 0}
    assert not failed, failed
    for name in VARIANTS:
        assert (tmp_path / f"{name}.cubin").stat().st_size > 0, name
