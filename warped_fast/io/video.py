"""Reading and writing videos: mp4/gif/webm files (PyAV through imageio), images (an animated or
multi-page one is a video), folders of frames, lists of PIL images, arrays and tensors. Frames are
``[T, 3, H, W]`` float32 in [0, 1]; alpha is dropped, grey is repeated to RGB, 16-bit images are read at
8 bits."""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..ops._checks import OVERSHOOT, check_int, check_real, check_unit_range

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif"}
logger = logging.getLogger("warped_fast")
MAX_FPS = 1e4  # frame rates at and above it are not a video's (a container's time base read as one)
MIN_FPS = 1e-3  # a frame per 17 minutes; far lower rates overflow the encoders' time bases
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def _to_frames(a, channels_last: bool | None = None) -> torch.Tensor:
    """Array-likes to ``[T, 3, H, W]`` float32 in [0, 1]. ``channels_last`` says the layout (files and
    images: ``[T, H, W, C]`` or grey ``[T, H, W]``); None reads it from the shape, for user arrays: three
    dimensions are one frame, ``[H, W, C]`` with C in (1, 3, 4) or (a torch tensor) ``[C, H, W]``, else
    grey frames ``[T, H, W]`` (a numpy clip of 3 grey frames is that, not one channels-first image);
    four are ``[T, H, W, C]`` when the last has 1, 3 or 4 entries and the second not, ``[T, C, H, W]``
    when the second has and the last not. Where both could be channels (a frame 1, 3 or
    4 pixels high, as ``[T, 4, 8, 3]``), a torch tensor is read channels first, as torch lays out
    images, and anything else (numpy, nested lists) channels last, as numpy and imageio do."""
    torch_layout = isinstance(a, torch.Tensor)
    t = torch.as_tensor(np.asarray(a)) if not torch_layout else a
    if channels_last:
        t = t[..., None] if t.dim() == 3 else t
    elif t.dim() == 3:  # one frame [H, W, C] or (torch) [C, H, W], else grey frames [T, H, W]
        one = t.shape[-1] in (1, 3, 4) or (torch_layout and t.shape[0] in (1, 3, 4))
        t = t[None] if one else t[:, None]
    if channels_last is None and t.dim() == 4 and t.shape[-1] in (1, 3, 4):
        channels_last = t.shape[1] not in (1, 3, 4) or not torch_layout
    if t.dim() != 4:
        raise ValueError(f"video: expected [T, H, W, C] or [T, C, H, W] frames, got shape {list(t.shape)}")
    if channels_last:
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] == 4:
        t = t[:, :3]
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.shape[1] != 3:
        raise ValueError(f"video: expected 1, 3 or 4 channels, got shape {list(t.shape)}")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.dtype == torch.bool:
        t = t.float()
    elif not t.is_floating_point():
        raise ValueError(f"video: {t.dtype} frames; expected uint8 (0..255), bool or float in [0, 1]")
    else:
        t = t.float()
        if t.numel() and not torch.isfinite(t).all():
            raise ValueError("video: frames hold NaN or infinite values")
        if t.numel() and (t.min() < -1e-3 or t.max() > 1 + 1e-3):
            raise ValueError(
                f"video: float frames must be in [0, 1], got range [{t.min():.3f}, {t.max():.3f}]"
            )
    if t.shape[0] == 0:
        raise ValueError("video: zero frames")
    return t.contiguous()


def _stack_frames(frames: list):
    """A list of frames (arrays or tensors of one shape) stacked; frames of different shapes are an error
    naming the first that differs."""
    if not frames:
        raise ValueError("video: zero frames")
    first = tuple(frames[0].shape)
    for i, f in enumerate(frames):
        if tuple(f.shape) != first:
            raise ValueError(
                f"video: frame {i} has shape {list(f.shape)}, frame 0 {list(first)}: frames must be one size"
            )
    return torch.stack(frames) if isinstance(frames[0], torch.Tensor) else np.stack(frames)


