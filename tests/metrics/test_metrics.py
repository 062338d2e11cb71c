"""Metrics: self-warping error (4 variants), MSE/PSNR/SSIM, weight-file-only metrics."""

import pytest
import torch

from warped_fast.metrics import fid, lpips, mse, psnr, ssim, warping_error


def _pan(t=4, h=12, w=16, s=2):
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, h, w + s * t, generator=g)
    video = torch.cat([base[..., s * (t - j) : s * (t - j) + w] for j in range(t)])  # moves right by s
    fwd = torch.zeros(t - 1, 2, h, w)
    fwd[:, 0] = s
    return video, fwd


def test_warping_error_zero_for_consistent_video_and_positive_otherwise():
    video, fwd = _pan()
    for ref in ("previous", "first"):
        e = warping_error(video, fwd, ref)
        assert e.shape == (3,) and e.max() < 1e-12, f"{ref}: {e}"
    noisy = video + 0.1 * torch.randn_like(video)
    e = warping_error(noisy, fwd, "first")
    assert (e > 0.01).all() and (e < 0.05).all()  # ~2 * 0.1^2 over valid pixels
    # latent-space variant: the same metric on any [T, C, H, W] tensor
    assert warping_error(torch.randn(3, 4, 6, 6).repeat(1, 1, 1, 1), torch.zeros(2, 2, 6, 6)).shape == (2,)


def test_warping_error_first_accumulates_flows():
    video, fwd = _pan(t=5, s=1)
    e = warping_error(video, fwd, "first")
    assert e.max() < 1e-12
    with pytest.raises(ValueError, match="fwd_flows: expected shape"):
        warping_error(video, fwd[:2])
    with pytest.raises(ValueError, match="reference"):
        warping_error(video, fwd, "last")


def test_warping_error_first_leaves_out_paths_that_left_the_frame():
    """Content moving +0.3 then -1.0 px: the path of the last column leaves the frame at frame 1 (where
    the flow is zero padding) and lands back inside; it is not scored. Linear content: bilinear warps
    are exact inside the frame, so everything scored is 0."""
    h, w = 6, 16
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    frame = lambda dx: (0.03 * (xs - dx) + 0.02 * ys + 0.1)[None]  # noqa: E731 - content moved by dx
    video = torch.stack([frame(0.0), frame(0.3), frame(-0.7)])
    fwd = torch.zeros(2, 2, h, w)
    fwd[0, 0], fwd[1, 0] = 0.3, -1.0
    e = warping_error(video, fwd, "first")
    assert e.max() < 1e-12, e
    # NaN pixels outside the mask are left out too
    nan_video = video.clone()
    nan_video[1:, :, :, 0] = float("nan")
    mask = torch.ones(2, 1, h, w, dtype=torch.bool)
    mask[..., :3] = False
    assert torch.isfinite(warping_error(nan_video, fwd, mask=mask)).all()


def test_warping_error_mask():
    video, fwd = _pan(t=3)
    mask = torch.zeros(2, 1, 12, 16, dtype=torch.bool)
    mask[..., :6] = True
    e = warping_error(torch.stack([video[0], video[1] + 1.0, video[2] + 2.0]), fwd, mask=mask)
    assert torch.allclose(e, torch.ones(2), atol=1e-6)  # (1 - 0)^2 and (2 - 1)^2 on the masked pixels
    with pytest.raises(ValueError, match=r"mask: expected shape \[2, 1, 12, 16\]"):
        warping_error(video, fwd, mask=mask.expand(2, 3, 12, 16))
    # 0/1 floats are a mask; other values (0.3 is not "valid"), numpy inputs, integer flows are refused
    assert torch.equal(warping_error(video, fwd, mask=mask.float()), warping_error(video, fwd, mask=mask))
    assert torch.equal(
        warping_error(video, fwd, mask=mask.to(torch.uint8) * 255), warping_error(video, fwd, mask=mask)
    )
    with pytest.raises(ValueError, match="mask: a float mask must hold 0 and 1 only"):
        warping_error(video, fwd, mask=mask.float() * 0.3)
    with pytest.raises(TypeError, match="fwd_flows: expected a torch.Tensor, got ndarray"):
        warping_error(video, fwd.numpy())
    with pytest.raises(TypeError, match="video: expected a torch.Tensor, got list"):
        warping_error(list(video), fwd)
    with pytest.raises(TypeError, match="fwd_flows: expected floating-point flows"):
        warping_error(video, fwd.round().long())


def test_quality_metrics():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 32, 32, generator=g)
    b = (a + 0.05 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    m = mse(b, a)
    assert m.shape == (2,)
    assert torch.allclose(psnr(b, a), 10 * torch.log10(1 / m), atol=1e-6)
    s = ssim(b, a)
    assert s.shape == (2,) and (s < 1).all() and (ssim(a, a) > 0.999).all()
    with pytest.raises(ValueError, match="pred/target"):
        mse(a, a[:1])
    over = a + 0.05 * torch.randn(2, 3, 32, 32, generator=g)  # out of range: clamped by all three
    assert torch.allclose(psnr(over, a), 10 * torch.log10(1 / mse(over, a)), atol=1e-6)
    with pytest.raises(ValueError, match="pred: SSIM needs frames of at least 6x6"):
        ssim(a[..., :5, :], a[..., :5, :])
    u8 = (a * 255).to(torch.uint8)
    with pytest.raises(TypeError, match="pred: expected float frames in \\[0, 1\\], got torch.uint8"):
        psnr(u8, u8)
    # frames on another scale would give meaningless scores: refused, the conversion named
    for metric in (mse, psnr, ssim):
        with pytest.raises(ValueError, match=r"pred: expected frames in \[0, 1\].*divide by 255"):
            metric(a * 255, a * 255)
        with pytest.raises(ValueError, match=r"target: expected frames in \[0, 1\]"):
            metric(a, a * 255)
        with pytest.raises(ValueError, match=r"pred: expected frames in \[0, 1\].*\(x \+ 1\) / 2"):
            metric(a * 2 - 1, a)
        with pytest.raises(TypeError, match="pred: expected a torch.Tensor.*read_video converts"):
            metric(a.numpy(), a)


def test_warping_error_of_a_frame_with_no_valid_pixel_is_nan():
    video, fwd = _pan(t=3, s=9)  # frame 2 has moved 18 px: nothing of it is left in frame 0's 16 columns
    e = warping_error(video + 0.1, fwd, "first")
    assert torch.isfinite(e[0]) and torch.isnan(e[1])
    with pytest.raises(TypeError, match="video: expected floating-point frames"):
        warping_error((video * 255).to(torch.uint8), fwd)


def test_weight_metrics_need_local_files(tmp_path):
    a = torch.rand(2, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        lpips(a, a)
    with pytest.raises(FileNotFoundError, match="fid: weights .*inception.safetensors does not exist"):
        fid(a, a, weights=tmp_path / "inception.safetensors")
    from warped_fast.metrics import clip_score

    with pytest.raises(FileNotFoundError, match="clip_score: .* pass model_dir=<local folder>"):
        clip_score(a, "a cat")
