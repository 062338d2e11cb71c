"""Benchmark every noise method per frame: one ``NoiseWarper.step`` at 128x128x4 and 1024x1024x4.

Runs on the CPU and, when a GPU is visible, on the GPU in the same run (``--device`` picks one).
Each row is the median time of one step (flows given; random draws included) with the default
backend of the device: for hiwyn, infres and gwtf the C++ kernels on CPU tensors and the Triton
kernels on CUDA tensors; for gp and bilinear the ops' kernels (gp: ``compose_coords`` + ``gp_noise``;
bilinear: ``warp``). The note gives the published A100 figure at 1024x1024 where one exists (Go-with-the-Flow
paper, one table) and, for ``gp``, the cosine floor of the chip (H*W*C*J cosines, or H*W*J with
shared features, at 16 per SM per clock). On CUDA two more ``gp`` rows: the tensor-core gp_noise
kernel, and the warper's own CUDA-graph step (``cuda_graph=True``, eager calls). Each case also runs on
the PyTorch reference ops (``reference`` rows, fewer repeats), the base of the ratio column, where the
default backend is another one. A second table times the transports of hiwyn, infres and gwtf alone
(the kernels on fixed inputs, without the step's random draws) against their references.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import Table, cosine_floor_ms, graph_ms, graph_note, parse_args, time_ms  # noqa: E402

import warped_fast as wf  # noqa: E402
from warped_fast.noise import RFFConfig, make_noise_warper, pixel_corners  # noqa: E402
from warped_fast.noise.gwtf import gwtf_transport  # noqa: E402
from warped_fast.noise.hiwyn import hiwyn_transport  # noqa: E402
from warped_fast.noise.infres import infres_transport  # noqa: E402

# Published per-frame times at 1024x1024 on an A100 (Go-with-the-Flow, CVPR 2025, one table;
# Warped Diffusion's own RFF warp from its paper).
PUBLISHED_A100_MS = {"hiwyn": 55.2, "infres": 2.61, "gwtf": 2.14, "bilinear": 4.41, "gp": 39.0}
J = 3000


def _flows(h: int, w: int, device: str):
    """A zoom + rotation + pan (exact inverse pair): both expansion and contraction everywhere."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    cx, cy, s, a, t = (w - 1) / 2, (h - 1) / 2, 0.97, math.radians(1.5), (0.37, -0.21)
    ca, sa = math.cos(a), math.sin(a)
    x, y = xs - cx, ys - cy
    back = torch.stack((cx + s * (ca * x - sa * y) + t[0] - xs, cy + s * (sa * x + ca * y) + t[1] - ys))
    qx, qy = xs - cx - t[0], ys - cy - t[1]
    fwd = torch.stack((cx + (ca * qx + sa * qy) / s - xs, cy + (-sa * qx + ca * qy) / s - ys))
    return back.float().to(device), fwd.float().to(device)


def _cases(quick_cpu_big: bool, cuda: bool):
    """(label, method, options, gp_noise CUDA kernel)."""
    cases = [
        ("fixed", "fixed", {}, None),
        ("resample", "resample", {}, None),
        ("nearest (white)", "nearest", {}, None),
        ("bilinear (white)", "bilinear", {}, None),
        ("hiwyn k=8", "hiwyn", {}, None),
        ("infres", "infres", {}, None),
        ("gwtf", "gwtf", {}, None),
        ("gwtf 4x grid", "gwtf", {"upsample": 4}, None),
        (f"gp J={J} shared", "gp", {"rff": RFFConfig(num_features=J, shared_features=True)}, None),
    ]
    if cuda:
        shared = {"rff": RFFConfig(num_features=J, shared_features=True)}
        cases.append((f"gp J={J} shared, tensor cores", "gp", shared, "tensor_cores"))
        # the library's captured step: eager calls that replay a CUDA graph
        cases.append((f"gp J={J} shared, cuda_graph", "gp", {**shared, "cuda_graph": True}, None))
    if not quick_cpu_big:
        cases.append((f"gp J={J} independent", "gp", {"rff": RFFConfig(num_features=J)}, None))
    return cases


def _label(backend: str) -> str:
    """A noise op's backend as a row says it: "reference" runs its PyTorch implementation, "cpu" a C++ kernel."""
    return {"reference": "pytorch", "cpu": "C++"}.get(backend, backend)


def _note(method: str, label: str, dev: str, c: int, h: int, w: int, ms: float, g_ms: float | None) -> str:
    parts = []
    if method == "gp":
        shared = "shared" in label
        cos = h * w * J * (1 if shared else c)
        floor = cosine_floor_ms(dev, cos)
        if floor:
            parts.append(f"cosine floor {floor:.3f} ms ({cos:.2e} cos), {ms / floor:.2f}x floor")
        else:
            parts.append(f"{cos:.2e} cosines")
        if g_ms is not None:
            parts.append(graph_note(g_ms, floor))
    pub = PUBLISHED_A100_MS.get(method) if "grid" not in label else None  # published: native grid only
    if pub is not None and (h, w) == (1024, 1024):
        ratio = f", {pub / ms:.1f}x faster" if dev.startswith("cuda") else ""
        parts.append(f"published A100 {pub} ms{ratio}")
    return "; ".join(parts)


