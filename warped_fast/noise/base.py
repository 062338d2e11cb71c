"""One interface for every noise method: a stateful :class:`NoiseWarper` stepped frame by frame.

``reset(shape, generator, device)`` returns frame 0's noise ``[C, H, W]``; each ``step(back_flow,
fwd_flow)`` returns the next frame's noise from the flows between the previous frame and the new one
(``back_flow``: new -> previous on the new frame's grid; ``fwd_flow``: previous -> new on the previous
frame's grid; (dx, dy) in pixels of the noise grid). Memory stays constant over a clip.
:func:`warp_noise_video` runs a whole clip; :func:`make_noise_warper` builds a warper by name.

Randomness: every draw comes from the generator given to ``reset`` (a ``torch.Generator`` or an int
seed): same seed, same noise on the same device. Small draws (the RFF field of the GP methods) are made
on the CPU, so GP noise is the same on every device; large per-frame draws (white noise, sub-pixel
noise) are made on the noise's device from a generator seeded by the first one.
"""

from __future__ import annotations

import abc
import inspect
import logging
import numbers
from typing import ClassVar

import torch

from ..ops._checks import as_f32, check_finite  # check_finite honours value_checks()

logger = logging.getLogger("warped_fast")

__all__ = [
    "METHODS",
    "NoiseWarper",
    "fresh_offset",
    "make_noise_warper",
    "register_method",
    "warp_noise_video",
]

# name -> NoiseWarper subclass; filled by the method modules (imported by warped_fast.noise).
METHODS: dict[str, type[NoiseWarper]] = {}


def register_method(name: str):
    """Class decorator: register a :class:`NoiseWarper` subclass under ``name``."""

    def deco(cls):
        cls.method = name
        METHODS[name] = cls
        return cls

    return deco


# Far-away tiles of the plane where GP-based methods evaluate fresh noise (method section 3: "the
# same GP evaluated at a far-away offset of the plane"). Project choice: tile t of a 16-column grid
# starting at (FRESH_ORIGIN, FRESH_ORIGIN), with a 256-pixel gap, far beyond any coordinate a clip's
# flow reaches from the frame. Phases stay accurate in float32 (|z| * 1e5 px ~ 3e5 rad: ~0.03 rad
# rounding at the very last tiles of very long clips).
FRESH_ORIGIN = 16384.0
FRESH_GAP = 256.0
FRESH_COLUMNS = 16
# Mixed into the device generator's seed so its stream differs from the CPU generator's own draws.
_DEVICE_SEED_SALT = 0x2545F4914F6CDD1D


def fresh_offset(index: int, h: int, w: int) -> tuple[float, float]:
    """Offset (x, y) in pixels of fresh-noise tile ``index >= 0`` for ``h x w`` frames."""
    if index < 0:
        raise ValueError(f"index: expected >= 0, got {index}")
    col, row = index % FRESH_COLUMNS, index // FRESH_COLUMNS
    return FRESH_ORIGIN + col * (w + FRESH_GAP), FRESH_ORIGIN + row * (h + FRESH_GAP)


def check_generator(generator) -> None:
    """A ``torch.Generator``, an int seed of 64 bits or None, else an error naming ``generator``."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, bool) or not isinstance(generator, numbers.Integral):
        raise TypeError(
            f"generator: expected a torch.Generator, an int seed or None, got {type(generator).__name__}"
        )
    if not -(2**63) <= int(generator) < 2**64:
        raise ValueError(f"generator: a seed must fit in 64 bits, got {int(generator)}")


def _cpu_generator(generator) -> torch.Generator:
    check_generator(generator)
    if isinstance(generator, torch.Generator):
        if generator.device.type == "cpu":
            return generator
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        return torch.Generator().manual_seed(seed)
    return torch.Generator().manual_seed(0 if generator is None else int(generator))


def _device_generator(cpu_gen: torch.Generator, device: torch.device) -> torch.Generator:
    """The device generator, seeded from ``cpu_gen``'s state without advancing it: the draws made on
    the CPU afterwards (the RFF field) are the same whatever the device."""
    if device.type == "cpu":
        return cpu_gen
    return torch.Generator(device=device).manual_seed(_device_seed(cpu_gen))


def _device_seed(cpu_gen: torch.Generator) -> int:
    """A seed drawn from a copy of ``cpu_gen``'s state (``cpu_gen`` itself does not advance)."""
    return fork_seed(cpu_gen) ^ _DEVICE_SEED_SALT


def fork_seed(generator: torch.Generator) -> int:
    """A seed in [0, 2^62) drawn from a copy of ``generator``'s state, on its device (``generator`` itself
    does not advance)."""
    fork = torch.Generator(device=generator.device)
    fork.set_state(generator.get_state())
    return int(torch.randint(0, 2**62, (1,), generator=fork, device=generator.device).item())


