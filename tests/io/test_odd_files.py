"""Files met in practice: damaged or hidden images in a folder, grey + alpha and 16-bit PNGs, animated
images, an output folder holding other images, failed writes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from warped_fast.io import FrameStore, load_mask, read_video, write_video
from warped_fast.pipelines.resume import generator_key


def _frames(t=4, h=8, w=10, seed=0):
    return torch.rand(t, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_folder_skips_hidden_files_and_names_a_damaged_image(tmp_path):
    v = _frames()
    for i, f in enumerate(v):
        Image.fromarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
            tmp_path / f"{i:04d}.png"
        )
    (tmp_path / "._0001.png").write_bytes(b"\0\5\26\7")  # a macOS sidecar
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(
        tmp_path / ".frame_00002.tmp.png"
    )  # a store's temp file
    assert torch.allclose(read_video(tmp_path), v, atol=0.5 / 255 + 1e-6)
    good = (tmp_path / "0002.png").read_bytes()
    (tmp_path / "0002.png").write_bytes(good[: len(good) // 2])  # truncated (an interrupted export)
    with pytest.raises(ValueError, match=r"video: cannot read .*0002\.png"):
        read_video(tmp_path)


def test_grey_alpha_and_16_bit_pngs(tmp_path):
    a = np.zeros((8, 10), np.uint8)
    a[2:5, 3:7] = 255
    la = np.stack([a, np.full_like(a, 255)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "mask_la.png")
    m = load_mask(tmp_path / "mask_la.png", 2, 8, 10)
    assert m.shape == (2, 1, 8, 10) and torch.equal(m[0, 0], torch.from_numpy(a > 127))
    g16 = (np.arange(80, dtype=np.uint16).reshape(8, 10) * 800).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    v = read_video(tmp_path / "g16.png")
    assert v.shape == (1, 3, 8, 10)
    assert torch.allclose(v[0, 0], torch.from_numpy(g16.astype(np.float32) / 65535), atol=0.5 / 255 + 1e-6)
    folder = tmp_path / "mixed"  # 8- and 16-bit frames in one folder: one scale
    folder.mkdir()
    Image.fromarray(g16).save(folder / "0.png")
    Image.fromarray((g16 // 257).astype(np.uint8)).save(folder / "1.png")
    m = read_video(folder)
    assert m.shape == (2, 3, 8, 10) and (m[0] - m[1]).abs().max() <= 1 / 255 + 1e-6
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="mask: video: cannot decode"):
        load_mask(tmp_path / "bad.png", 1, 8, 10)


@pytest.mark.parametrize("suffix", [".webp", ".png", ".tiff"])
def test_animated_and_multi_page_images_are_videos(tmp_path, suffix):
    v = _frames()
    ims = [Image.fromarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for f in v]
    p = tmp_path / f"anim{suffix}"
    kw = {"lossless": True} if suffix == ".webp" else {}
    ims[0].save(p, save_all=True, append_images=ims[1:], duration=100, **kw)
    out = read_video(p)
    assert out.shape == (4, 3, 8, 10)
    assert torch.allclose(out, v, atol=0.5 / 255 + 1e-6)
    assert torch.equal(read_video(p, start=1, step=2), out[1::2])


def test_frame_store_refuses_a_folder_of_other_images(tmp_path):
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "0000.png")  # an input's frames
    with pytest.raises(
        ValueError, match=r"output: .* holds other images \(0000\.png\); choose an empty folder"
    ):
        FrameStore(tmp_path, {"job": 1}, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0000.png"]  # nothing written
    (tmp_path / "0000.png").unlink()
    (tmp_path / "notes.txt").write_text("kept")  # other files do not mix with frames
    (tmp_path / "._0000.png").write_bytes(b"\0")  # nor hidden ones (the reader skips them)
    FrameStore(tmp_path, {"job": 1}, 3)
    # an image added to a started job's folder between runs is refused on resume as well
    store = FrameStore(tmp_path, {"job": 1}, 3)
    store.write(0, torch.zeros(3, 8, 10))
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "input_0.png")
    with pytest.raises(ValueError, match=r"holds other images \(input_0\.png\)"):
        FrameStore(tmp_path, {"job": 1}, 3)
    (tmp_path / "input_0.png").unlink()
    long = FrameStore(tmp_path / "long", {"job": 2}, 100_001)  # frame 100000 has six digits: its own
    long.write(100_000, torch.zeros(3, 8, 10))
    FrameStore(tmp_path / "long", {"job": 2}, 100_001)


def test_failed_write_leaves_no_partial_file(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - whatever the encoder raises
        write_video(_frames(), tmp_path / "a.mp4", codec="no-such-codec")
    assert list(tmp_path.iterdir()) == []


def test_numpy_integer_seed_is_a_job_key():
    key = generator_key(np.int64(3))
    assert key == 3 and type(key) is int and json.dumps({"g": key})


def test_iter_video_checks_a_folder_at_the_call(tmp_path):
    from warped_fast.io import iter_video

    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="video: no image files in folder"):
        iter_video(tmp_path)  # not at the first frame
