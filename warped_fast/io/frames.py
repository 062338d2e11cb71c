"""A resumable frame store: finished frames are written as PNGs as they complete (atomically), so a long
job that is interrupted resumes without redoing or losing any; ``complete`` is marked last."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from .video import IMAGE_SUFFIXES

_PNG_END = b"IEND\xaeB`\x82"  # the last chunk of every PNG file, with its CRC
_OWN = re.compile(r"\.?frame_\d{5,}(\.tmp)?\.png")  # a store's frames and their temporary files


class OtherJobError(ValueError):
    """The output folder holds frames of another job (different settings, inputs or version)."""


def _differences(old: dict, params: dict, total: int, free: tuple[str, ...] = ()) -> str:
    """Which of a job's settings differ from the stored job's, e.g. "other steps, model"; a job whose key
    has another ``key_format`` was made by another version, whose digests differ anyway."""
    before = old.get("params") if isinstance(old.get("params"), dict) else {}
    if before.get("key_format") != params.get("key_format"):
        return "made by another version"
    keys = [k for k in sorted(set(before) | set(params)) if before.get(k) != params.get(k) and k not in free]
    if old.get("total") != total and "frames" not in keys:
        keys.insert(0, "frame count")
    return "other " + ", ".join(keys) if keys else "made by another version"


def check_writable(folder: str | Path, keep: bool = True) -> Path:
    """``folder`` created if needed and writable (a probe file), else a ``PermissionError`` naming it.
    ``keep=False`` removes again the folders this call created (and only those): a check before any
    work leaves no trace."""
    folder = Path(folder)
    created: list[Path] = []
    try:
        level = Path(folder.anchor)
        for part in folder.parts[1 if folder.anchor else 0 :]:  # top down; ".." as the kernel sees it
            level = level / part
            try:
                level.mkdir()
                created.append(level)
            except OSError:  # it exists (some file systems say EACCES or EROFS first, as pathlib knows)
                if not level.is_dir():
                    raise
        probe = folder / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"output: cannot write to {folder} ({e})") from e
    finally:
        if not keep:
            for p in reversed(created):  # deepest first; only if still empty
                with contextlib.suppress(OSError):
                    p.rmdir()
    return folder


class FrameStore:
    """Frames ``frame_00000.png`` ... in ``folder`` plus ``progress.json`` ({"total", "params", "complete"}).
    A folder with frames (or latents) but no ``progress.json`` is refused: its job cannot be told. A job
    that failed before its first frame (or latent) leaves nothing to resume: another job takes it over.

    Args:
        folder: output folder (created; must be writable).
        params: a JSON-able description of the job; resuming with different params raises.
        total: number of frames the job will produce.
        free: keys of ``params`` that a resumed job may change (settings that do not change its frames
            beyond rounding); the stored params take the new values.
    """

    def __init__(self, folder: str | Path, params: dict, total: int, free: tuple[str, ...] = ()):
        self.folder = check_writable(folder)
        self.meta_path = self.folder / "progress.json"
        # as stored (JSON): a tuple compares equal to the list it is read back as
        self.total, self.params = total, json.loads(json.dumps(params))

        def fixed(params):  # the settings a resumed job must keep
            return {k: v for k, v in params.items() if k not in free} if isinstance(params, dict) else params

        if self.meta_path.exists():
            try:
                old = json.loads(self.meta_path.read_text())
            except ValueError as e:
                raise ValueError(
                    f"output: {self.meta_path} is damaged ({e}); delete the folder to restart"
                ) from e
            started = any(self.folder.glob("frame_*.png")) or any(self.folder.glob("latents/*.safetensors"))
            if (fixed(old.get("params")) != fixed(self.params) or old.get("total") != total) and started:
                raise OtherJobError(
                    f"output: {self.folder} holds frames of a different job ({_differences(old, self.params, total, free)}"
                    "); choose another folder or delete it"
                )
        elif any(self.folder.glob("frame_*.png")) or any(self.folder.glob("latents/*.safetensors")):
            raise ValueError(
                f"output: {self.folder} holds frames but no progress.json, so the job that made them is "
                "unknown; choose another folder or delete it"
            )
        # other images (an input's frames, say; also ones added to a job's folder between runs) would be
        # read back with the job's as one video
        others = sorted(
            f.name
            for f in self.folder.iterdir()
            if f.suffix.lower() in IMAGE_SUFFIXES
            and not f.name.startswith(".")  # as the reader
            and not _OWN.fullmatch(f.name)
        )
        if others:
            raise ValueError(
                f"output: {self.folder} holds other images ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); choose an empty folder for the frames"
            )
        self._write_meta(complete=False)

    def _write_meta(self, complete: bool) -> None:
        meta = {"total": self.total, "params": self.params, "complete": complete}
        write_json_atomic(self.meta_path, meta)

    def path(self, i: int) -> Path:
        return self.folder / f"frame_{i:05d}.png"

    def done(self) -> list[int]:
        """Indices of frames already written, in order, stopping at the first gap (or damaged file)."""
        out = []
        for i in range(self.total):
            if not self.intact(i):
                break
            out.append(i)
        return out

    def intact(self, i: int) -> bool:
        """Whether frame ``i``'s PNG exists and ends with the PNG trailer (a truncated file does not)."""
        p = self.path(i)
        try:
            with p.open("rb") as f:
                f.seek(0, 2)
                if f.tell() < len(_PNG_END) + 8:
                    return False
                f.seek(-len(_PNG_END), 2)
                return f.read() == _PNG_END
        except OSError:
            return False

    def write(self, i: int, frame: torch.Tensor) -> None:
        """Write frame ``i`` (``[3, H, W]`` in [0, 1]) atomically."""
        import imageio.v3 as iio

        a = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        tmp = self.folder / f".frame_{i:05d}.tmp.png"
        iio.imwrite(tmp, np.ascontiguousarray(a))
        tmp.replace(self.path(i))

    def read(self, i: int) -> torch.Tensor:
        import imageio.v3 as iio

        return torch.from_numpy(iio.imread(self.path(i))).permute(2, 0, 1).float() / 255.0

    def finish(self) -> None:
        if len(self.done()) != self.total:
            raise RuntimeError(f"output: {len(self.done())} of {self.total} frames written; not complete")
        self._write_meta(complete=True)

    @property
    def complete(self) -> bool:
        return self.meta_path.exists() and json.loads(self.meta_path.read_text()).get("complete", False)