def read_video(source, max_frames: int | None = None, start: int = 0, step: int = 1) -> torch.Tensor:
    """Read a video from a path (video file or folder of images), a list of image paths (one frame each,
    as a folder's images), a list of PIL images, arrays or tensors, an array or a tensor.

    Args:
        source: see above. Arrays and tensors: ``[T, C, H, W]``, ``[T, H, W, C]`` (C = 1, 3 or 4; a
            fourth channel, alpha, is dropped), grey ``[T, H, W]`` or one frame; uint8 (0..255), bool or
            float in [0, 1]. Where the shape leaves the channel axis open (frames 1, 3 or 4 pixels
            high), tensors are read channels first and numpy arrays channels last.
        max_frames, start, step: frame selection: frames ``start, start + step, ...``, at most
            ``max_frames`` of them. A folder's images are taken in natural order (``f2`` before ``f10``),
            hidden files (``.name``) left out.
    Returns:
        ``[T, 3, H, W]`` float32 in [0, 1].
    """
    _check_selection(max_frames, start, step)
    if isinstance(source, (str, os.PathLike)):
        arrays = list(_decode_path(_existing(source), max_frames, start, step))
        return _to_frames(_stack_frames(arrays), channels_last=True)
    if isinstance(source, (list, tuple)):
        if source and all(isinstance(p, (str, os.PathLike)) for p in source):  # image files: as a folder's
            files = [_existing(p) for p in source]
            not_images = [f.name for f in files if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES]
            if not_images:
                raise ValueError(
                    f"video: a list of paths takes image files, one frame each; not: {not_images[:3]}"
                )
            files = files[start::step][:max_frames]
            if not files:
                raise ValueError(
                    f"video: no frames selected (start={start}, step={step}, max_frames={max_frames})"
                )
            return _to_frames(np.stack(list(_decode_folder(files))), channels_last=True)
        source = source[start::step][:max_frames]
        if not source:
            raise ValueError("video: zero frames")
        if all(hasattr(im, "convert") for im in source):  # PIL images: [H, W, 3] arrays
            return _to_frames(
                _stack_frames([np.asarray(im.convert("RGB")) for im in source]), channels_last=True
            )
        if all(isinstance(im, torch.Tensor) for im in source):  # tensors keep torch's layout
            return _to_frames(_stack_frames(list(source)))
        return _to_frames(_stack_frames([np.asarray(im) for im in source]))
    frames = _to_frames(source)[start::step][:max_frames]
    if frames.shape[0] == 0:
        raise ValueError(f"video: no frames selected (start={start}, step={step}, max_frames={max_frames})")
    return frames.contiguous()


def iter_video(
    source, max_frames: int | None = None, start: int = 0, step: int = 1
) -> Iterator[torch.Tensor]:
    """The frames :func:`read_video` returns, one at a time: ``[3, H, W]`` float32 in [0, 1]. A video
    file or a folder of images is decoded as the frames are consumed, so a long video never needs to fit
    in memory; other sources are read whole first. Bad arguments and a missing path raise here."""
    _check_selection(max_frames, start, step)
    if isinstance(source, (str, os.PathLike)):
        arrays = _decode_path(_existing(source), max_frames, start, step)
        return (_to_frames(a[None], channels_last=True)[0] for a in arrays)
    return iter(read_video(source, max_frames, start, step))


