"""Benchmark the guidance step: fused residual + norm + adjoint and fused Euler update, against the
unfused PyTorch reference (warp, mask, norm, autograd backward, Euler, guidance), same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import Table, graph_ms, graph_note, parse_args, time_ms  # noqa: E402

import warped_fast as wf  # noqa: E402
from warped_fast import reference  # noqa: E402
from warped_fast.ops._dispatch import available  # noqa: E402


def main():
    args = parse_args(__doc__.splitlines()[0])
    dev = args.device
    shapes = [(1, 4, 128, 128), (8, 4, 128, 128)]
    if args.quick:
        shapes = shapes[:1]
    table = Table("guidance", dev)
    reps = args.repeats or (5 if dev == "cpu" else 50)
    for n, c, h, w in shapes:
        g = torch.Generator(device=dev).manual_seed(0)
        u = torch.randn(n, c, h, w, device=dev, generator=g) * 10
        pred = torch.randn(n, c, h, w, device=dev, generator=g)
        prev = torch.randn(n, c, h, w, device=dev, generator=g)
        flow = torch.randn(n, 2, h, w, device=dev, generator=g) * 2
        mask = torch.rand(n, 1, h, w, device=dev, generator=g) > 0.1
        s = torch.full((n,), 10.0, device=dev)
        sn = torch.full((n,), 9.0, device=dev)

        def ref_step():
            _, gr = reference.guidance_grad(pred, prev, flow, mask)
            return reference.euler_guided_step(u, pred, gr, s, sn, 1.0)

        def fused_step():
            _, gr = wf.guidance_grad(pred, prev, flow, mask)
            return wf.euler_guided_step(u, pred, s, sn, gr, 1.0)

        shape = f"{n}x{c}x{h}x{w}"
        ref_ms = time_ms(ref_step, dev, reps)
        ref_g = graph_ms(ref_step, dev, reps)
        note = graph_note(ref_g)
        table.add("guidance step (loss, grad, Euler)", shape, "reference", ref_ms, ref_ms, note)
        for be in ("cuda", "triton", "cpu"):
            if not (available(be, dev.split(":")[0]) and be in wf.ops.OP_BACKENDS["guidance_residual"]):
                continue
            with wf.use_backend(be), wf.ops.value_checks(False):
                ms = time_ms(fused_step, dev, reps)
                g_ms = graph_ms(fused_step, dev, reps)
            note = graph_note(g_ms)
            if g_ms is not None and ref_g is not None:
                note += f", {ref_g / g_ms:.2f}x the reference's replay"
            table.add("guidance step (loss, grad, Euler)", shape, be, ms, ref_ms, note)
    table.finish()


if __name__ == "__main__":
    main()