def read_json(path: Path, name: str, remedy: str | None = None):
    """The JSON content of ``path``; a damaged file is a ValueError naming argument ``name``, the file and
    ``remedy`` (if given)."""
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(
            f"{name}: {path}: damaged, not valid JSON ({e})" + (f"; {remedy}" if remedy else "")
        ) from e


def save_tensors(tensors: dict, path: str | Path) -> None:
    """safetensors' ``save_file``, the file then given the mode a file newly created in its folder gets (the
    umask, or the folder's default ACL), as the PNGs and JSON beside it have: safetensors writes through a
    private (0600) file."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file(tensors, str(path))
    match_folder_mode(path)


def match_folder_mode(path: str | Path) -> None:
    """Give the file ``path`` the mode a file newly created in its folder gets (the umask, or the folder's
    default ACL): safetensors (and diffusers' ``save_pretrained`` through it) writes a private 0600 file."""
    path = Path(path)
    probe = path.with_name(f".mode_probe_{os.getpid()}")
    with contextlib.suppress(OSError):
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        try:
            mode = os.fstat(fd).st_mode & 0o777
        finally:
            os.close(fd)
            probe.unlink()
        os.chmod(path, mode)


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename: a reader (or a run resumed
    after a crash) sees the old file or the new one, never half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)