def _check_shape(shape) -> tuple[int, int, int]:
    if (
        not isinstance(shape, (tuple, list, torch.Size))
        or len(shape) != 3
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise ValueError(f"shape: expected (C, H, W) with positive ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def _check_flow(name: str, flow, h: int, w: int, device: torch.device) -> torch.Tensor:
    check_tensors(device, **{name: (flow, (2, h, w))})
    check_finite(name, flow)
    # Noise is sampled, not differentiated: a flow that carries gradients would chain every frame's
    # graph into the warper's state (memory growing over the clip).
    return as_f32(flow.detach())


def frame_shape(name: str, t) -> tuple[int, int, int]:
    """``(C, H, W)`` of a ``[C, H, W]`` tensor argument, else a clear error."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 3:
        raise ValueError(f"{name}: expected shape [C, H, W], got {list(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty frame [C, H, W], got {list(t.shape)}")
    return tuple(t.shape)


def check_cpu_kernel_frame(name: str, h: int, w: int, sub: int = 1) -> None:
    """The C++ transports' frame limits: pixel (or sub-pixel, ``sub`` per side) indices exact in float32
    along each side (at most 2^24) and flat pixel indices in int32."""
    if max(h, w) * sub > 2**24 or h * w >= 2**31:
        per = f" x {sub} sub-pixels" if sub > 1 else ""
        raise ValueError(
            f"{name}: frame too large for the CPU kernel: {h} x {w}{per} (at most 2^24 per side, "
            "2^31 - 1 pixels)"
        )


def check_tensors(device: torch.device | None = None, **named: tuple[torch.Tensor, tuple[int, ...]]) -> None:
    """Each argument ``name=(tensor, shape)``: a floating-point tensor of that shape, all on ``device``
    (None: on one device, the first one's)."""
    for name, (t, shape) in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name}: expected shape {list(shape)}, got {list(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
        device = t.device if device is None else device
        if t.device != device:
            raise ValueError(f"{name}: expected a tensor on {device}, got {t.device}")


class NoiseWarper(abc.ABC):
    """Produces the noise of a clip frame by frame (abstract).

    Subclasses implement :meth:`_reset` and :meth:`_step`; the public :meth:`reset` / :meth:`step`
    validate the inputs. After :meth:`reset`, the attributes ``shape`` ``(C, H, W)``, ``device``,
    ``frame`` (index of the last frame produced), ``cpu_gen`` and ``gen`` (the CPU and device
    generators) are set.
    """

    method: ClassVar[str] = ""
    needs_forward_flow: ClassVar[bool] = False

    def __init__(self):
        self.shape: tuple[int, int, int] | None = None
        self.device: torch.device | None = None
        self.frame = -1

    # -- public -------------------------------------------------------------------------------------

    def reset(
        self,
        shape: tuple[int, int, int],
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Start a clip and return frame 0's noise ``[C, H, W]`` float32 (unit variance).

        Args:
            shape: ``(C, H, W)`` of the noise.
            generator: a ``torch.Generator`` or an int seed (None: seed 0). A CPU generator for noise
                on another device seeds that device's generator without advancing (so the GP field is
                the same on every device): give each clip its own seed there.
            device: where the noise lives (default: the CPU, or the generator's device).
        Returns:
            A tensor the caller owns (never the warper's state).
        """
        shape = _check_shape(shape)
        if device is None and isinstance(generator, torch.Generator):
            device = generator.device
        device = torch.device("cpu" if device is None else device)
        if device.type == "cpu":  # CPU tensors report "cpu" whatever index was asked ("cpu:0")
            device = torch.device("cpu")
        elif device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        # generators first: a bad one (or device) raises before any state changes
        cpu_gen = _cpu_generator(generator)
        if isinstance(generator, torch.Generator) and generator.device.type == device.type:
            gen = generator
        else:
            gen = _device_generator(cpu_gen, device)
        self.shape, self.device, self.cpu_gen, self.gen = shape, device, cpu_gen, gen
        self.frame = 0
        out = self._reset()
        return self._finish(out)

    def step(self, back_flow: torch.Tensor, fwd_flow: torch.Tensor | None = None) -> torch.Tensor:
        """Return the next frame's noise ``[C, H, W]`` float32.

        Args:
            back_flow: ``[2, H, W]`` flow new frame -> previous frame (on the new frame's grid).
            fwd_flow: ``[2, H, W]`` flow previous frame -> new frame (on the previous frame's grid);
                required when :attr:`uses_forward_flow` (the method's ``needs_forward_flow``, or an
                option such as gp's ``occlusion``).
        """
        return self._checked_step(back_flow, fwd_flow, ("back_flow", "fwd_flow"))

    def _checked_step(self, back_flow, fwd_flow, names: tuple[str, str]) -> torch.Tensor:
        """:meth:`step`, its errors naming the flows ``names`` (the caller's arguments)."""
        if self.shape is None:
            raise RuntimeError(f"{type(self).__name__}: call reset(shape, generator) before step()")
        _, h, w = self.shape
        back = _check_flow(names[0], back_flow, h, w, self.device)
        fwd = None
        if fwd_flow is not None:
            fwd = _check_flow(names[1], fwd_flow, h, w, self.device)
        elif self.uses_forward_flow:
            raise ValueError(
                f"{names[1]}: the {self.method!r} method needs the forward flow (previous -> new frame)"
            )
        # a step that fails leaves the warper as it was (frame count and random stream), so a caller
        # that catches the error and goes on gets the frames of a run without the failed step
        frame, gen_state = self.frame, self.gen.get_state()
        self.frame += 1
        try:
            return self._finish(self._step(back, fwd))
        except BaseException:
            self.frame = frame
            self.gen.set_state(gen_state)
            raise

    @property
    def uses_forward_flow(self) -> bool:
        """Whether :meth:`step` needs ``fwd_flow`` with the current options."""
        return self.needs_forward_flow

    # -- helpers for subclasses -----------------------------------------------------------------------

    def randn(self, *size: int) -> torch.Tensor:
        """Standard normal float32 on the noise's device from the warper's generator."""
        return torch.randn(*size, generator=self.gen, device=self.device, dtype=torch.float32)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        assert out.shape == self.shape, (out.shape, self.shape)
        out = as_f32(out)
        # The caller owns what it gets: a copy where the result is the warper's own state (the next step
        # starts from it), so that scaling the noise in place does not change later frames.
        ptr = out.untyped_storage().data_ptr()
        if any(
            isinstance(v, torch.Tensor) and v.untyped_storage().data_ptr() == ptr for v in vars(self).values()
        ):
            out = out.clone()
        return out

    @abc.abstractmethod
    def _reset(self) -> torch.Tensor: ...

    @abc.abstractmethod
    def _step(self, back: torch.Tensor, fwd: torch.Tensor | None) -> torch.Tensor: ...

    def __repr__(self) -> str:
        cfg = getattr(self, "config", None)
        return f"{type(self).__name__}({cfg!r})" if cfg is not None else f"{type(self).__name__}()"


def make_noise_warper(method: str, **options) -> NoiseWarper:
    """Build the warper of ``method`` with its options.

    Methods: ``"gp"``, ``"fixed"``, ``"resample"``, ``"nearest"``, ``"bilinear"``, ``"hiwyn"``,
    ``"infres"``, ``"gwtf"``; see each class's docstring (``METHODS[name]``) for its options.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    cls = METHODS[method]
    known = [n for n in inspect.signature(cls).parameters if n != "self"]
    for name in options:
        if name not in known:
            raise ValueError(f"{name}: not an option of the {method!r} method; its options are {known}")
    return cls(**options)


def warp_noise_video(
    method: str,
    shape: tuple[int, int, int],
    back_flows: torch.Tensor,
    fwd_flows: torch.Tensor | None = None,
    generator: torch.Generator | int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    **options,
) -> torch.Tensor:
    """The noise of a whole clip, ``[T, C, H, W]`` float32.

    Args:
        method: a name of :data:`METHODS`.
        shape: ``(C, H, W)``.
        back_flows: ``[T-1, 2, H, W]``; entry j is the flow frame j+1 -> frame j.
        fwd_flows: ``[T-1, 2, H, W]``; entry j is the flow frame j -> frame j+1 (methods that need it).
        generator: a ``torch.Generator`` or an int seed.
        device: default: the device of ``back_flows``.
        progress: show a tqdm bar over frames.
        **options: passed to the method (see :func:`make_noise_warper`).
    """
    c, h, w = _check_shape(shape)
    if not isinstance(back_flows, torch.Tensor) or back_flows.dim() != 4 or back_flows.shape[1:] != (2, h, w):
        got = list(back_flows.shape) if isinstance(back_flows, torch.Tensor) else type(back_flows).__name__
        raise ValueError(f"back_flows: expected shape [T-1, 2, {h}, {w}], got {got}")
    if fwd_flows is not None and (
        not isinstance(fwd_flows, torch.Tensor) or fwd_flows.shape != back_flows.shape
    ):
        got = list(fwd_flows.shape) if isinstance(fwd_flows, torch.Tensor) else type(fwd_flows).__name__
        raise ValueError(f"fwd_flows: expected shape {list(back_flows.shape)}, got {got}")
    device = torch.device(device) if device is not None else back_flows.device
    warper = make_noise_warper(method, **options)
    if fwd_flows is None and warper.uses_forward_flow and back_flows.shape[0] > 0:
        raise ValueError(f"fwd_flows: the {method!r} method needs the forward flows (frame j -> j+1)")
    t = back_flows.shape[0] + 1
    out = torch.empty(t, c, h, w, dtype=torch.float32, device=device)
    out[0] = warper.reset((c, h, w), generator, device)
    frames = range(1, t)
    if progress:
        from tqdm.auto import tqdm

        frames = tqdm(frames, desc=f"noise ({method})")
    for j in frames:
        fwd = None if fwd_flows is None else fwd_flows[j - 1].to(device)
        names = (f"back_flows[{j - 1}]", f"fwd_flows[{j - 1}]")
        out[j] = warper._checked_step(back_flows[j - 1].to(device), fwd, names)
    return out