def video_fps(source) -> float | None:
    """The frame rate a video file plays at (mp4, mov, mkv, webm, avi: its stream's average rate, so a
    variable-rate file's real pace; gif and animated png / webp: from the first frame's duration, under
    20 ms read as 100 ms, as players show it); None for anything else (folders, still images, arrays) or
    when the file does not say. The file must exist."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    p = _existing(source)
    suffix = p.suffix.lower()
    if p.is_dir() or suffix not in (*VIDEO_SUFFIXES, *_ANIMATED_SUFFIXES):
        return None
    try:
        if suffix == ".gif" or suffix in _ANIMATED_SUFFIXES:
            from PIL import Image

            with Image.open(p) as im:
                animated = getattr(im, "n_frames", 1) > 1 or suffix == ".gif"
                if animated:
                    im.load()  # WebP reports a frame's duration once it is decoded
                duration = im.info.get("duration") if animated else None  # milliseconds
            if duration is not None and duration < 20:  # players show 0 and 10 ms delays as 100 ms
                duration = 100
            fps = 1000.0 / duration if duration else None
        else:
            import av

            with av.open(str(p)) as container:
                stream = container.streams.video[0]
                fps = stream.average_rate or stream.guessed_rate
    except Exception:  # noqa: BLE001 - unreadable metadata: the caller's default rate
        return None
    return float(fps) if fps and 0 < fps < MAX_FPS else None


_ANIMATED_SUFFIXES = (".png", ".webp")  # images that may hold an animation


def _existing(source) -> Path:
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"video: {p} does not exist")
    return p


def _decode_path(p: Path, max_frames, start, step) -> Iterator[np.ndarray]:
    """The selected frames of an existing video file, image or folder of images, as ``[H, W, 1 | 3]``
    arrays, decoded one at a time (at least one, else ValueError). A folder without images, or a file
    type not read, raises at the call; decoding errors as the frames are consumed."""
    if p.is_dir():
        # hidden files (".name": a store's temporary frames, macOS "._" sidecars) are not frames
        files = sorted(
            (f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")),
            key=_natural_key,
        )
        if not files:
            raise ValueError(f"video: no image files in folder {p}")
        files = files[start::step][:max_frames]
        if not files:
            raise ValueError(f"video: no frames selected from {p} (start={start}, step={step})")
        return _decode_folder(files)
    if p.suffix.lower() not in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
        raise ValueError(
            f"video: unsupported file type {p.suffix!r}; expected a video ({', '.join(sorted(VIDEO_SUFFIXES))}), "
            f"an image ({', '.join(sorted(IMAGE_SUFFIXES))}) or a folder of images"
        )
    return _decode_file(p, max_frames, start, step)


def _decode_folder(files: list[Path]) -> Iterator[np.ndarray]:
    shape = None
    for f in files:
        try:
            im = _pixels(next(iter(_image_frames(f))))  # a multi-frame file: its first frame
        except Exception as e:  # imageio/Pillow raise many types for damaged files
            raise ValueError(f"video: cannot read {f} ({type(e).__name__}: {e})") from e
        im = np.repeat(im, 3, -1) if im.shape[-1] == 1 else im  # grey and colour frames may mix
        shape = im.shape if shape is None else shape
        if im.shape != shape:
            raise ValueError(
                f"video: the images of a folder must have one size: {files[0].name} is "
                f"{shape[0]}x{shape[1]}, {f.name} {im.shape[0]}x{im.shape[1]}"
            )
        yield im


def _decode_file(p: Path, max_frames, start, step) -> Iterator[np.ndarray]:
    n = 0
    try:
        # an image file may hold several frames (animated WebP/PNG, multi-page TIFF)
        suffix = p.suffix.lower()
        frames = _image_frames(p) if suffix in IMAGE_SUFFIXES else _video_frames(p)
        for i, fr in enumerate(frames):
            if i < start or (i - start) % step:
                continue
            yield _pixels(np.asarray(fr))
            n += 1
            if max_frames is not None and n >= max_frames:
                break
    except Exception as e:  # PyAV / Pillow raise many error types for corrupt data
        raise ValueError(f"video: cannot decode {p} ({type(e).__name__}: {e})") from e
    if n == 0:
        raise ValueError(f"video: no frames selected from {p} (start={start}, step={step})")


def _video_frames(p: Path) -> Iterator[np.ndarray]:
    """A video file's frames ``[H, W, 3]`` uint8 (PyAV), as players show them: a display matrix's quarter
    turns and mirroring (a phone's portrait clip stores its frames sideways) are applied; another angle
    is taken to its nearest quarter turn."""
    import av

    with av.open(str(p)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for fr in container.decode(stream):
            yield _displayed(fr.to_ndarray(format="rgb24"), fr)


def _displayed(im: np.ndarray, frame) -> np.ndarray:
    """A decoded frame's pixels ``[H, W, 3]`` through its display matrix (FFmpeg's: a stored pixel at
    column x, row y shows at column ``a x + c y``, row ``b x + d y``, shifted into the frame)."""
    from av.sidedata.sidedata import Type

    sd = frame.side_data
    if Type.DISPLAYMATRIX not in sd:
        return im
    a, b, _, c, d = struct.unpack("<5i", bytes(sd[Type.DISPLAYMATRIX])[:20])  # 16.16 fixed point
    if a * d - b * c == 0:  # singular: no transform (FFmpeg shows the frame as stored)
        return im
    if (a == 0) == (b == 0) or (a == 0) != (d == 0) or (b == 0) != (c == 0):  # not a quarter turn or flip
        turns = round((frame.rotation or 0) / 90) % 4  # counterclockwise quarter turns
        return np.ascontiguousarray(np.rot90(im, turns)) if turns else im
    if a == 0:  # shown at (column c y, row b x): the transpose
        im, (flip_rows, flip_cols) = im.transpose(1, 0, 2), (b < 0, c < 0)
    else:
        flip_rows, flip_cols = d < 0, a < 0
    if not (flip_rows or flip_cols or a == 0):
        return im
    return np.ascontiguousarray(im[:: -1 if flip_rows else 1, :: -1 if flip_cols else 1])


def _pixels(im: np.ndarray) -> np.ndarray:
    """A decoded image as ``[H, W, 1 | 3]``: alpha dropped (grey + alpha is grey), 16-bit values rounded
    to 8 bits (one dtype for every frame of a folder)."""
    im = im[..., None] if im.ndim == 2 else im
    im = im[..., :1] if im.shape[-1] == 2 else im[..., :3]
    if im.dtype == np.uint16:
        im = np.round(im / 257.0).astype(np.uint8)
    return im


def _image_frames(p: Path) -> Iterator[np.ndarray]:
    """The frames of an image file: one, or an animation's or a multi-page file's (a page series comes
    as one stack ``[N, H, W(, C)]``). Upright: the EXIF orientation of a JPEG, PNG or WebP (a phone's
    photo) is applied."""
    import imageio.v3 as iio

    cmyk, orientation = _pillow_probe(p)
    if cmyk:  # read as RGB by Pillow (imageio gives the raw C, M, Y, K channels)
        from PIL import Image, ImageSequence

        with Image.open(p) as im:
            for page in ImageSequence.Iterator(im):
                yield _upright(np.asarray(page.convert("RGB")), orientation)
        return
    for a in iio.imiter(p):
        a = np.asarray(a)
        stack = a.ndim == 4 or (a.ndim == 3 and a.shape[-1] > 4)  # colour pages, or grey pages
        yield from (a if stack else [_upright(a, orientation)])


_EXIF_ORIENTATION = 0x0112
_ORIENTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF")  # decoded unrotated by imageio (a single page)


def _pillow_probe(p: Path) -> tuple[bool, int]:
    """(whether ``p`` is CMYK, its EXIF orientation 1..8: 1 when upright, absent, or not a JPEG / PNG /
    WebP). Reads the header only."""
    from PIL import Image

    try:
        with Image.open(p) as im:
            orientation = 1
            # a PNG's EXIF after its pixels would be found only by decoding them: such files count as upright
            if im.format in _ORIENTED_FORMATS and (im.format != "PNG" or "exif" in im.info):
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            return im.mode == "CMYK", orientation if orientation in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - not for Pillow: imageio reads (or rejects) it
        return False, 1


def _upright(a: np.ndarray, orientation: int) -> np.ndarray:
    """Image ``[H, W(, C)]`` stored with EXIF ``orientation``, as it is meant to be seen."""
    if orientation in (5, 6, 7, 8):  # a quarter turn: transpose first
        a = a.swapaxes(0, 1)
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    if orientation in (2, 3):
        a = a[:, ::-1]
    if orientation in (3, 4):
        a = a[::-1]
    return np.ascontiguousarray(a)


def _check_selection(max_frames, start, step) -> None:
    checks = [("start", start, 0), ("step", step, 1)]
    if max_frames is not None:
        checks.append(("max_frames", max_frames, 1))
    for name, v, least in checks:
        check_int(name, v, least)


def _natural_key(path: Path):
    """Sort key comparing the digit runs of a file name as numbers (frame_2 before frame_10)."""
    return [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in re.split(r"(\d+)", path.name)]


def write_video(frames, path: str | Path, fps: float = 8.0, codec: str | None = None) -> Path:
    """Write frames to a video file (mp4, mov, mkv, avi: H.264 by default; webm: VP9; gif), atomically: a
    temp file, then rename. Odd sizes are padded by one pixel (yuv420p needs even sizes). A GIF encoder
    merges consecutive identical frames into one longer frame, so a GIF reads back fewer frames then: the
    other formats keep them all. A GIF's frame delay is a whole number of hundredths of a second, at least 2
    (the nearest to ``1 / fps``; a warning when that is over 5% off).

    Args:
        frames: ``[T, 3, H, W]`` float in [0, 1] (a model's overshoot, up to 0.5 past either end, is
            clipped; frames on another scale, [-1, 1] or 0..255, are refused), or what :func:`read_video`
            reads: a pipeline's ``"np"`` ``[T, H, W, 3]`` uint8 or ``"pil"`` output, channels-last or grey
            frames.
        path: the video file; its suffix picks the container.
        fps: frames per second, in (0, 10000) (the rates :func:`video_fps` reads back).
    """
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(
            f"path: expected a video file name ending in one of {sorted(VIDEO_SUFFIXES)}, got {str(path)!r}"
        )
    if not MIN_FPS <= check_real("fps", fps) < MAX_FPS:
        raise ValueError(f"fps: expected frames per second in [{MIN_FPS:g}, {MAX_FPS:g}), got {fps!r}")
    frames = _frames_to_write(frames)
    if codec is None:
        codec = "libvpx-vp9" if path.suffix.lower() == ".webm" else "libx264"
    path.parent.mkdir(parents=True, exist_ok=True)
    a = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if path.suffix.lower() != ".gif":
        ph, pw = a.shape[1] % 2, a.shape[2] % 2
        if ph or pw:
            a = np.pad(a, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    try:
        if path.suffix.lower() == ".gif":
            iio.imwrite(tmp, a, duration=10 * _gif_delay(fps), loop=0)
        else:
            iio.imwrite(tmp, a, plugin="pyav", codec=codec, fps=fps, out_pixel_format="yuv420p")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written file left behind
        raise
    return path


def _gif_delay(fps: float) -> int:
    """A GIF's frame delay for ``fps``, in the hundredths of a second the format stores: the nearest, at
    least 2 (players show shorter delays as 10); a warning when the GIF then plays over 5% off ``fps``."""
    cs = min(max(2, round(100 / fps)), 65535)  # the format's 16 bits
    if abs(100 / cs - fps) > 0.05 * fps:
        logger.warning(
            "fps: a GIF stores frame delays in hundredths of a second; %g fps plays at %.4g fps (a %d0 ms "
            "delay); write an mp4 or webm for this frame rate",
            fps, 100 / cs, cs,
        )  # fmt: skip
    return cs


def _frames_to_write(frames) -> torch.Tensor:
    """``frames`` as ``[T, 3, H, W]`` float: a float ``[T, 3, H, W]`` tensor as it is (values within 0.5 of
    [0, 1]: clipped when written), anything else converted by :func:`read_video`."""
    if (
        isinstance(frames, torch.Tensor)
        and frames.is_floating_point()
        and frames.dim() == 4
        and frames.shape[1] == 3
    ):
        check_unit_range("frames", frames, slack=OVERSHOOT, what="values")
        return frames
    try:
        return read_video(frames)
    except (TypeError, ValueError) as e:
        raise type(e)(str(e).replace("video:", "frames:", 1)) from None


def collect_frames(frames, chunk: int = 32) -> torch.Tensor:
    """``[T, ...]`` the frames an iterable yields (each ``[...]``, one shape: another is an error naming the
    frame, as :func:`read_video`'s), copied into buffers of
    ``chunk`` frames as they come. Kept one by one between the full-size temporaries of decoding, small
    frames fragment the heap (glibc serves those temporaries from it once one was freed): a long clip's
    memory grew by about a full-size frame per frame."""
    chunks, buf, n, first = [], None, 0, None
    for i, f in enumerate(frames):
        first = tuple(f.shape) if first is None else first
        if tuple(f.shape) != first:  # as read_video's
            raise ValueError(
                f"video: frame {i} has shape {list(f.shape)}, frame 0 {list(first)}: frames must be one size"
            )
        if buf is None or n == len(buf):
            buf, n = torch.empty(chunk, *f.shape, dtype=f.dtype, device=f.device), 0
            chunks.append(buf)
        buf[n] = f
        n += 1
    if buf is None:
        raise ValueError("video: zero frames")
    chunks[-1] = buf[:n]
    return torch.cat(chunks)


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area (down) / bicubic (up) resize of ``[T, 3, H, W]`` frames to ``size`` = (H, W)."""
    h, w = frames.shape[-2:]
    mode = "area" if size[0] <= h and size[1] <= w else "bicubic"
    kw = {} if mode == "area" else {"align_corners": False}
    return torch.nn.functional.interpolate(frames, size=size, mode=mode, **kw).clamp(0, 1)
