"""bench/ab_summary.py on a real A/B run of the H100 (docs/gpu_runs): the table bench/ab_gp_noise.sh
prints last."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "docs" / "gpu_runs" / "h100_2026-11-27" / "gp_noise_ab_variants.csv"


def run(*tags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "bench" / "ab_summary.py"), str(CSV), *tags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_variants_side_by_side():
    out = run("base", "both", "indep_f2")
    assert out.returncode == 0, out.stderr
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in out.stdout.splitlines()}
    # the launcher's split, 1x4x1024x1024 shared, tensor cores: 1.2575 ms (base), 1.3199 ms (both)
    auto = rows[("1x4x1024x1024 J=3000 shared", "tensor_cores", "auto")]
    assert "1.258 (1.000x) err 1.5e-05" in auto and "1.32 (1.050x)" in auto
    # the fastest explicit split of 1x4x128x128 independent is 4 in the base build: 0.0637 ms
    assert "0.0637 (1.000x) s4" in rows[("1x4x128x128 J=3000 indep", "fma", "best")]
    assert len(rows) == 2 + 12  # header, rule, 6 (case, kernel) pairs x (auto, best)


def test_unknown_variant_is_an_error():
    out = run("no_such_build")
    assert out.returncode != 0 and "no rows tagged ['no_such_build']" in out.stderr
