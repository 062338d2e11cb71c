"""GP noise warping of Warped Diffusion (Daras et al., NeurIPS 2024, section 3; method.md sections 2-3).

The noise is a function on the plane, an RBF Gaussian process sampled with random Fourier features
(:class:`~warped_fast.noise.rff.RFFField`). Each frame keeps a coordinate map ``X_j`` (the position of
each of its pixels in frame 0's coordinates): ``X_0 = id``, ``X_j(x) = X_{j-1}(x + b_j(x))`` with
``X_{j-1}`` sampled bilinearly and extrapolated linearly outside the frame
(:func:`warped_fast.compose_coords`), and ``u_j(x) = xi(X_j(x))`` with the same field for every frame
(:func:`warped_fast.gp_noise`). Coordinates are interpolated, never noise values, so the noise stays
exactly a GP sample at every sub-pixel position and outside the frame.

GPU path: both ops (``compose_coords``: Triton; ``gp_noise``: CUDA) have one; this module only
composes them. With ``cuda_graph=True`` the step on a CUDA device replays a captured CUDA graph (no
host time per op: for low-latency services).
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass

import torch

from ..ops import compose_coords, value_checks
from ..ops import occlusion_mask as _occlusion_mask
from ..ops._checks import value_checks_on
from ..reference._bilinear import pixel_grid
from .base import FRESH_COLUMNS, FRESH_GAP, FRESH_ORIGIN, NoiseWarper, fresh_offset, register_method
from .rff import RFFConfig, RFFField, identity_coords
from .sources import check_rff, rff_for

logger = logging.getLogger("warped_fast")
# Coordinates past 2^22 px are coarser than half a pixel in float32: the noise there is no longer exact.
COORD_LIMIT = 2.0**22


@dataclass(frozen=True)
class GPWarpConfig:
    """Options of ``gp``.

    Attributes:
        rff: RFF field settings (default :class:`RFFConfig`; channels come from the noise shape).
        occlusion: give pixels that fail the forward-backward check (and whose correspondence is
            inside the previous frame) fresh noise: the field at a far-away tile of the plane, which
            later frames carry on like the rest (:func:`compose_within_tiles`: each pixel's noise from
            one tile). Needs the forward flow. Off by default, as in the paper.
        sigma: scale of the noise (``u = sigma * xi``); 1 gives unit variance.
        cuda_graph: on a CUDA device, capture the step (compose_coords + gp_noise) in a CUDA graph at
            the second frame and replay it from then on: the device time without the host time of
            each op. Ignored off CUDA; not with ``occlusion`` (its fresh-noise offset changes per frame).
    """

    rff: RFFConfig | None = None
    occlusion: bool = False
    sigma: float = 1.0
    cuda_graph: bool = False

    def __post_init__(self):
        check_rff(self.rff)
        for name in ("occlusion", "cuda_graph"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {type(getattr(self, name)).__name__}")
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, numbers.Real):
            raise TypeError(f"sigma: expected a real number, got {type(self.sigma).__name__}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma: expected a finite value > 0, got {self.sigma!r}")
        if self.cuda_graph and self.occlusion:
            raise ValueError("cuda_graph: not available with occlusion=True (a per-frame offset)")


def occluded_pixels(back: torch.Tensor, fwd: torch.Tensor) -> torch.Tensor:
    """Pixels of the new frame whose backward correspondence lands inside the previous frame but fails
    the forward-backward check ``|b + f~|^2 > 0.01 (|b|^2 + |f~|^2) + 0.5`` (method section 3).

    Args:
        back: ``[2, H, W]`` new -> previous; fwd: ``[2, H, W]`` previous -> new.
    Returns:
        ``[H, W]`` bool.
    """
    _, h, w = back.shape
    bad = _occlusion_mask(back[None], fwd[None])[0, 0]
    xs, ys = pixel_grid(h, w, back.device, back.dtype)
    x, y = xs + back[0], ys + back[1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return bad & inside


def compose_within_tiles(
    coords: torch.Tensor, tiles: torch.Tensor, own: torch.Tensor, back: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`warped_fast.compose_coords` for a coordinate map made of several tiles of the plane (frame
    0's and the fresh-noise tiles of occluded pixels), such that a pixel's noise comes from one tile,
    never from coordinates between a tile and the frame.

    Each pixel carries its tile and ``own``, the share of its area the tile holds (1 inside a region;
    fractions along its boundary, which carry the boundary's sub-pixel position from frame to frame). A
    pixel whose bilinear footprint holds taps of several tiles takes the tile with the largest share of
    it (a tap counts its ``own`` for its tile and the rest for any other one) and follows that tile's
    nearest tap, ``X(q) + (x + b(x) - q)`` (exact for a translation); its new ``own`` is that share.
    Elsewhere the result is ``compose_coords``'. Resampling blurs the shares as it does an image: under
    sub-pixel motion a region a few pixels wide loses pixels at its edges over tens of frames (a region
    of 3 x 4 pixels panned 0.3 px per frame: 8 of its 12 pixels after about 15 frames; panned 0.5 px per
    frame, the worst case: none from frame 19 on), which then take the coordinates of a tile around it.

    Args:
        coords: ``[1, H, W, 2]`` the previous frame's map.
        tiles: ``[H, W]`` int64, its tile per pixel (0: frame 0's plane).
        own: ``[H, W]`` float, the share of each pixel its tile holds (1 where a tile begins).
        back: ``[2, H, W]`` backward flow (new -> previous).
    Returns:
        The new frame's ``coords``, ``tiles`` and ``own``.
    """
    composed = compose_coords(coords, back[None])
    _, h, w = back.shape
    xs, ys = pixel_grid(h, w, back.device, back.dtype)
    px, py = xs + back[0], ys + back[1]
    # compose_coords' cell, clamp(floor(p), 0, max(size - 2, 0)); its taps with a zero weight do not count
    cx = px.floor().clamp(0, max(w - 2, 0))
    cy = py.floor().clamp(0, max(h - 2, 0))
    x0, y0 = cx.long(), cy.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    tx = torch.stack((x0, x1, x0, x1))
    ty = torch.stack((y0, y0, y1, y1))
    fx, fy = px - cx, py - cy
    used = torch.stack(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)) != 0
    # each candidate tile's share of p's footprint, bilinear within the frame (clamped at its border)
    gx, gy = px.clamp(0, w - 1) - cx, py.clamp(0, h - 1) - cy
    inner = torch.stack(((1 - gx) * (1 - gy), gx * (1 - gy), (1 - gx) * gy, gx * gy))
    labels, held = tiles[ty, tx], own[ty, tx]
    same = labels[:, None] == labels[None, :]  # [candidate, tap, H, W]
    share = (inner[None] * torch.where(same, held[None], 1 - held[None])).sum(1)
    pick = torch.where(used, share, -torch.inf).argmax(0, keepdim=True)
    tile, own = labels.gather(0, pick)[0], share.gather(0, pick)[0].clamp(0, 1)
    mixed = (used & (labels != tile)).any(0)
    # that tile's nearest tap
    dist = (tx - px) ** 2 + (ty - py) ** 2
    q = torch.where(used & (labels == tile), dist, torch.inf).argmin(0, keepdim=True)
    qx, qy = tx.gather(0, q)[0], ty.gather(0, q)[0]
    stepped = coords[0, qy, qx] + torch.stack((px - qx, py - qy), -1)
    return torch.where(mixed[None, :, :, None], stepped[None], composed), tile, own


