"""Benchmark gp_noise: every available backend against the chunked PyTorch reference, same run.

Shapes: the paper's 128x128x4 latent and larger frames, J = 3000, independent and shared features
(shared: on CUDA both the FMA and the tensor-core kernel).
On a GPU the table also shows the cosine-throughput floor (H*W*C*J cosines, or H*W*J shared, at
16 per SM per clock) and the ratio to it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import Table, cosine_floor_ms, graph_ms, graph_note, parse_args, time_ms  # noqa: E402

import warped_fast as wf  # noqa: E402
from warped_fast import reference  # noqa: E402
from warped_fast.ops import OP_BACKENDS  # noqa: E402
from warped_fast.ops._dispatch import available  # noqa: E402


def main():
    args = parse_args(__doc__.splitlines()[0])
    dev = args.device
    if dev == "cpu":
        sizes = [128, 256] if not args.quick else [128]
    else:
        sizes = [128, 1024] if not args.quick else [128]
    j, c = 3000, 4
    table = Table("gp_noise", dev)
    for shared in (False, True):
        field = wf.RFFField.sample(
            wf.RFFConfig(channels=c, num_features=j, shared_features=shared), 0, device=dev
        )
        for s in sizes:
            coords = wf.identity_coords(s, s, 1, device=dev)
            shape = f"1x{c}x{s}x{s} J={j} {'shared' if shared else 'indep'}"
            reps = args.repeats or (3 if dev == "cpu" else 20)
            ref_ms = time_ms(
                lambda coords=coords: reference.gp_noise(coords, field.z, field.b, field.w),
                dev,
                max(1, reps // 2 if s >= 1024 else reps),
                warmup=1,
            )
            table.add("gp_noise", shape, "reference", ref_ms, ref_ms)
            cos = s * s * j * (1 if shared else c)
            floor = cosine_floor_ms(dev, cos)
            runs = [(be, be, None) for be in OP_BACKENDS["gp_noise"] if be != "reference"]
            if shared:  # the tensor-core kernel of shared-feature fields
                runs.insert(1, ("cuda", "cuda (tensor cores)", "tensor_cores"))
            for be, label, kernel in runs:
                if not available(be, dev.split(":")[0]):
                    continue

                def call(coords=coords):
                    return wf.gp_noise(coords, field.z, field.b, field.w)

                with wf.use_backend(be), wf.ops.value_checks(False), wf.ops.gp_noise_cuda_kernel(kernel):
                    ms = time_ms(call, dev, reps)
                    g_ms = graph_ms(call, dev, reps)
                note = (
                    f"floor {floor:.4f} ms, {ms / floor:.2f}x floor"
                    if floor
                    else f"{cos / ms / 1e6:.2f} Gcos/s"
                )
                if g_ms is not None:
                    note += "; " + graph_note(g_ms, floor)
                table.add("gp_noise", shape, label, ms, ref_ms, note)
    table.finish()


if __name__ == "__main__":
    main()
