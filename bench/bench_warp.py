"""Benchmark the warp family: warp + occlusion check, its adjoint (splat), composition of coordinates.

Every available backend against the PyTorch reference in one run; on a known GPU the note gives the
memory-bandwidth floor (bytes read and written once at peak HBM bandwidth) and the ratio to it, for
the CUDA-graph replay of repeated calls (``graph replay``: their inputs may stay in the L2) and of calls
each reading its own copy of the inputs from HBM (``from HBM``: the floor's premise). On
CUDA the forward warp also runs its Triton channel-tile path (``triton, channel tile``: every channel's
taps loaded as one tile), which is not the default until measured faster.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import (  # noqa: E402
    Table,
    bandwidth_floor_ms,
    cold_graph_ms,
    cold_note,
    graph_ms,
    graph_note,
    parse_args,
    smooth_flow,
    time_ms,
)

import warped_fast as wf  # noqa: E402
from warped_fast import reference  # noqa: E402
from warped_fast.ops import OP_BACKENDS, _eager  # noqa: E402
from warped_fast.ops._dispatch import available  # noqa: E402


def _cases(n, c, h, w, dev):
    g = torch.Generator(device=dev).manual_seed(0)
    smooth = smooth_flow(n, h, w, dev)
    smooth_back = -smooth  # made once: the timed calls run the warp alone
    img = torch.randn(n, c, h, w, device=dev, generator=g)
    flow = torch.randn(n, 2, h, w, device=dev, generator=g) * 3
    back = -flow + 0.1 * torch.randn(n, 2, h, w, device=dev, generator=g)
    cot = torch.randn(n, c, h, w, device=dev, generator=g)
    coords = wf.identity_coords(h, w, n, device=dev)
    px, f32 = n * h * w, 4
    splat = functools.partial(_eager.call, "warp_image_grad")  # as guidance_grad calls it
    return [
        # (case, public fn, its arguments, reference fn, op, bytes moved at least once). Random per-pixel
        # flows scatter the bilinear taps (cache-bound); optical flow is smooth, so neighbouring taps
        # share lines.
        ("warp+occlusion (smooth flow)", wf.warp, (img, smooth, smooth_back), reference.warp, "warp",
         px * (2 * c * f32 + 4 * f32 + 1)),
        ("warp+occlusion (random flow)", wf.warp, (img, flow, back), reference.warp, "warp",
         px * (2 * c * f32 + 4 * f32 + 1)),
        ("warp splat (adjoint)", splat, (cot, flow, None), reference.warp_image_grad, "warp_image_grad",
         px * (2 * c * f32 + 2 * f32)),
        ("compose_coords", wf.compose_coords, (coords, flow), reference.compose_coords, "compose_coords",
         px * 6 * f32),
    ]  # fmt: skip


def _channel_tile(most: int):
    """The Triton forward warp's channel-tile path for up to ``most`` channels (0: the channel loop)."""
    if not most:
        return contextlib.nullcontext()
    from warped_fast.triton import warp as triton_warp

    return mock.patch.object(triton_warp, "_CHANNEL_TILE_MAX", most)


def main():
    args = parse_args(__doc__.splitlines()[0])
    dev = args.device
    shapes = [(1, 4, 128, 128), (1, 3, 1024, 1024)]
    if args.quick:
        shapes = shapes[:1]
    table = Table("warp", dev)
    reps = args.repeats or (5 if dev == "cpu" else 50)
    for n, c, h, w in shapes:
        shape = f"{n}x{c}x{h}x{w}"
        for case, call, call_args, ref_call, op, nbytes in _cases(n, c, h, w, dev):
            fn = functools.partial(call, *call_args)
            with wf.use_backend("reference"):
                ref_ms = time_ms(functools.partial(ref_call, *call_args), dev, reps)
            table.add(case, shape, "reference", ref_ms, ref_ms)
            floor = bandwidth_floor_ms(dev, nbytes)
            for be in OP_BACKENDS[op]:
                if be == "reference" or not available(be, dev.split(":")[0]):
                    continue
                tiles = (0, 8) if (op, be) == ("warp", "triton") and dev.startswith("cuda") else (0,)
                for tile in tiles:
                    with wf.use_backend(be), wf.ops.value_checks(False), _channel_tile(tile):
                        ms = time_ms(fn, dev, reps)
                        g_ms = graph_ms(fn, dev, reps)
                        cold_ms = cold_graph_ms(call, call_args, dev, reps)
                    note = f"floor {floor:.4f} ms, {ms / floor:.2f}x floor" if floor else ""
                    if g_ms is not None:
                        note += "; " + graph_note(g_ms, floor)
                    if cold_ms is not None:
                        note += "; " + cold_note(cold_ms, floor)
                    table.add(case, shape, be + (", channel tile" if tile else ""), ms, ref_ms, note)
    table.finish()


if __name__ == "__main__":
    main()
