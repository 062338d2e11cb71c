"""OpenCV DIS flow on a synthetic sub-pixel pan of a real photo (scikit-image's astronaut)."""

import math

import pytest
import torch

from warped_fast.flow import estimate_flow, to_gray_u8

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("cv2")


def _fourier_shift(img: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Band-limited translation: out(x) = img(x - s) (content moves by +s)."""
    h, w = img.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    phase = torch.exp(-2j * math.pi * (fx * sx + fy * sy))
    return torch.fft.ifft2(torch.fft.fft2(img.double()) * phase).real.float()


@pytest.fixture(scope="module")
def pan():
    img = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1).float() / 255.0  # 512 x 512
    s = (0.37, -0.21)
    frames = torch.stack([_fourier_shift(img, j * s[0], j * s[1]) for j in range(3)])
    # crop the centre: the periodic wrap of the Fourier shift stays out of the frames
    return frames[:, :, 128:384, 128:384].clamp(0, 1), s


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])
def test_dis_recovers_subpixel_pan(pan, preset):
    frames, s = pan
    fwd, back = estimate_flow(frames, preset)
    assert fwd.shape == back.shape == (2, 2, 256, 256) and fwd.dtype == torch.float32
    m = 8
    st = torch.tensor(s)[None, :, None, None]
    err_f = (fwd - st)[..., m:-m, m:-m].norm(dim=1)
    err_b = (back + st)[..., m:-m, m:-m].norm(dim=1)
    assert err_f.median() < 0.1, f"forward median error {err_f.median():.3f} px"
    assert err_b.median() < 0.1, f"backward median error {err_b.median():.3f} px"


def test_dis_uint8_and_gray_inputs(pan):
    frames, _ = pan
    u8 = (frames * 255).round().to(torch.uint8)
    f1, _ = estimate_flow(u8[:2], "ultrafast")
    f2, _ = estimate_flow(u8[:2].float() / 255.0, "ultrafast")
    assert torch.equal(f1, f2)  # same 8-bit grayscale underneath
    g = to_gray_u8(u8[:2])
    f3, _ = estimate_flow(torch.from_numpy(g)[:, None], "ultrafast")
    assert torch.equal(f2, estimate_flow(torch.from_numpy(g)[:, None], "ultrafast")[0])
    assert torch.equal(f3, f2)


def test_dis_bad_inputs():
    with pytest.raises(ValueError, match="preset"):
        estimate_flow(torch.zeros(2, 3, 8, 8), "slow")
    with pytest.raises(ValueError, match="frames: expected shape"):
        estimate_flow(torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="at least 2"):
        estimate_flow(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="frames"):
        estimate_flow(torch.zeros(2, 3, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"frames: float frames must be in \[0, 1\].*255"):
        estimate_flow(torch.rand(2, 3, 16, 16) * 255)  # clamped to white, it gave zero flow
    with pytest.raises(ValueError, match="frames: float frames"):
        estimate_flow(torch.full((2, 3, 16, 16), float("nan")))


@pytest.mark.parametrize("h,w", [(10, 10), (8, 64), (12, 96), (8, 300), (24, 384)])
def test_dis_small_and_short_wide_frames(pan, h, w):
    """OpenCV DIS alone crashes the process (or returns NaN) on frames under 32 rows that are a few times
    wider; the padded frames give the flow of the pan (to 0.25 px at the median: little texture)."""
    frames, s = pan
    y0 = 100  # a textured band of the photo
    crop = frames[:2, :, y0 : y0 + h, :w] if w <= 256 else torch.nn.functional.interpolate(
        frames[:2, :, y0 : y0 + h], size=(h, w), mode="bilinear", align_corners=False
    )  # fmt: skip
    scale = w / 256 if w > 256 else 1.0  # the resize stretches x
    fwd, back = estimate_flow(crop)
    assert fwd.shape == back.shape == (1, 2, h, w)
    assert torch.isfinite(fwd).all() and torch.isfinite(back).all()
    assert abs(fwd[0, 0].median() - s[0] * scale) < 0.25 and abs(back[0, 0].median() + s[0] * scale) < 0.25
