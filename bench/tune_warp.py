"""Sweep the Triton forward warp's launch choices (pixels per program x warps, cache hints) on the GPU.

For the warp + occlusion cases of bench_warp.py (smooth and random flow, 1x4x128x128 and 1x3x1024x1024):
every BLOCK in 256..2048 with 1 to 16 pixels per thread, the launcher's own choice (``auto``), ``auto``
with cache hints (``_WARP_FWD_HINTS``: flow loads / tap gathers eviction, store modifier). Each row:
CUDA-graph replay median, its ratio to the memory-bandwidth floor and to ``auto`` measured in the same
run, and the largest difference from ``auto``'s output (so a fast but wrong launch shows). The replays
reread the same inputs, partly from the L2; ``from HBM`` is the replay of calls that cycle through copies
of the inputs (common.cold_graph_ms), each reading its own from HBM. Needs CUDA.
"""

from __future__ import annotations

import contextlib
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
    parse_args,
    smooth_flow,
)

import warped_fast as wf  # noqa: E402

# (BLOCK pixels per program, num_warps): 1 to 16 pixels per thread
LAUNCHES = [(b, w) for b in (256, 512, 1024, 2048) for w in (2, 4, 8, 16) if 1 <= b // (32 * w) <= 16]
# (flow loads' eviction policy, tap gathers' eviction policy, stores' cache modifier), with auto's launch
HINTS = [
    ("", "", ""),
    ("evict_first", "", ""),
    ("", "", ".cs"),
    ("evict_first", "", ".cs"),
    ("evict_first", "evict_last", ".cs"),
    ("", "evict_last", ""),
]


def _launch(block: int | None, warps: int | None, hints: tuple[str, str, str] | None = None):
    """The forward warp launched with ``block`` pixels per program and ``warps`` warps (None: its own),
    with the cache ``hints`` (None: its own)."""
    from warped_fast.triton import warp as triton_warp

    stack = contextlib.ExitStack()
    if block is not None:
        stack.enter_context(
            mock.patch.object(triton_warp, "_warp_fwd_block", lambda hw, device: (block, warps))
        )
    if hints is not None:
        stack.enter_context(mock.patch.object(triton_warp, "_WARP_FWD_HINTS", hints))
    return stack


def main():
    args = parse_args(__doc__.splitlines()[0])
    dev = args.device
    if not dev.startswith("cuda") or not torch.cuda.is_available():
        print("tune_warp: needs a CUDA device; nothing to do")
        return
    reps = args.repeats or 30
    table = Table("warp_tuning", dev)
    shapes = [(1, 4, 128, 128), (1, 3, 1024, 1024)]
    for n, c, h, w in shapes[:1] if args.quick else shapes:
        g = torch.Generator(device=dev).manual_seed(0)
        img = torch.randn(n, c, h, w, device=dev, generator=g)
        smooth = smooth_flow(n, h, w, dev)
        rand = torch.randn(n, 2, h, w, device=dev, generator=g) * 3
        flows = {
            "smooth flow": (smooth, -smooth),
            "random flow": (rand, -rand + 0.1 * torch.randn(n, 2, h, w, device=dev, generator=g)),
        }
        floor = bandwidth_floor_ms(dev, n * h * w * (2 * c * 4 + 4 * 4 + 1))
        shape = f"{n}x{c}x{h}x{w}"
        for name, (fwd, back) in flows.items():

            def call(fwd=fwd, back=back):
                return wf.warp(img, fwd, back)

            with wf.use_backend("triton"), wf.ops.value_checks(False):
                ref_out, ref_valid = call()
                auto_ms = None
                runs = [
                    (None, None, None),
                    *((b, nw, None) for b, nw in LAUNCHES),
                    *((None, None, x) for x in HINTS),
                ]
                for block, warps, hints in runs:
                    with _launch(block, warps, hints):
                        out, valid = call()
                        err = (out - ref_out).abs().max().item()
                        flips = (valid != ref_valid).sum().item()
                        ms = graph_ms(call, dev, reps)
                        cold_ms = cold_graph_ms(wf.warp, (img, fwd, back), dev, reps)
                    if ms is None:
                        continue
                    auto_ms = auto_ms or ms
                    label = "auto" if block is None else f"BLOCK {block}, {warps} warps"
                    if hints is not None:
                        label += " " + "/".join(h or "-" for h in hints)
                    note = (
                        f"graph replay; {auto_ms / ms:.3f}x auto; max diff {err:.1e}, {flips} validity flips"
                    )
                    if floor:
                        note += f"; {ms / floor:.2f}x floor"
                    if cold_ms is not None:
                        note += "; " + cold_note(cold_ms, floor)
                    table.add(f"warp+occlusion ({name})", shape, label, ms, None, note)
    table.finish()


if __name__ == "__main__":
    main()
