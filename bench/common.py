"""Shared benchmark helpers: device description, timing (median of repeats), table and CSV rows."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS_DIR = Path(os.environ.get("WARPED_FAST_BENCH_OUT", Path(__file__).parent / "results"))

# Per-device figures for the roofline floors (boost clock GHz, HBM TB/s); SM count comes from torch. The
# first key found in the device name wins: specific variants before the SXM parts' plain names.
_GPU_SPECS = {
    "H200 NVL": (1.785, 4.8),
    "H200": (1.98, 4.8),
    "H100 PCIe": (1.755, 2.0),
    "H100 NVL": (1.785, 3.9),
    "H100": (1.98, 3.35),
    "A100": (1.41, 2.0),
}
SFU_COS_PER_SM_PER_CLOCK = 16  # Hopper/Ampere special-function units


def _int_list(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(","))


def parse_args(
    description: str,
    sizes: tuple[int, ...] | None = None,
    features: tuple[int, ...] | None = None,
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
) -> argparse.Namespace:
    """The benchmarks' common options; ``sizes`` (the default frame sides) adds ``--sizes``, ``features``
    (the default feature counts J) ``--features``; ``extra(parser)`` adds a benchmark's own."""
    p = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(p)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats")
    p.add_argument("--repeats", type=int, default=None)
    for flag, default, what in (
        ("--sizes", sizes, "square frame sides"),
        ("--features", features, "feature counts J"),
    ):
        if default is not None:
            shown = ",".join(map(str, default))
            p.add_argument(
                flag, type=_int_list, default=default, help=f"{what}, comma-separated (default {shown})"
            )
    return p.parse_args()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def gpu_spec(device: str) -> tuple[float, float, int] | None:
    """(clock GHz, memory TB/s, SMs) of a known GPU, else None."""
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    sms = torch.cuda.get_device_properties(torch.device(device)).multi_processor_count
    for key, (ghz, tbs) in _GPU_SPECS.items():
        if key in name:
            return ghz, tbs, sms
    return None


def cosine_floor_ms(device: str, cosines: float) -> float | None:
    spec = gpu_spec(device)
    if spec is None:
        return None
    ghz, _, sms = spec
    return cosines / (SFU_COS_PER_SM_PER_CLOCK * sms * ghz * 1e9) * 1e3


def bandwidth_floor_ms(device: str, nbytes: float) -> float | None:
    spec = gpu_spec(device)
    return None if spec is None else nbytes / (spec[1] * 1e12) * 1e3


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _on(device: str):
    """The device current while timing (events and streams belong to the current device)."""
    return torch.cuda.device(torch.device(device)) if device.startswith("cuda") else contextlib.nullcontext()


# On the CPU a kernel's first calls run slower for a while (allocator and page faults settling: a C++ warp
# at 1x4x128x128 took 1.3, then 0.52 ms for four calls, then 0.40 ms): warm up for at least this long,
# then time at least this long, so a median of sub-millisecond calls is the steady state's.
CPU_WARMUP_MS, CPU_MIN_TIMED_MS, CPU_MAX_REPEATS = 50.0, 200.0, 2000


