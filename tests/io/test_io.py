"""Video/mask/frame IO: formats, atomic writes, resume bookkeeping, bad input."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from warped_fast.io import FrameStore, iter_video, load_mask, read_video, video_fps, write_video
from warped_fast.io.frames import check_writable


def _clip(t=3, h=10, w=14):
    g = torch.Generator().manual_seed(0)
    return torch.rand(t, 3, h, w, generator=g)


def test_roundtrip_mp4_gif_folder_and_in_memory(tmp_path):
    v = _clip()
    p = write_video(v, tmp_path / "a.mp4")
    back = read_video(p)
    assert (
        back.shape == (3, 3, 10, 14) and back.dtype == torch.float32 and 0 <= back.min() and back.max() <= 1
    )
    g = read_video(write_video(v, tmp_path / "a.gif"))
    assert g.shape == (3, 3, 10, 14) and (g - v).abs().mean() < 0.05
    folder = tmp_path / "frames"
    store = FrameStore(folder, {"job": 1}, 3)
    for i in range(3):
        store.write(i, v[i])
    assert (read_video(folder) - v).abs().max() <= 0.5 / 255 + 1e-6
    pil = [Image.fromarray((f.permute(1, 2, 0).numpy() * 255).astype(np.uint8)) for f in v]
    assert read_video(pil).shape == (3, 3, 10, 14)
    assert torch.equal(read_video(v), v)
    assert read_video((v.permute(0, 2, 3, 1) * 255).to(torch.uint8).numpy()).shape == (3, 3, 10, 14)
    assert read_video(v[:, :1]).shape == (3, 3, 10, 14)  # grey -> RGB


def test_iter_video_yields_read_videos_frames_one_at_a_time(tmp_path):
    v = _clip(t=5)
    folder = tmp_path / "frames"
    store = FrameStore(folder, {"job": 1}, 5)
    for i in range(5):
        store.write(i, v[i])
    image = tmp_path / "one.png"
    Image.fromarray((v[0, 0].numpy() * 255).astype(np.uint8)).save(image)  # grey
    sources = [write_video(v, tmp_path / "a.mp4"), write_video(v, tmp_path / "a.gif"), folder, image, v]
    for src in sources:
        for sel in ({}, {"start": 1, "step": 2}, {"max_frames": 2}, {"start": 1, "max_frames": 3}):
            if src is image and sel.get("start"):  # one frame: nothing from frame 1 on, as for a folder
                for read in (read_video, lambda *a, **k: list(iter_video(*a, **k))):
                    with pytest.raises(ValueError, match="video: no frames selected from .*one.png"):
                        read(src, **sel)
                continue
            frames = list(iter_video(src, **sel))
            assert all(f.shape == (3, 10, 14) and f.dtype == torch.float32 for f in frames)
            assert torch.equal(torch.stack(frames), read_video(src, **sel)), (src, sel)
    it = iter_video(tmp_path / "a.mp4")
    assert torch.equal(next(it), read_video(tmp_path / "a.mp4", max_frames=1)[0])  # decoded as consumed
    with pytest.raises(FileNotFoundError, match="video: .*missing.mp4 does not exist"):
        iter_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="start: expected an int >= 0"):
        iter_video(v, start=-1)


def test_frame_selection_layouts_and_folder_order(tmp_path):
    v = _clip(t=5)
    # Selection applies to tensors and lists as to files.
    assert torch.equal(read_video(v, max_frames=2), v[:2])
    assert torch.equal(read_video(v, start=1, step=2), v[1::2])
    assert torch.equal(read_video(list(v.permute(0, 2, 3, 1).numpy()), max_frames=3), v[:3])
    # Three dimensions: one frame, channels first or last; else grey frames.
    assert torch.equal(read_video(v[0]), v[:1])
    assert torch.equal(read_video(v[0].permute(1, 2, 0)), v[:1])
    assert torch.equal(read_video(v[:, 0]), v[:, :1].expand(-1, 3, -1, -1))
    # A folder in natural order: f2 before f10.
    folder = tmp_path / "f"
    folder.mkdir()
    for i in (10, 2, 1):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(folder / f"f{i}.png")
    assert (read_video(folder)[:, 0, 0, 0] * 255).round().tolist() == [1, 2, 10]
    assert (read_video(folder, start=1)[:, 0, 0, 0] * 255).round().tolist() == [2, 10]
    for kw, name in (({"max_frames": 0}, "max_frames"), ({"step": 0}, "step"), ({"start": -1}, "start")):
        with pytest.raises(ValueError, match=name):
            read_video(v, **kw)
    with pytest.raises(ValueError, match="no frames selected"):
        read_video(v, start=9)


def test_bad_videos(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00 ftypisom" + b"garbage" * 100)
    with pytest.raises(ValueError, match="cannot decode|no frames"):
        read_video(bad)
    with pytest.raises(ValueError, match="zero frames"):
        read_video(torch.zeros(0, 3, 4, 4))
    with pytest.raises(ValueError, match=r"float frames must be in \[0, 1\]"):
        read_video(torch.full((2, 3, 4, 4), 3.0))
    with pytest.raises(ValueError, match="unsupported file type"):
        read_video(_write(tmp_path / "x.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        read_video(tmp_path / "empty")


def test_files_and_images_are_channels_last_whatever_their_height(tmp_path):
    # 3 or 4 pixels high looks like channels-first; files and PIL images are never read that way.
    for h, w in ((4, 6), (3, 8), (1, 6)):
        v = _clip(3, h, w)
        u8 = (v * 255).round().to(torch.uint8)
        assert read_video(write_video(v, tmp_path / f"a{h}.gif")).shape == (3, 3, h, w)
        folder = tmp_path / f"png{h}"
        folder.mkdir()
        for i, f in enumerate(u8.permute(0, 2, 3, 1).numpy()):
            Image.fromarray(f).save(folder / f"{i}.png")
        assert torch.equal(read_video(folder), u8.float() / 255)
        assert torch.equal(read_video(folder / "0.png"), u8[:1].float() / 255)
        pil = [Image.fromarray(f) for f in u8.permute(0, 2, 3, 1).numpy()]
        assert torch.equal(read_video(pil), u8.float() / 255)
    assert read_video(write_video(_clip(3, 4, 6), tmp_path / "a.mp4")).shape == (3, 3, 4, 6)
    grey = tmp_path / "grey"
    grey.mkdir()
    Image.fromarray(np.full((3, 5), 51, np.uint8)).save(grey / "0.png")
    assert torch.allclose(read_video(grey), torch.full((1, 3, 3, 5), 0.2))
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(grey / "1.png")
    with pytest.raises(ValueError, match="one size"):
        read_video(grey)


def test_non_finite_and_integer_frames_are_named():
    v = _clip()
    v[1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="video: frames hold NaN"):
        read_video(v)
    with pytest.raises(ValueError, match="video: torch.int64 frames; expected uint8"):
        read_video((_clip() * 255).long())


def _write(p):
    p.write_text("x")
    return p


def test_masks(tmp_path):
    m = load_mask("box", 4, 8, 12)
    assert m.shape == (4, 1, 8, 12) and m.sum() == 4 * 4 * 6
    img = np.zeros((8, 12), np.uint8)
    img[2:5, 3:7] = 255
    Image.fromarray(img).save(tmp_path / "m.png")
    m2 = load_mask(str(tmp_path / "m.png"), 2, 8, 12)
    assert m2.shape == (2, 1, 8, 12) and m2[:, 0, 2:5, 3:7].eq(1).all() and m2.sum() == 2 * 12
    assert load_mask(torch.ones(3, 1, 8, 12), 3, 8, 12).shape == (3, 1, 8, 12)
    # Per-frame masks [T, H, W] (also T = 3, not read as colour channels) and an [H, W, 3] image.
    per_frame = torch.zeros(3, 8, 12)
    per_frame[0, 2:4, 2:4] = 1
    assert torch.equal(load_mask(per_frame, 3, 8, 12)[:, 0], per_frame)
    assert torch.equal(load_mask(per_frame[:2], 2, 8, 12)[:, 0], per_frame[:2])
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[2:5, 3:7] = 255
    assert torch.equal(load_mask(rgb, 2, 8, 12), m2)
    with pytest.raises(ValueError, match="expected size 8x12"):
        load_mask(torch.ones(8, 10), 3, 8, 12)
    with pytest.raises(ValueError, match="expected 1 or 3 frames"):
        load_mask(torch.ones(2, 1, 8, 12), 3, 8, 12)
    with pytest.raises(ValueError, match="unknown shape"):
        _shape("blob")
    # a list of masks, one per frame (files, images, tensors), as iter_masks reads one
    Image.fromarray(255 - img).save(tmp_path / "n.png")
    listed = load_mask([tmp_path / "m.png", str(tmp_path / "n.png"), torch.ones(8, 12)], 3, 8, 12)
    assert torch.equal(listed[0], m2[0]) and torch.equal(listed[1], 1 - m2[0]) and listed[2].eq(1).all()
    assert torch.equal(load_mask([tmp_path / "m.png"], 3, 8, 12), m2[:1].expand(3, -1, -1, -1))
    # an RGB image channels first (torchvision's read_image): one mask, unless the clip has 3 frames
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert torch.equal(load_mask(chw, 5, 8, 12), m2[:1].expand(5, -1, -1, -1))
    assert load_mask(chw, 3, 8, 12).shape == (3, 1, 8, 12)
    # a region marked by transparency alone (one colour, varying alpha): refused, file or image
    rgba = np.zeros((8, 12, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[2:5, 3:7, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    for source in (tmp_path / "alpha.png", Image.fromarray(rgba)):
        with pytest.raises(ValueError, match="mask: .* by transparency alone"):
            load_mask(source, 2, 8, 12)
    rgba[2:5, 3:7, :3] = 255  # white where transparent too: its values say it
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    assert torch.equal(load_mask(tmp_path / "alpha.png", 2, 8, 12), m2)


def _shape(name):
    from warped_fast.io import generated_mask

    return generated_mask(name, 1, 4, 4)


def test_frame_store_resume_and_job_mismatch(tmp_path):
    s = FrameStore(tmp_path / "o", {"a": 1}, 3)
    s.write(0, torch.zeros(3, 4, 4))
    s.write(1, torch.ones(3, 4, 4))
    assert s.done() == [0, 1] and not s.complete
    with pytest.raises(RuntimeError, match="2 of 3 frames"):
        s.finish()
    s2 = FrameStore(tmp_path / "o", {"a": 1}, 3)  # resume
    assert s2.done() == [0, 1]
    s2.write(2, torch.ones(3, 4, 4))
    s2.finish()
    assert s2.complete and not list((tmp_path / "o").glob("*.tmp*"))
    with pytest.raises(ValueError, match="different job"):
        FrameStore(tmp_path / "o", {"a": 2}, 3)
    FrameStore(tmp_path / "t", {"size": (8, 8)}, 2)
    FrameStore(tmp_path / "t", {"size": (8, 8)}, 2)  # a tuple param resumes (stored as a JSON list)
    # a job that failed before its first frame leaves nothing: another job takes the folder over
    FrameStore(tmp_path / "f", {"a": 1}, 3)
    s3 = FrameStore(tmp_path / "f", {"a": 2}, 4)
    assert json.loads((tmp_path / "f" / "progress.json").read_text())["params"] == {"a": 2}
    s3.write(0, torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"different job \(other frame count, a\)"):
        FrameStore(tmp_path / "f", {"a": 1}, 3)
    with pytest.raises(ValueError, match=r"different job \(made by another version\)"):
        FrameStore(tmp_path / "f", {"a": 2, "key_format": 9}, 4)


def test_unwritable_output(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(PermissionError, match="cannot write"):
        FrameStore(f / "sub", {}, 1)
    with pytest.raises(PermissionError, match="cannot write"):
        check_writable(f / "sub", keep=False)


def test_write_check_removes_only_the_folders_it_made(tmp_path):
    (tmp_path / "empty").mkdir()
    check_writable(tmp_path / "a" / "b", keep=False)
    check_writable(tmp_path / "missing" / ".." / "empty", keep=False)  # "empty" existed: it stays
    check_writable(tmp_path / "empty" / "c", keep=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not any((tmp_path / "empty").iterdir())
    assert check_writable(tmp_path / "kept" / "d").is_dir()


def test_cmyk_images_read_as_rgb(tmp_path):
    """Pillow's CMYK JPEG and TIFF (print workflows) read in their RGB colours, not as C, M, Y."""
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[...] = (33, 81, 71)
    for name in ("c.jpg", "c.tif"):
        Image.fromarray(rgb).convert("CMYK").save(tmp_path / name)
        v = (read_video(tmp_path / name)[0, :, 0, 0] * 255).round()
        assert v.tolist() == [33.0, 81.0, 71.0], name


