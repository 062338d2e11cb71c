"""The video sampler (Algorithm 1): frame 0 sampled plainly with its predictions stored at every step;
frame j >= 1 guided at every step toward frame j-1's prediction at the same step, warped.

Frame schedules (method section 5):
- sequential: frame by frame; keeps the previous frame's predictions at every step (S x [C, H, W]);
- wavefront: at tick k every frame j <= k runs its step k - j in ONE batched denoiser call (in chunks of
  ``max_batch``, halved for the rest of the job whenever a chunk runs out of device memory). Frame j at
  step t needs only frame j-1 at step t, computed one tick earlier, so the result equals the sequential
  order (deterministic ODE) and only one prediction per active frame is kept.
Both stream: frames go in one at a time and finished frames come out in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from tqdm.auto import tqdm

from ..ops import euler_guided_step, occlusion_mask
from ..ops._checks import check_finite, check_int
from .guidance import GuidanceConfig, predict_and_guide
from .schedules import SigmaSchedule, work_dtype

logger = logging.getLogger("warped_fast")
# torch >= 2.5 names it at the top level; torch.cuda's is the same class
_OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# Allocation failures some libraries raise as a plain RuntimeError (cuBLAS / cuDNN workspaces, the CPU
# allocator): a smaller batch may fit as well
_ALLOC_FAILED = ("out of memory", "ALLOC_FAILED", "can't allocate memory")


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, _OutOfMemory) or (
        isinstance(e, RuntimeError) and any(s in str(e) for s in _ALLOC_FAILED)
    )


@dataclass(frozen=True)
class VideoSamplerConfig:
    """Attributes:
    frame_schedule: "sequential" or "wavefront".
    max_batch: largest batch of frames per denoiser call (wavefront); a batch that runs out of device
        memory is retried in halves, and the smaller size kept for the rest of the job.
    guidance: the guidance settings.
    progress: show a tqdm bar.
    """

    frame_schedule: Literal["sequential", "wavefront"] = "sequential"
    max_batch: int = 8
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    progress: bool = False

    def __post_init__(self):
        if self.frame_schedule not in ("sequential", "wavefront"):
            raise ValueError(
                f"frame_schedule: expected 'sequential' or 'wavefront', got {self.frame_schedule!r}"
            )
        object.__setattr__(self, "max_batch", check_int("max_batch", self.max_batch, 1))  # frozen


@dataclass
class FrameInput:
    """One input frame of the sampler.

    Attributes:
        noise: ``[C, H, W]`` unit-variance noise of this frame (e.g. warped GP noise).
        cond: ``[Cc, H, W]`` concatenated conditioning (mask + masked latent, LR latent) or None.
        fwd_flow: ``[2, H, W]`` flow previous -> this frame on the previous frame's grid (None for frame 0).
        back_flow: ``[2, H, W]`` flow this -> previous frame on this frame's grid (occlusion check).
    """

    noise: torch.Tensor
    cond: torch.Tensor | None = None
    fwd_flow: torch.Tensor | None = None
    back_flow: torch.Tensor | None = None


@dataclass
class _Active:
    index: int
    u: torch.Tensor
    cond: torch.Tensor | None
    flow: torch.Tensor | None
    mask: torch.Tensor | None
    step: int = 0


# callback(frame_index, step, u_next [C, H, W], D [C, H, W])
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


class VideoSampler:
    """Samples a video with equivariance self-guidance.

    Args:
        denoiser: x0-predictor ``D(u [B, C, H, W], sigma [B], cond [B, Cc, H, W] | None)``.
        schedule: the sigma schedule (descending, ending at 0).
        config: frame schedule, batch size and guidance settings.
        callback_on_step_end: optional ``callback(frame, step, u, D)``.
    Attributes:
        losses: per frame of the current (or last) :meth:`stream`, the guidance loss at each guided
            step (for diagnostics; a new stream starts it afresh).
    """

    def __init__(
        self,
        denoiser,
        schedule: SigmaSchedule,
        config: VideoSamplerConfig | None = None,
        callback_on_step_end: StepCallback | None = None,
    ):
        self.denoiser, self.schedule = denoiser, schedule
        self.config = config or VideoSamplerConfig()
        self.callback = callback_on_step_end
        self._losses: dict[int, list[float]] = {}
        self._loss_log: list[tuple[list[int], torch.Tensor]] = []  # (frames, losses [G]) not yet read
        self._sigmas: tuple[torch.Tensor, torch.Tensor] | None = None  # (schedule.sigmas, their copy in use)
        self._clip: tuple | None = None  # (noise shape, cond shape or None) of the clip's first frame
        self.batch_limit = self.config.max_batch  # wavefront: lowered where a batch runs out of memory
        if hasattr(denoiser, "set_schedule"):
            denoiser.set_schedule(schedule)

    def set_schedule(self, schedule: SigmaSchedule) -> None:
        """Replace the schedule by one of as many steps (e.g. a resolution-dependent one, once the first
        frame's size is known); before a stream's first frame."""
        if schedule.num_steps != self.schedule.num_steps:
            raise ValueError(
                f"schedule: {schedule.num_steps} steps, the sampler's has {self.schedule.num_steps}"
            )
        self.schedule = schedule
        if hasattr(self.denoiser, "set_schedule"):
            self.denoiser.set_schedule(schedule)

    # -- helpers ---------------------------------------------------------------------------------

    def _admit(self, index: int, f: FrameInput) -> _Active:
        if not isinstance(f, FrameInput):
            raise TypeError(f"frames[{index}]: expected a FrameInput, got {type(f).__name__}")
        if f.noise.dim() != 3:
            raise ValueError(f"frames[{index}].noise: expected [C, H, W], got {list(f.noise.shape)}")
        _, h, w = f.noise.shape
        here = (tuple(f.noise.shape), None if f.cond is None else tuple(f.cond.shape))
        first = self._clip
        if first is None:
            self._clip = here
        elif here != first:  # one clip: every frame's noise and conditioning alike
            raise ValueError(
                f"frames[{index}]: noise {list(here[0])} and cond {here[1] and list(here[1])}, but the clip's "
                f"first frame has noise {list(first[0])} and cond {first[1] and list(first[1])}"
            )
        flow = mask = None
        if index > 0:
            if f.fwd_flow is None or f.fwd_flow.shape != (2, h, w):
                got = None if f.fwd_flow is None else list(f.fwd_flow.shape)
                raise ValueError(f"frames[{index}].fwd_flow: expected [2, {h}, {w}], got {got}")
            check_finite(f"frames[{index}].fwd_flow", f.fwd_flow)
            flow = f.fwd_flow[None].to(f.noise.device, work_dtype(f.noise.dtype))
            if self.config.guidance.occlusion:
                if f.back_flow is None or f.back_flow.shape != (2, h, w):
                    raise ValueError(f"frames[{index}].back_flow: expected [2, {h}, {w}] (occlusion=True)")
                mask = ~occlusion_mask(flow, f.back_flow[None].to(flow))
        cond = None if f.cond is None else f.cond[None]
        return _Active(index, f.noise[None] * self.schedule.sigma_max, cond, flow, mask)

    def _tick(self, batch: list[_Active], prev: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """One step for each frame in ``batch`` (one denoiser call); returns their predictions."""
        return self._commit(batch, *self._advance(batch, prev))

    def _advance(self, batch: list[_Active], prev: dict[int, torch.Tensor]):
        """The step's work for ``batch``, changing nothing: (next states ``[B, C, H, W]``, predictions,
        the guided frames, their losses or None)."""
        gcfg = self.config.guidance
        u = torch.cat([a.u for a in batch])
        sig = self._sigmas_on(u.device, work_dtype(u.dtype))  # indexed there: no host copy per tick
        s = torch.stack([sig[a.step] for a in batch])
        sn = torch.stack([sig[a.step + 1] for a in batch])
        cond = None if batch[0].cond is None else torch.cat([a.cond for a in batch])
        guided = [a.index > 0 and gcfg.active(a.step) for a in batch]
        g_items = [a for a, gi in zip(batch, guided, strict=True) if gi]
        prev_pred = torch.cat([prev[a.index - 1] for a in g_items]) if g_items else None
        flow = torch.cat([a.flow for a in g_items]) if g_items else None
        mask = None
        if g_items and gcfg.occlusion:
            mask = torch.cat([a.mask for a in g_items])
        d, g, loss = predict_and_guide(self.denoiser, u, s, cond, guided, prev_pred, flow, mask, gcfg)
        if g is not None and hasattr(self.denoiser, "guidance_weight"):  # a flow model's coordinates
            g = g * self.denoiser.guidance_weight(s, sn, gcfg.mode).to(g.dtype).view(-1, 1, 1, 1)
        return euler_guided_step(u, d, s, sn, g, gcfg.lam), d, g_items, loss

    def _commit(self, batch, u_next, d, g_items, loss) -> dict[int, torch.Tensor]:
        """Moves ``batch``'s frames to their next states (all of them, then the callbacks) and logs the
        losses; returns the predictions."""
        out, steps = {}, [a.step for a in batch]
        for i, a in enumerate(batch):
            a.u = u_next[i : i + 1]
            out[a.index] = d[i : i + 1]
            a.step += 1
        if loss is not None:  # read back when `losses` is read (or every 1024 ticks): no sync per tick
            self._loss_log.append(([a.index for a in g_items], loss.detach()))
            if len(self._loss_log) >= 1024:
                self._read_losses()
        if self.callback is not None:
            for i, a in enumerate(batch):
                self.callback(a.index, steps[i], a.u[0], d[i])
        return out

    def _tick_in_chunks(
        self, active: list[_Active], prev: dict[int, torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        """:meth:`_tick` over ``active`` in chunks of at most ``batch_limit`` frames. A chunk whose step runs
        out of device memory has changed nothing (the frames move only once their step is done), so it is
        run again in halves; ``batch_limit`` keeps the smaller size. Out of memory in a callback is raised."""
        out: dict[int, torch.Tensor] = {}
        i = 0
        while i < len(active):
            n = min(self.batch_limit, len(active) - i)
            chunk = active[i : i + n]
            try:
                result = self._advance(chunk, prev)
            except RuntimeError as e:  # torch's OutOfMemoryError is one
                if n == 1 or not _out_of_memory(e):
                    raise
                result = None
            if result is None:  # out of the except block: the failed attempt's tensors are released
                self.batch_limit = (n + 1) // 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                logger.warning(
                    "wavefront: %d frames per denoiser call ran out of device memory; now at most %d",
                    n,
                    self.batch_limit,
                )
                continue
            out.update(self._commit(chunk, *result))
            i += n
        return out

    def _sigmas_on(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The schedule's sigmas ``[S + 1]`` in ``dtype`` on ``device``: one blocking copy per schedule,
        device and dtype, which any stream may read after."""
        src, sig = self._sigmas if self._sigmas is not None else (None, None)
        if src is not self.schedule.sigmas or sig.device != device or sig.dtype != dtype:
            sig = self.schedule.sigmas.to(device, dtype)
            self._sigmas = (self.schedule.sigmas, sig)
        return sig

    @property
    def losses(self) -> dict[int, list[float]]:
        """Per frame of the current (or last) :meth:`stream`, the guidance loss at each guided step."""
        self._read_losses()
        return self._losses

    @losses.setter
    def losses(self, value: dict[int, list[float]]) -> None:
        self._losses, self._loss_log = dict(value), []

    def pop_losses(self, frame: int) -> list[float]:
        """Frame ``frame``'s guidance losses (one per guided step), no longer kept (a live stream)."""
        self._read_losses()
        return self._losses.pop(frame, [])

    def _read_losses(self) -> None:
        """Moves the logged device losses into ``_losses`` (one device-to-host copy)."""
        if self._loss_log:
            values = torch.cat([v.reshape(-1) for _, v in self._loss_log]).tolist()
            frames = [i for idx, _ in self._loss_log for i in idx]
            for i, v in zip(frames, values, strict=True):
                self._losses.setdefault(i, []).append(v)
            self._loss_log = []

    # -- schedules -------------------------------------------------------------------------------

    def stream(
        self,
        frames: Iterable[FrameInput],
        start_index: int = 0,
        prev_predictions: list[torch.Tensor] | None = None,
    ) -> Iterator[torch.Tensor]:
        """Consume frames one at a time; yield finished frames ``[C, H, W]`` in order.

        Args:
            frames: the frames from ``start_index`` on.
            start_index: index of the first frame (to resume a clip).
            prev_predictions: when resuming, frame ``start_index - 1``'s predictions at every step
                (``S`` tensors ``[C, H, W]``), as the callback saw them.
        """
        check_int("start_index", start_index, 0)
        if (
            start_index > 0
            and prev_predictions is not None
            and len(prev_predictions) != self.schedule.num_steps
        ):
            raise ValueError(
                f"prev_predictions: expected {self.schedule.num_steps} steps, got {len(prev_predictions)}"
            )
        if start_index > 0 and prev_predictions is None and self.config.guidance.mode != "off":
            raise ValueError("prev_predictions: required to resume a guided clip after frame 0")
        prev = None if prev_predictions is None else [p.reshape(1, *p.shape[-3:]) for p in prev_predictions]
        return self._stream(frames, start_index, prev)  # the arguments checked at the call, not at next()

    def _stream(self, frames, start_index: int, prev) -> Iterator[torch.Tensor]:
        self.losses = {}
        self._clip = None
        if self.config.frame_schedule == "sequential":
            yield from self._sequential(frames, start_index, prev)
        else:
            yield from self._wavefront(frames, start_index, prev)

    def sample(self, frames: Iterable[FrameInput]) -> torch.Tensor:
        """All frames at once: ``[T, C, H, W]``."""
        out = list(self.stream(frames))
        if not out:
            raise ValueError("frames: expected at least one frame")
        return torch.stack(out)

    def _sequential(self, frames, start: int, prev_store) -> Iterator[torch.Tensor]:
        steps = self.schedule.num_steps
        bar = tqdm(desc="frames", disable=not self.config.progress, unit="frame")
        for j, f in enumerate(frames, start):
            a = self._admit(j, f)
            store = []
            for t in range(steps):
                prev = {j - 1: prev_store[t]} if prev_store is not None else {}
                store.append(self._tick([a], prev)[j])
            prev_store = store
            bar.update(1)
            yield a.u[0]
        bar.close()

    def _wavefront(self, frames, start: int, prev_store) -> Iterator[torch.Tensor]:
        steps = self.schedule.num_steps
        it = iter(frames)
        active: list[_Active] = []
        prev: dict[int, torch.Tensor] = {}
        j, exhausted, tick = start, False, 0
        bar = tqdm(desc="wavefront ticks", disable=not self.config.progress, unit="tick")
        while True:
            if not exhausted:
                f = next(it, None)
                if f is None:
                    exhausted = True
                else:
                    active.append(self._admit(j, f))
                    j += 1
            if not active:
                break
            if prev_store is not None and tick < steps:  # resuming: frame start-1 at step `tick`
                prev[start - 1] = prev_store[tick]
            tick += 1
            prev = self._tick_in_chunks(active, prev)
            bar.update(1)
            while active and active[0].step == steps:  # the oldest frames finish first
                yield active.pop(0).u[0].clone()  # not a view keeping the tick's whole batch alive
        bar.close()