@register_method("gp")
class GPWarp(NoiseWarper):
    """Warped GP noise (Daras et al., NeurIPS 2024): ``u_j(x) = sigma * xi(X_j(x))``, with the RFF field
    ``xi`` drawn once and the coordinate map ``X_j`` composed through the backward flows.

    Exact: the value at ``x`` in frame j equals the field at the composed position, for integer and
    sub-pixel motion alike, also where the correspondence leaves the frame (the coordinate map is
    extrapolated linearly and the field is defined on the whole plane).

    Options: see :class:`GPWarpConfig` (``rff``, ``occlusion``, ``sigma``, ``cuda_graph``).

    Known limits: disocclusions without ``occlusion=True`` reuse the noise of whatever the composed
    coordinates point at (the paper lists occlusion as a failure case); composing coordinates across
    motion boundaries interpolates them (pixels there get noise from positions between the two
    sides). The noise is spatially correlated (RBF kernel, lengthscale ~0.64 px at the paper's
    setting), so a model must be fine-tuned on GP noise. A draw of J features spans at most J
    dimensions per channel: ample at 128x128 latents with J = 3000, visibly structured on much larger
    grids. Fresh noise for occluded pixels lives at far-away tiles of the plane (float32 phases there
    lose a little precision on very long clips). Backward flows that disagree near the frame's edges
    (per-pixel jitter, unreliable flow on tiny frames) compound through the linear extrapolation outside
    the frame, frame after frame: a warning says when the map leaves the range where float32 keeps it
    exact (``COORD_LIMIT``), an error when it is no longer finite (with value checks on).
    """

    def __init__(
        self,
        rff: RFFConfig | None = None,
        occlusion: bool = False,
        sigma: float = 1.0,
        cuda_graph: bool = False,
    ):
        super().__init__()
        self.config = GPWarpConfig(rff, occlusion, sigma, cuda_graph)
        self._graph = None  # (CUDAGraph, static back-flow input, static noise output) once captured
        self._warned = False  # the coordinate range warning, once per clip
        self._warned_tiles = False  # the tiles' warning (occlusion), once per clip

    @property
    def uses_forward_flow(self) -> bool:
        return self.config.occlusion

    def _reset(self) -> torch.Tensor:
        c, h, w = self.shape
        self.field = RFFField.sample(rff_for(self.config.rff, c), self.cpu_gen, device=self.device)
        self.coords = identity_coords(h, w, device=self.device)
        # with occlusion: each pixel's tile of the plane (0, or 1 + a fresh tile) and the share it holds
        self.tiles = torch.zeros(h, w, dtype=torch.long, device=self.device)
        self.own = torch.ones(h, w, device=self.device)
        self._graph, self._warned, self._warned_tiles = None, False, False
        return self._eval()

    def _eval(self) -> torch.Tensor:
        out = self.field(self.coords)[0]
        return out if self.config.sigma == 1.0 else out * self.config.sigma

    def _step(self, back, fwd) -> torch.Tensor:
        c, h, w = self.shape
        if self.config.cuda_graph and self.device.type == "cuda" and self.frame > 1:
            return self._graph_step(back)
        if self.config.occlusion:
            coords, tiles, own = compose_within_tiles(self.coords, self.tiles, self.own, back)
            occ = occluded_pixels(back, fwd)
            fresh = identity_coords(h, w, device=self.device, offset=fresh_offset(self.frame - 1, h, w))
            self.coords = torch.where(occ[None, :, :, None], fresh, coords)
            self.tiles = torch.where(occ, self.frame, tiles)
            self.own = torch.where(occ, 1.0, own)
        else:
            self.coords = compose_coords(self.coords, back[None])
        if value_checks_on():
            self._check_coords()
        return self._eval()

    def _check_coords(self) -> None:
        """The composed map stays finite (a clear error, not the noise op's), and a warning, once per clip,
        where it leaves the float32 range in which the noise is exact: flows that disagree near the frame's
        edges compound through the linear extrapolation outside it (method section 3)."""
        top = float(self.coords.abs().max())
        if not math.isfinite(top) or top > COORD_LIMIT and not self._warned:
            _, h, w = self.shape
            what = (
                f"noise: the composed coordinate map of frame {self.frame} reaches {top:.3g} px ({h}x{w} frames): "
                "backward flows that disagree near the frame's edges compound through the linear extrapolation "
                "outside it; smoother flows (RAFT from local weights, larger frames) avoid it"
            )
            if not math.isfinite(top):
                raise ValueError(what.replace(f"reaches {top:.3g} px", "is no longer finite"))
            logger.warning("%s; the noise there is no longer exact", what)
            self._warned = True
        if self.config.occlusion and not self._warned_tiles:
            self._check_tiles()

    def _check_tiles(self) -> None:
        """A warning, once per clip, where a pixel's coordinates enter another fresh-noise tile's territory
        (its box and half the gap around it): extrapolated that far (a long clip's motion, such as a pan
        continuing after a disocclusion), two regions may take the same noise."""
        _, h, w = self.shape
        x, y = self.coords[0, ..., 0], self.coords[0, ..., 1]
        col = torch.floor((x - FRESH_ORIGIN + FRESH_GAP / 2) / (w + FRESH_GAP))
        row = torch.floor((y - FRESH_ORIGIN + FRESH_GAP / 2) / (h + FRESH_GAP))
        cell = (row * FRESH_COLUMNS + col + 1).clamp(0, 2**62).long()  # a tile's value in self.tiles
        used = torch.zeros(self.frame + 2, dtype=torch.bool, device=self.device)
        used[self.tiles.flatten()] = True  # the tiles some pixel holds now
        grid = (col >= 0) & (col < FRESH_COLUMNS) & (row >= 0)
        crossed = grid & used[cell.clamp(max=self.frame + 1)] & (cell != self.tiles)
        if bool(crossed.any()):
            logger.warning(
                "noise: %d pixels of frame %d have coordinates in another fresh-noise tile's part of the "
                "plane: the occlusion-aware GP noise of a clip this long may repeat between regions; "
                "split the clip",
                int(crossed.sum()), self.frame,
            )  # fmt: skip
            self._warned_tiles = True

    def _graph_step(self, back: torch.Tensor) -> torch.Tensor:
        """The step as a CUDA-graph replay; captured on first use (frame 2: frame 1 ran eagerly, which
        compiled and warmed up the kernels). The coordinate map is updated in place by the graph."""
        if self._graph is None:
            flow_in = back.clone()
            graph = torch.cuda.CUDAGraph()
            with value_checks(False), torch.cuda.graph(graph):  # no host syncs while capturing
                self.coords.copy_(compose_coords(self.coords, flow_in[None]))
                noise = self._eval()
            self._graph = (graph, flow_in, noise)
        graph, flow_in, noise = self._graph
        flow_in.copy_(back)
        graph.replay()
        return noise.clone()  # the graph's output buffer is overwritten by the next replay
