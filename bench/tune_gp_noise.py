"""Sweep the gp_noise CUDA launch choices (kernel x feature split) on the GPU, one run.

For 1x4x128x128 and 1x4x1024x1024 (``--sizes``: other square frames), J = 3000 (``--features``: other
counts), independent and shared features: every split (1, 2, 4, 8, and the launcher's own choice) of
the FMA kernel and, for shared features, of the tensor-core kernel. Each row: CUDA-graph replay
median, the ratio to the cosine floor, and the largest difference from the float64 reference on the
same coordinates (so a fast but wrong variant shows). Needs CUDA.
WARPED_FAST_BENCH_TAG, when set, is appended to every row's label (bench/ab_gp_noise.sh: the build).
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import Table, cosine_floor_ms, graph_ms, parse_args, smooth_flow, time_ms  # noqa: E402

import warped_fast as wf  # noqa: E402
from warped_fast import reference  # noqa: E402


def main():
    args = parse_args(__doc__.splitlines()[0], sizes=(128, 1024), features=(3000,))
    dev = args.device
    if not dev.startswith("cuda") or not torch.cuda.is_available():
        print("tune_gp_noise: needs a CUDA device; nothing to do")
        return
    c = 4
    reps = args.repeats or 20
    table = Table("gp_noise_tuning", dev)
    tag = f" [{os.environ['WARPED_FAST_BENCH_TAG']}]" if os.environ.get("WARPED_FAST_BENCH_TAG") else ""
    for j, shared in itertools.product(args.features, (False, True)):
        field = wf.RFFField.sample(
            wf.RFFConfig(channels=c, num_features=j, shared_features=shared), 0, device=dev
        )
        kernels = ("fma", "tensor_cores") if shared else ("fma",)
        for s in args.sizes[:1] if args.quick else args.sizes:
            # the pixel grid moved by a smooth flow, as noise warping composes it
            coords = wf.identity_coords(s, s, 1, device=dev) + smooth_flow(1, s, s, dev).permute(0, 2, 3, 1)
            params = (field.z, field.b, field.w)
            exact = reference.gp_noise(coords.double(), *(t.double() for t in params))  # on the GPU
            shape = f"1x{c}x{s}x{s} J={j} {'shared' if shared else 'indep'}"
            floor = cosine_floor_ms(dev, s * s * j * (1 if shared else c))
            for kernel in kernels:
                for split in (None, 1, 2, 4, 8):

                    def call(coords=coords):
                        return wf.gp_noise(coords, field.z, field.b, field.w)

                    label = f"{kernel} split {split or 'auto'}{tag}"
                    with (
                        wf.use_backend("cuda"),
                        wf.ops.value_checks(False),
                        wf.ops.gp_noise_cuda_kernel(kernel, split),
                    ):
                        try:
                            err = (call().double() - exact).abs().max().item()
                        except RuntimeError as e:  # a split this build's kernel does not take
                            print(f"{shape} {label}: not available ({e})")
                            continue
                        ms, timing = graph_ms(call, dev, reps), "graph replay"
                        if ms is None:  # capture failed: say so in the row
                            ms, timing = time_ms(call, dev, reps), "eager (graph capture failed)"
                    note = f"{timing}; max error {err:.1e}" + (f"; {ms / floor:.2f}x floor" if floor else "")
                    table.add("gp_noise", shape, label, ms, None, note)
    table.finish()


if __name__ == "__main__":
    main()
