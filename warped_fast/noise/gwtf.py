"""Go-with-the-Flow noise warping (Burgert, Xu, Li, et al., CVPR 2025, Algorithm 1).

Linear-time warping of white noise ``q`` with a per-pixel density (weight) ``w`` that records how much
of the original noise a pixel carries. One step, from the previous frame to the new one:

1. Contraction along the forward flow: each previous pixel ``a`` goes to the new pixel
   ``t(a) = round(a + f(a))`` (dropped if outside the frame). New pixels that receive at least one
   such particle are "covered".
2. Expansion from the backward flow: each new pixel ``d`` that is not covered takes the previous pixel
   ``e(d) = round(d + b(d))``; if that lies outside the frame, ``d`` gets fresh noise with weight 1.
3. Splitting (regaussianization): a previous pixel used by ``k`` edges (its contraction edge, if
   any, plus its expansion copies) gives each edge an independent N(0, 1) piece
   ``q / sqrt(k) + (Z_e - mean_edges(Z))`` (``sum(pieces) / sqrt(k) = q`` exactly) and weight
   ``w / k``.
4. Aggregation: a covered pixel ``q' = sum(w_i q_i) / sqrt(sum(w_i^2))``, ``w' = sum(w_i)``; an
   expanded pixel keeps its piece and weight. Then ``w' <- w' / mean(w')``.

Every output pixel is N(0, 1) and pixels are independent (pieces of one source are independent;
a weighted sum of independent unit Gaussians normalized by the weights' L2 norm is a unit Gaussian).
Exact under integer translation (one edge per pixel, ``k = 1``, ``w = 1``).

Simplifications against the authors' code (``noise_warp.py``, ``warp_xyωc``): the expansion source
is found with the backward flow given here (their code samples the forward flow at the new pixel
and negates it); rounding is ``floor(v + 1/2)``; out-of-frame contraction particles are dropped; the
sub-pixel offsets they can carry (``xy_mode``, off by default there) are not kept; the weight
normalization is ``w / mean(w)`` without their extra ``+ 1e-5`` and ``w ** 0.9999``; no internal
upsampling by default (their ``scale_factor``): ``upsample=s`` keeps the state on an s-times finer
grid (flows upsampled bilinearly and multiplied by s) and returns the density-weighted block sums
``sum(w q) / sqrt(sum(w^2))`` over each s x s block, as their code does.

Known limits: positions are rounded to whole pixels of the state's grid every frame and the
remainder is not carried, so at ``upsample=1`` a pan slower than half a pixel per frame does not
move the noise at all (it behaves like fixed noise), and any motion is quantized to whole pixels
per frame; ``upsample=s`` reduces the quantum to 1/s pixel at s^2 the cost. Contraction merges
noise (weighted), expansion splits it: where the flow stretches, the pattern is re-randomized;
occluded content is merged into the occluder; pixels nothing arrives at get fresh noise, but a
disoccluded pixel whose backward flow lands in the frame takes an expansion piece of the noise there
(often the occluder's), so it stays correlated with that noise.

GPU path: :mod:`warped_fast.triton.gwtf` (four linear passes, float32 atomics for the sums); CPU path:
the C++ kernel ``csrc/gwtf.cpp`` (the reference's order of summation, one task per channel:
deterministic, and the reference's result to float32 rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..ops import _cpu
from ..ops._checks import as_f32, check_int, value_checks_on
from ..ops._dispatch import register, select
from ..reference._bilinear import pixel_grid
from .base import NoiseWarper, check_cpu_kernel_frame, check_tensors, frame_shape, register_method

register("gwtf", ("triton", "cpu", "reference"))


@dataclass(frozen=True)
class GWTFConfig:
    """Options of ``gwtf``.

    Attributes:
        normalize_weights: divide the density by its mean after each step (as the authors' code).
        upsample: s, the state lives on an s-times finer grid (1: the noise grid itself).
    """

    normalize_weights: bool = True
    upsample: int = 1

    def __post_init__(self):
        if check_int("upsample", self.upsample, 1) > 16:
            raise ValueError(f"upsample: expected an int in [1, 16], got {self.upsample!r}")
        object.__setattr__(self, "upsample", int(self.upsample))  # a numpy integer stored as an int
        if not isinstance(self.normalize_weights, bool):
            raise TypeError(
                f"normalize_weights: expected a bool, got {type(self.normalize_weights).__name__}"
            )


def _round_target(flow: torch.Tensor):
    """``round(x + flow(x))`` as flat indices ``[H*W]`` (long) and its in-frame mask."""
    _, h, w = flow.shape
    xs, ys = pixel_grid(h, w, flow.device, torch.float32)
    tx = torch.floor(xs + flow[0] + 0.5)
    ty = torch.floor(ys + flow[1] + 0.5)
    ok = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    # int64 (float32 is inexact past 2^24), clamped first (targets out of frame are masked out anyway).
    idx = torch.where(ok, ty.clamp(0, h - 1).long() * w + tx.clamp(0, w - 1).long(), 0)
    return idx.reshape(-1), ok.reshape(-1)


def gwtf_transport_reference(
    q: torch.Tensor,
    weight: torch.Tensor,
    fwd: torch.Tensor,
    back: torch.Tensor,
    zc: torch.Tensor,
    ze: torch.Tensor,
    fresh: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Go-with-the-Flow step in PyTorch (vectorized scatter/gather); weights not yet normalized.

    Args:
        q: ``[C, H, W]`` previous noise; weight: ``[H, W]`` previous density (> 0).
        fwd: ``[2, H, W]`` previous -> new; back: ``[2, H, W]`` new -> previous.
        zc: ``[C, H, W]`` N(0, 1) for the contraction edge of each previous pixel.
        ze: ``[C, H, W]`` N(0, 1) for the expansion edge of each new pixel.
        fresh: ``[C, H, W]`` N(0, 1) for new pixels with no source.
    Returns:
        new noise ``[C, H, W]`` and new density ``[H, W]`` (float32).
    """
    c, h, w = q.shape
    n = h * w
    dev = q.device
    qf, wf_ = q.float().reshape(c, n), weight.float().reshape(n)
    zc, ze, fresh = zc.float().reshape(c, n), ze.float().reshape(c, n), fresh.float().reshape(c, n)
    tgt, t_ok = _round_target(fwd.float())
    covered = torch.zeros(n, dtype=torch.bool, device=dev)
    covered[tgt[t_ok]] = True
    src, e_ok = _round_target(back.float())
    e_ok = e_ok & ~covered
    k = t_ok.float()
    k.index_add_(0, src[e_ok], torch.ones_like(src[e_ok], dtype=torch.float32))
    zsum = zc * t_ok
    zsum.index_add_(1, src[e_ok], ze[:, e_ok])
    kk = k.clamp(min=1.0)
    base = qf / kk.sqrt()
    zbar = zsum / kk
    wpiece = wf_ / kk
    # Contraction pieces, scattered with their weights.
    piece_c = base + (zc - zbar)
    num = torch.zeros(c, n, device=dev)
    num.index_add_(1, tgt[t_ok], (wpiece * piece_c)[:, t_ok])
    den = torch.zeros(n, device=dev)
    den.index_add_(0, tgt[t_ok], (wpiece * wpiece)[t_ok])
    wsum = torch.zeros(n, device=dev)
    wsum.index_add_(0, tgt[t_ok], wpiece[t_ok])
    # Expansion pieces, gathered.
    piece_e = base.index_select(1, src) + (ze - zbar.index_select(1, src))
    out = torch.where(covered, num / torch.where(covered, den, 1.0).sqrt(), torch.where(e_ok, piece_e, fresh))
    w_out = torch.where(covered, wsum, torch.where(e_ok, wpiece.index_select(0, src), 1.0))
    return out.reshape(c, h, w), w_out.reshape(h, w)


def gwtf_transport(q, weight, fwd, back, zc, ze, fresh) -> tuple[torch.Tensor, torch.Tensor]:
    """One step (arguments as :func:`gwtf_transport_reference`), dispatched: Triton on GPU tensors (and
    on CPU under the interpreter when forced), the C++ kernel on CPU tensors (PyTorch where the compiled
    module is missing)."""
    c, h, w = frame_shape("q", q)
    check_tensors(q=(q, (c, h, w)), weight=(weight, (h, w)), fwd=(fwd, (2, h, w)), back=(back, (2, h, w)),
                  zc=(zc, (c, h, w)), ze=(ze, (c, h, w)), fresh=(fresh, (c, h, w)))  # fmt: skip
    if value_checks_on() and weight.numel() and not bool((weight > 0).all()):
        raise ValueError("weight: expected a density > 0 at every pixel (a zero weight divides by zero)")
    backend = select("gwtf", q.device.type)
    if backend == "triton":
        from ..triton import gwtf as tg

        return tg.gwtf_transport(q, weight, fwd, back, zc, ze, fresh)
    if backend == "cpu":
        check_cpu_kernel_frame("q", h, w)
        args = [as_f32(t) for t in (q, weight, fwd, back, zc, ze, fresh)]
        out, w_out = torch.empty_like(args[0]), torch.empty_like(args[1])
        _cpu.lib().gwtf_transport_cpu(
            *(_cpu.ptr(t) for t in (*args, out, w_out)), c, h, w, _cpu.threads(c * h * w)
        )  # fmt: skip
        return out, w_out
    return gwtf_transport_reference(q, weight, fwd, back, zc, ze, fresh)


@register_method("gwtf")
class GWTFWarp(NoiseWarper):
    """Go-with-the-Flow (Burgert et al., CVPR 2025): linear-time noise warping with a per-pixel
    density; contraction along the forward flow, expansion from the backward flow, fresh noise where
    nothing arrives.

    Needs both flows. Exact under integer translation. Options: :class:`GWTFConfig` (``upsample=s``
    warps on an s-times finer grid so slow motion is followed; the default 1 cannot follow a pan
    slower than half a pixel per frame). See the module docstring for the algorithm, the
    simplifications and the limits. The density of the state is available as ``weight``
    (``[s H, s W]``) after each step.
    """

    needs_forward_flow = True

    def __init__(self, normalize_weights: bool = True, upsample: int = 1):
        super().__init__()
        self.config = GWTFConfig(normalize_weights, upsample)

    def _reset(self) -> torch.Tensor:
        c, h, w = self.shape
        s = self.config.upsample
        self._noise = self.randn(c, h * s, w * s)
        self.weight = torch.ones(h * s, w * s, device=self.device)
        return self._output()

    def _output(self) -> torch.Tensor:
        s = self.config.upsample
        if s == 1:
            return self._noise
        c, h, w = self.shape
        num = (self._noise * self.weight).view(c, h, s, w, s).sum((2, 4))
        den = (self.weight * self.weight).view(h, s, w, s).sum((1, 3))
        return num / den.sqrt()

    def _flow(self, flow: torch.Tensor) -> torch.Tensor:
        s = self.config.upsample
        if s == 1:
            return flow
        return F.interpolate(flow[None], scale_factor=s, mode="bilinear", align_corners=False)[0] * s

    def _step(self, back, fwd) -> torch.Tensor:
        c, h, w = self._noise.shape
        zc, ze, fresh = self.randn(c, h, w), self.randn(c, h, w), self.randn(c, h, w)
        q, weight = gwtf_transport(self._noise, self.weight, self._flow(fwd), self._flow(back), zc, ze, fresh)
        self._noise = q
        self.weight = weight / weight.mean() if self.config.normalize_weights else weight
        return self._output()