def run(dev: str, quick: bool, repeats: int | None) -> Table:
    table = Table("noise_warp", dev)
    shapes = [(4, 128, 128)] if quick else [(4, 128, 128), (4, 1024, 1024)]
    for c, h, w in shapes:
        big_cpu = dev == "cpu" and h >= 1024
        reps = repeats or (1 if big_cpu else 5 if dev == "cpu" else 30)
        warm = 1 if big_cpu else 2
        back, fwd = _flows(h, w, dev)
        ref_times = {}  # reference time per (method, field): the tensor-core and graph rows share one
        for label, method, opts, kernel in _cases(quick_cpu_big=big_cpu, cuda=dev.startswith("cuda")):
            warper = make_noise_warper(method, **opts)
            warper.reset((c, h, w), 0, device=dev)
            needs_fwd = warper.uses_forward_flow
            step = lambda: warper.step(back, fwd if needs_fwd else None)  # noqa: E731
            with wf.ops.value_checks(False), wf.ops.gp_noise_cuda_kernel(kernel):
                ms = time_ms(step, dev, reps, warmup=warm)
                # the step's device time without host overhead (gp: compose_coords + gp_noise)
                g_ms = graph_ms(step, dev, reps) if method == "gp" and not opts.get("cuda_graph") else None
            ops = wf.backend_info(dev.split(":")[0])["ops"]
            # The same step on the PyTorch reference ops, where the default backend is another one (on the
            # CPU every method but the tensor-op ones has a kernel; gp's and hiwyn's references at
            # 1024x1024 there take minutes).
            fast = method in ("bilinear", "infres", "gwtf") or (method in ("gp", "hiwyn") and not big_cpu)
            fast = fast or dev.startswith("cuda")
            ref_key = (method, repr(opts.get("rff")), opts.get("upsample"))
            if fast and ref_key not in ref_times:
                warper.reset((c, h, w), 0, device=dev)
                with wf.use_backend("reference"), wf.ops.value_checks(False):
                    ref_times[ref_key] = time_ms(step, dev, 1 if big_cpu else 3, warmup=1)
                table.add(label, f"{c}x{h}x{w}", "reference", ref_times[ref_key], ref_times[ref_key])
            ref_ms = ref_times.get(ref_key)
            backend = ops.get(method, "torch ops")
            backend = _label(backend)
            if method == "bilinear":
                backend = f"warp:{ops['warp']}"
            if method == "gp":
                backend = f"compose_coords:{ops['compose_coords']} gp_noise:{ops['gp_noise']}"
                backend += f" ({kernel.replace('_', ' ')})" if kernel else ""
            table.add(
                label, f"{c}x{h}x{w}", backend, ms, ref_ms, _note(method, label, dev, c, h, w, ms, g_ms)
            )
            if dev.startswith("cuda"):
                torch.cuda.empty_cache()
        if big_cpu:
            table.add(
                f"gp J={J} independent",
                f"{c}x{h}x{w}",
                "-",
                float("nan"),
                None,
                "skipped on CPU (~1.3e10 cosines)",
            )
    return table


def _transport_args(method: str, c: int, h: int, w: int, dev: str) -> tuple:
    """Fixed inputs of one transport step: the previous noise, the flows of :func:`_flows`, the draws."""
    g = torch.Generator(device=dev).manual_seed(0)
    back, fwd = _flows(h, w, dev)
    randn = lambda *shape: torch.randn(*shape, generator=g, device=dev)  # noqa: E731
    prev, fresh = randn(c, h, w), randn(c, h, w)
    if method == "hiwyn":
        return prev, pixel_corners(back), randn(c, h, w, 8, 8), fresh
    if method == "infres":
        return prev, fwd, randn(c, 4, h, w), fresh
    return prev, torch.ones(h, w, device=dev), fwd, back, randn(c, h, w), randn(c, h, w), fresh


def run_transports(dev: str, quick: bool, repeats: int | None) -> Table:
    """The transports alone (the kernels, without the draws of a step): default backend and reference."""
    table = Table("noise_transport", dev)
    fns = {"hiwyn": hiwyn_transport, "infres": infres_transport, "gwtf": gwtf_transport}
    shapes = [(4, 128, 128)] if quick else [(4, 128, 128), (4, 1024, 1024)]
    for c, h, w in shapes:
        big_cpu = dev == "cpu" and h >= 1024
        for method, fn in fns.items():
            inputs = _transport_args(method, c, h, w, dev)
            step = lambda: fn(*inputs)  # noqa: E731
            ref_ms = None
            if not (big_cpu and method == "hiwyn"):  # the reference takes about 15 s there
                with wf.use_backend("reference"), wf.ops.value_checks(False):
                    ref_ms = time_ms(step, dev, 1 if big_cpu else 3, warmup=1)
                table.add(f"{method} transport", f"{c}x{h}x{w}", "reference", ref_ms, ref_ms)
            backend = wf.backend_info(dev.split(":")[0])["ops"][method]
            with wf.ops.value_checks(False):
                ms = time_ms(step, dev, repeats or (3 if big_cpu else 10 if dev == "cpu" else 30))
            table.add(f"{method} transport", f"{c}x{h}x{w}", _label(backend), ms, ref_ms)
    return table


def main():
    args = parse_args(__doc__.splitlines()[0])
    explicit = any(a == "--device" or a.startswith("--device=") for a in sys.argv[1:])
    devices = [args.device] if explicit else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    tables = [
        t
        for dev in devices
        for t in (run(dev, args.quick, args.repeats), run_transports(dev, args.quick, args.repeats))
    ]
    for t in tables:
        t.finish()


if __name__ == "__main__":
    main()