def test_exif_orientation_applied(tmp_path):
    """A photo stored sideways with an EXIF orientation reads upright, as viewers (Pillow's
    exif_transpose) show it: all 8 orientations, colour and grey PNGs and a TIFF (lossless), a phone's
    JPEG."""
    from PIL import ImageOps

    rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3) * 2
    for orientation in range(1, 9):
        for name, im in (
            ("c.png", Image.fromarray(rgb)),
            ("g.png", Image.fromarray(rgb[..., 0])),
            ("c.tif", Image.fromarray(rgb)),
        ):
            exif = Image.Exif()
            exif[0x0112] = orientation
            im.save(tmp_path / name, exif=exif)
            v = read_video(tmp_path / name)[0]
            with Image.open(tmp_path / name) as ref:
                want = np.asarray(ImageOps.exif_transpose(ref).convert("RGB"))
            got = (v.permute(1, 2, 0) * 255).round().numpy().astype(np.uint8)
            assert got.tolist() == want.tolist(), (orientation, name)
    white_top = np.zeros((6, 8, 3), np.uint8)
    white_top[0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.fromarray(white_top).save(tmp_path / "p.jpg", exif=exif, quality=100)
    v = read_video(tmp_path / "p.jpg")[0]
    assert v.shape == (3, 8, 6) and v[:, :, -1].min() > 0.9 and v[:, :, 0].max() < 0.1  # the top row: right


@pytest.mark.parametrize(
    "degrees, hflip, vflip",
    [(90, False, False), (-90, False, False), (180, False, False), (0, True, False), (0, False, True),
     (90, True, False), (-90, True, False), (180, True, False), (None, False, False)],
)  # fmt: skip
def test_display_matrix_of_a_video_applied(tmp_path, degrees, hflip, vflip):
    """A video whose display matrix rotates or mirrors it (a phone's portrait clip, a front camera's
    mirrored one) reads as players show it: the stored frames turned counterclockwise, then mirrored."""
    import av

    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:, :8] = 255  # a white band at the stored frame's left
    stored[:6, :, 0] = 255  # a red one at its top: every turn and mirror looks different
    path = tmp_path / f"rot{degrees}{hflip}{vflip}.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        if degrees is None:
            s.set_display_matrix([0] * 9)
        else:
            s.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for _ in range(2):
            c.mux(s.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        c.mux(s.encode())
    v = read_video(path)
    if degrees is None:  # a singular matrix: shown as stored
        assert (v[0] - torch.from_numpy(stored).permute(2, 0, 1).float() / 255).abs().mean() < 0.02
        return
    shown = np.rot90(stored, degrees // 90)
    shown = shown[:, ::-1] if hflip else shown
    shown = shown[::-1] if vflip else shown
    want = torch.from_numpy(shown.copy()).permute(2, 0, 1).float() / 255
    assert v.shape == (2, *want.shape)
    assert (v - want).abs().mean() < 0.02


def test_mask_image_of_zeros_and_ones(tmp_path):
    """A mask PNG holding 0/1 (not 0/255) masks its 1s, as the same array would."""
    a = np.zeros((6, 8), np.uint8)
    a[2:4, 3:6] = 1
    Image.fromarray(a).save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", 2, 6, 8)
    assert torch.equal(m, load_mask(a, 2, 6, 8)) and m.sum() == 2 * 6
    assert load_mask(Image.fromarray(a), 1, 6, 8).sum() == 6
    a[2:4, 3:6] = 255
    Image.fromarray(a).save(tmp_path / "m255.png")
    assert torch.equal(load_mask(tmp_path / "m255.png", 2, 6, 8), m)


def test_folder_mixing_grey_colour_and_cmyk_frames(tmp_path):
    """A folder of frames may mix grey, colour and CMYK images of one size; other sizes are refused."""
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[...] = (33, 81, 71)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "f0.png")  # grey
    Image.fromarray(rgb).save(tmp_path / "f1.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "f2.jpg", quality=100)
    v = (read_video(tmp_path) * 255).round()
    assert v.shape == (3, 3, 6, 8)
    assert v[0, :, 0, 0].tolist() == [33.0] * 3 and v[1, :, 0, 0].tolist() == [33.0, 81.0, 71.0]
    assert (v[2, :, 0, 0] - torch.tensor([33.0, 81.0, 71.0])).abs().max() <= 3  # JPEG
    Image.fromarray(rgb[:5]).save(tmp_path / "f3.png")
    with pytest.raises(ValueError, match="one size: f0.png is 6x8, f3.png 5x8"):
        read_video(tmp_path)


@pytest.mark.parametrize("suffix", [".webm", ".mkv"])
def test_write_other_containers(tmp_path, suffix):
    """webm takes VP9 (its containers do not take H.264); mkv the default H.264."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
    v = torch.stack(
        [torch.stack((xs, ys, (xs + ys + k / 8) % 1)) for k in range(4)]
    )  # smooth: codecs keep it
    back = read_video(write_video(v, tmp_path / f"c{suffix}"))
    assert back.shape == v.shape and (back - v).abs().mean() < 0.05


def test_mask_channels_last_shapes():
    """Masks as [H, W, 1] or frames [T, H, W, 1|3] (channels last, as images load) read as [T, 1, H, W]."""
    base = torch.zeros(16, 24)
    base[4:8, 5:9] = 1
    want = load_mask(base, 3, 16, 24)
    for m in (base[..., None], base[None, ..., None].expand(3, 16, 24, 3), base[None, ..., None]):
        assert torch.equal(load_mask(m, 3, 16, 24), want), list(m.shape)


def test_write_video_takes_the_pipeline_outputs(tmp_path):
    """write_video takes what a pipeline returns for every output_type (uint8 [T, H, W, 3] arrays, PIL
    images, channels-last tensors) and names the argument for frames on another scale or a path that is
    not a video."""
    g = torch.Generator().manual_seed(0)
    v = torch.rand(3, 3, 16, 16, generator=g)
    u8 = (v * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    ref = read_video(write_video(v, tmp_path / "a.mp4"))
    for frames in (u8, [Image.fromarray(f) for f in u8], v.permute(0, 2, 3, 1)):
        assert torch.equal(read_video(write_video(frames, tmp_path / "b.mp4")), ref)
    with pytest.raises(ValueError, match=r"frames: expected values in \[0, 1\].*divide by 255"):
        write_video(v * 255, tmp_path / "c.mp4")
    for name in ("c.png", "c"):
        with pytest.raises(ValueError, match="path: expected a video file name"):
            write_video(v, tmp_path / name)
    assert not (tmp_path / "c.mp4").exists()


def test_video_fps_of_constant_and_variable_rate_files(tmp_path):
    """A file's frame rate, also of a variable-rate one (a screen recording: bursts, then pauses): its
    average, so frames written at that rate last as long as the input."""
    import fractions

    import av

    from warped_fast.io import video_fps

    for fps in (24, 29.97, 8):
        assert video_fps(write_video(torch.rand(4, 3, 16, 16), tmp_path / f"c{fps}.mp4", fps=fps)) == fps
    tb = fractions.Fraction(1, 1000)
    pts = [burst * 500 + k * 33 for burst in range(6) for k in range(5)]  # 30 frames over 2.6 s
    with av.open(str(tmp_path / "vfr.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = tb
        for p in pts:
            f = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            f.pts, f.time_base = p, tb
            c.mux(s.encode(f))
        c.mux(s.encode())
    assert 9 < video_fps(tmp_path / "vfr.mp4") < 13  # not the nominal 30
    assert video_fps(tmp_path) is None and video_fps(torch.zeros(1)) is None


def test_write_check_tolerates_other_errors_on_existing_levels(tmp_path, monkeypatch):
    """Some file systems (NFS) answer mkdir of an existing folder with EACCES, not EEXIST."""
    from pathlib import Path

    real = Path.mkdir

    def mkdir(self, *a, **k):
        if self.is_dir():
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert check_writable(tmp_path / "a" / "b").is_dir()


def test_ambiguous_layouts_follow_the_container_and_lists_of_paths(tmp_path):
    """Frames 1, 3 or 4 pixels high leave the channel axis open: numpy arrays are read channels last,
    tensors channels first (no row is dropped as alpha). A list of image paths reads as a folder of them
    (grey and colour mix; sizes must agree); arrays of different sizes are an error naming one."""
    v = _clip(3, 4, 8)  # [3, 3, 4, 8]
    u8 = (v * 255).round().to(torch.uint8)
    hwc = u8.permute(0, 2, 3, 1)  # [3, 4, 8, 3]: 4 rows, as a channel count could be
    assert torch.equal(read_video(hwc.numpy()), u8.float() / 255)
    assert torch.equal(read_video(list(hwc.numpy())), u8.float() / 255)
    assert torch.equal(read_video(hwc.numpy()[0]), u8[:1].float() / 255)
    grey = u8[:, 0].numpy()  # numpy [3, 4, 8]: three grey frames, not one channels-first image
    assert torch.equal(read_video(grey), u8[:, :1].expand(-1, 3, -1, -1).float() / 255)
    assert read_video(torch.from_numpy(grey)).shape == (1, 3, 4, 8)  # a tensor: [C, H, W]
    t = _clip(2, 8, 3)  # tensor [2, 3, 8, 3]: channels first
    assert torch.equal(read_video(t), t) and torch.equal(read_video(list(t)), t)
    paths = []
    for i, f in enumerate(hwc.numpy()):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(f).save(paths[-1])
    assert torch.equal(read_video([str(p) for p in paths]), u8.float() / 255)
    assert torch.equal(read_video(paths, start=1, max_frames=1), u8[1:2].float() / 255)
    with pytest.raises(ValueError, match=r"frame 1 has shape \[4, 5, 3\].*one size"):
        read_video([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_video([paths[0], tmp_path / "missing.png"])
    Image.fromarray(hwc.numpy()[0, ..., 0]).save(tmp_path / "grey.png")  # grey and colour mix, as in a folder
    mixed = read_video([paths[0], tmp_path / "grey.png"])
    assert mixed.shape == (2, 3, 4, 8) and torch.equal(mixed[1], mixed[1, :1].expand(3, -1, -1))
    Image.fromarray(np.zeros((5, 8, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="one size: 0.png is 4x8, big.png 5x8"):
        read_video([paths[0], tmp_path / "big.png"])
    with pytest.raises(ValueError, match="a list of paths takes image files"):
        read_video([paths[0], write_video(_clip(2, 4, 8), tmp_path / "v.mp4")])


@pytest.mark.parametrize("fps", [0, 1e-5, -5, float("nan"), float("inf"), 1e6, "24", True])
def test_write_video_checks_fps(tmp_path, fps):
    with pytest.raises(ValueError, match="fps: expected"):
        write_video(_clip(2, 4, 4), tmp_path / "v.mp4", fps=fps)
    assert not list(tmp_path.iterdir())


def test_iter_masks_fixed_per_frame_and_videos(tmp_path):
    """Masks frame by frame for a stream: fixed ones repeat, mask videos / tensors / iterables give one per
    frame and end with it."""
    from itertools import islice

    from warped_fast.io import iter_masks

    h, w = 16, 24
    box = load_mask("box", 1, h, w)
    assert all(torch.equal(m, box) for m in islice(iter_masks("box", h, w), 5))
    img = np.zeros((h, w), np.uint8)
    img[2:6, 3:9] = 255
    Image.fromarray(img).save(tmp_path / "m.png")
    fixed = list(islice(iter_masks(tmp_path / "m.png", h, w), 3))
    assert len(fixed) == 3 and fixed[0].shape == (1, 1, h, w) and fixed[2].sum() == 24
    seq = torch.zeros(3, 1, h, w)
    for j in range(3):
        seq[j, :, j : j + 4, 2:8] = 1
    for source in (seq, seq[:, 0], seq.numpy(), list(seq)):
        got = list(iter_masks(source, h, w))
        assert len(got) == 3 and all(torch.equal(g, s[None]) for g, s in zip(got, seq, strict=True))
    frames = seq.expand(3, 3, h, w)
    folder = tmp_path / "masks"
    folder.mkdir()
    for j in range(3):  # 0/1-valued PNGs, as some tools write masks
        Image.fromarray(frames[j, 0].numpy().astype(np.uint8)).save(folder / f"{j}.png")
    got = list(iter_masks(folder, h, w))
    assert len(got) == 3 and all(torch.equal(g, s[None]) for g, s in zip(got, seq, strict=True))
    with pytest.raises(TypeError, match="mask: expected a mask, a mask file or an iterable of masks"):
        iter_masks(5, h, w)
    with pytest.raises(FileNotFoundError, match="mask: .*nope.mp4 does not exist"):
        iter_masks(tmp_path / "nope.mp4", h, w)
    # one mask in a folder, a list or a multi-frame file's frames: as load_mask reads them
    one = tmp_path / "one"
    one.mkdir()
    Image.fromarray(img).save(one / "0.png")
    assert all(torch.equal(m, fixed[0]) for m in islice(iter_masks(one, h, w), 4))
    assert all(torch.equal(m, box) for m in islice(iter_masks([box[0, 0]], h, w), 4))
    pages = [Image.fromarray((frames[j, 0].numpy() * 255).astype(np.uint8)) for j in range(3)]
    pages[0].save(tmp_path / "m.tif", save_all=True, append_images=pages[1:])
    got = list(iter_masks(tmp_path / "m.tif", h, w))
    assert torch.equal(torch.cat(got), load_mask(tmp_path / "m.tif", 3, h, w))
    with pytest.raises(ValueError, match="mask: expected size 16x24"):
        next(iter_masks(torch.zeros(8, 8), h, w))


def test_gif_frame_delays_are_whole_hundredths(tmp_path, caplog):
    """A GIF plays at the nearest rate its centisecond delays can give (at least 2 of them), with a
    warning when that is over 5% off the one asked for."""
    v = _clip()
    with caplog.at_level(logging.WARNING, "warped_fast"):
        assert video_fps(write_video(v, tmp_path / "a.gif", fps=25)) == 25
        assert video_fps(write_video(v, tmp_path / "b.gif", fps=24)) == 25
        assert not caplog.text
        assert video_fps(write_video(v, tmp_path / "c.gif", fps=60)) == 50  # not 100: a 10 ms delay
    assert "60 fps plays at 50 fps" in caplog.text
    assert video_fps(write_video(v, tmp_path / "d.gif", fps=0.001)) == pytest.approx(100 / 65535)  # 16 bits
    frames = [Image.fromarray(np.full((8, 8, 3), 40 * j, np.uint8)) for j in range(3)]
    frames[0].save(tmp_path / "e.gif", save_all=True, append_images=frames[1:], duration=10, loop=0)
    assert video_fps(tmp_path / "e.gif") == 10  # a 10 ms delay, shown as 100 ms


def test_a_resized_mask_file_is_read_a_frame_at_a_time_as_the_whole_one(tmp_path):
    """load_mask(..., size=) of a mask video or folder (0/255 or 0/1 PNGs) equals the mask read whole at
    the video's size, then resized; a mask of another size is named."""
    from warped_fast.io import resize_frames

    m = torch.zeros(3, 3, 16, 24)
    for j in range(3):
        m[j, :, 4:12, 5 + j : 15 + j] = 1
    folder01 = tmp_path / "m01"
    folder01.mkdir()
    for j in range(3):
        Image.fromarray(m[j, 0].numpy().astype(np.uint8)).save(folder01 / f"{j}.png")  # 0/1 values
    Image.fromarray((m[0, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "one.png")
    for src in (write_video(m, tmp_path / "m.gif"), folder01, tmp_path / "one.png"):
        whole = resize_frames(load_mask(src, 3, 16, 24), (8, 12))
        assert torch.equal(load_mask(src, 3, 16, 24, size=(8, 12)), whole)
        assert whole.shape == (3, 1, 8, 12) and whole.max() == 1
    # a 0/255 mask one of whose black frames holds stray values of 1: read as 0..255 over the whole file
    stray = tmp_path / "stray"
    stray.mkdir()
    a = np.zeros((16, 24), np.uint8)
    a[4:12, 6:18] = 255
    Image.fromarray(a).save(stray / "0.png")
    a[:] = 0
    a[0:8, 0:12] = 1
    Image.fromarray(a).save(stray / "1.png")
    whole = resize_frames(load_mask(stray, 2, 16, 24), (8, 12))
    assert torch.equal(load_mask(stray, 2, 16, 24, size=(8, 12)), whole) and whole[1].max() == 0
    with pytest.raises(ValueError, match="mask: expected size 8x8"):
        load_mask(folder01, 3, 8, 8, size=(4, 4))


def test_animated_png_and_webp_report_their_frame_rate(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), 40 * j, np.uint8)) for j in range(3)]
    for name in ("a.png", "a.webp"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=40, loop=0)
        assert video_fps(tmp_path / name) == 25.0
    frames[0].save(tmp_path / "still.png")
    assert video_fps(tmp_path / "still.png") is None


def test_collect_frames_equals_stack():
    from warped_fast.io.video import collect_frames

    frames = [torch.rand(3, 5, 7) for _ in range(70)]
    for n in (1, 32, 33, 70):
        assert torch.equal(collect_frames(iter(frames[:n]), chunk=32), torch.stack(frames[:n]))
    with pytest.raises(ValueError, match="video: zero frames"):
        collect_frames(iter([]))
    with pytest.raises(ValueError, match=r"frame 2 has shape \[3, 1, 7\]"):
        collect_frames(iter([*frames[:2], torch.rand(3, 1, 7)]))  # would broadcast into the buffer