def time_ms(fn: Callable[[], object], device: str, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in ms (CUDA events on GPU) over ``repeats`` calls after ``warmup``; on
    the CPU, more of both for fast calls (:data:`CPU_WARMUP_MS`, :data:`CPU_MIN_TIMED_MS`)."""
    with _on(device):
        return _time_ms(fn, device, repeats, warmup)


def _time_ms(fn: Callable[[], object], device: str, repeats: int, warmup: int) -> float:
    cpu = not device.startswith("cuda")
    t0, n = time.perf_counter(), 0
    while n < warmup or (cpu and (time.perf_counter() - t0) * 1e3 < CPU_WARMUP_MS):
        fn()
        n += 1
    sync(device)
    times: list[float] = []
    while len(times) < repeats or (cpu and sum(times) < CPU_MIN_TIMED_MS and len(times) < CPU_MAX_REPEATS):
        if device.startswith("cuda"):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def graph_ms(fn: Callable[[], object], device: str, repeats: int, calls: int = 10) -> float | None:
    """Device time of one ``fn`` call without host overhead: ``calls`` calls captured in one CUDA graph,
    the median replay divided by ``calls``. None off CUDA or when ``fn`` cannot be captured."""
    if not device.startswith("cuda"):
        return None
    with _on(device):
        return _graph_ms(fn, device, repeats, calls)


def _graph_ms(fn: Callable[[], object], device: str, repeats: int, calls: int) -> float | None:
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
    except Exception as e:  # noqa: BLE001 - report, do not fail the benchmark
        print(f"(CUDA graph capture failed: {type(e).__name__}: {e})")
        return None
    return time_ms(graph.replay, device, repeats) / calls


def cold_graph_ms(call: Callable[..., object], args: tuple, device: str, repeats: int) -> float | None:
    """Device time of one ``call(*args)`` with its inputs in HBM, not L2: like :func:`graph_ms`, but the
    captured calls cycle through copies of the tensors in ``args``, enough copies to hold twice the L2
    (graph_ms's calls reread the same inputs, which may stay in the L2). None off CUDA."""
    if not device.startswith("cuda"):
        return None
    nbytes = sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    copies = max(2, min(512, -(-2 * l2 // max(nbytes, 1))))
    sets = [tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args) for _ in range(copies)]
    count = [0]

    def fn():
        count[0] += 1
        return call(*sets[count[0] % copies])

    with _on(device):
        # whole rounds: a replay's first call reads the set its predecessor's last call did not
        return _graph_ms(fn, device, repeats, copies * -(-10 // copies))


def graph_note(g_ms: float | None, floor: float | None = None) -> str:
    """The note "graph replay <ms>[, <ratio>x floor]"; empty when there is no replay time."""
    if g_ms is None:
        return ""
    return _timed_note("graph replay", g_ms, floor)


def cold_note(cold_ms: float | None, floor: float | None = None) -> str:
    """The note "from HBM <ms>[, <ratio>x floor]" of :func:`cold_graph_ms`; empty without a time."""
    return "" if cold_ms is None else _timed_note("from HBM", cold_ms, floor)


def _timed_note(what: str, ms: float, floor: float | None) -> str:
    return f"{what} {ms:.4f} ms" + (f", {ms / floor:.2f}x floor" if floor else "")


class Table:
    """Collects rows, appends each to ``results/<name>.csv`` as it comes (a run stopped by a time limit
    keeps the rows it measured) and prints an aligned table at the end."""

    COLUMNS = ["device", "case", "shape", "backend", "median_ms", "ratio_to_reference", "note"]

    def __init__(self, name: str, device: str):
        self.name, self.device, self.dev_name = name, device, device_name(device)
        self.rows: list[dict] = []
        self.path = RESULTS_DIR / f"{name}.csv"
        self.stamp = time.strftime("%Y-%m-%dT%H:%M:%S")  # one run's rows share it

    def add(
        self, case: str, shape: str, backend: str, ms: float, ref_ms: float | None, note: str = ""
    ) -> None:
        ratio = "" if ref_ms is None else f"{ref_ms / ms:.2f}x"
        row = dict(
            device=self.dev_name,
            case=case,
            shape=shape,
            backend=backend,
            median_ms=f"{ms:.4f}",
            ratio_to_reference=ratio,
            note=note,
        )
        self.rows.append(row)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["time", *self.COLUMNS])
            if new:
                w.writeheader()
            w.writerow({"time": self.stamp, **row})
        print(f"  {case} | {shape} | {backend}: {ms:.4f} ms {ratio}", flush=True)

    def finish(self) -> None:
        widths = {c: max(len(c), *(len(r[c]) for r in self.rows)) for c in self.COLUMNS} if self.rows else {}
        print(f"\n== {self.name} on {self.dev_name} ==")
        if not self.rows:
            print("(no rows)")
            return
        print("  ".join(c.ljust(widths[c]) for c in self.COLUMNS))
        for r in self.rows:
            print("  ".join(r[c].ljust(widths[c]) for c in self.COLUMNS))
        print(f"(rows appended to {self.path})")


def smooth_flow(n: int, h: int, w: int, dev: str) -> torch.Tensor:
    """``[n, 2, h, w]``: a flow like optical flow, a pan, a slight zoom and a smooth wave of a few pixels."""
    yy, xx = torch.meshgrid(
        torch.arange(h, device=dev, dtype=torch.float32),
        torch.arange(w, device=dev, dtype=torch.float32),
        indexing="ij",
    )
    fx = 2.3 + 0.01 * (xx - w / 2) + 1.5 * torch.sin(yy / 23.0)
    fy = -1.7 + 0.01 * (yy - h / 2) + 1.5 * torch.cos(xx / 31.0)
    return torch.stack([fx, fy])[None].expand(n, 2, h, w).contiguous()
