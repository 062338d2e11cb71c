"""Run every op benchmark in one process group and print their tables (``--quick`` for a short run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [
    "bench_gp_noise.py",
    "bench_warp.py",
    "bench_guidance.py",
    "bench_noise_warp.py",
    "bench_sampler.py",
    "bench_default_model.py",
]


def main() -> int:
    extra = sys.argv[1:]
    import warped_fast

    print("backends:", warped_fast.backend_info())
    rc = 0
    for s in SCRIPTS:
        rc |= subprocess.call([sys.executable, str(HERE / s), *extra])
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
