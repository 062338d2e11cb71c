"""Flow files, the latent-grid mapping, composition back to frame 0, occlusion masks, RAFT errors."""

import importlib.util

import numpy as np
import pytest
import torch

import warped_fast as wf
from warped_fast.flow import (
    as_flow,
    coords_to_first,
    estimate_flow_raft,
    flow_to_first,
    flow_to_latent,
    load_flow,
    load_raft,
    occlusions,
    read_flo,
    save_flow,
    write_flo,
)


def test_flo_roundtrip_and_layouts(tmp_path, gen):
    f = torch.randn(2, 5, 7, generator=gen)
    write_flo(tmp_path / "a.flo", f)
    raw = (tmp_path / "a.flo").read_bytes()
    assert raw[:4] == b"PIEH" and len(raw) == 12 + 4 * 2 * 5 * 7  # Middlebury header: "PIEH", w, h
    assert np.frombuffer(raw[4:12], "<i4").tolist() == [7, 5]
    assert torch.equal(read_flo(tmp_path / "a.flo"), f)
    assert torch.equal(load_flow(tmp_path / "a.flo"), f)
    v = torch.randn(3, 2, 4, 6, generator=gen)
    save_flow(tmp_path / "v.npy", v)
    assert torch.equal(load_flow(tmp_path / "v.npy"), v)
    np.save(tmp_path / "hwc.npy", v.permute(0, 2, 3, 1).numpy())  # channels last
    assert torch.equal(load_flow(tmp_path / "hwc.npy"), v)
    np.save(tmp_path / "be.npy", v.numpy().astype(">f4"))  # big-endian
    assert torch.equal(load_flow(tmp_path / "be.npy"), v)
    save_flow(tmp_path / "v.pt", v)
    assert torch.equal(load_flow(tmp_path / "v.pt"), v)
    assert torch.equal(as_flow(v.double()), v)


def test_flow_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no flow file"):
        load_flow(tmp_path / "missing.flo")
    (tmp_path / "bad.flo").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="magic"):
        read_flo(tmp_path / "bad.flo")
    import numpy as np

    np.array([202021.25], "<f4").tofile(tmp_path / "cut.flo")
    with pytest.raises(ValueError, match="cut.flo is truncated"):
        read_flo(tmp_path / "cut.flo")
    with pytest.raises(ValueError, match="one field"):
        write_flo(tmp_path / "x.flo", torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match="expected a .flo"):
        save_flow(tmp_path / "x.png", torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="2 channels"):
        as_flow(torch.zeros(3, 4, 4))


def test_flow_to_latent():
    # An affine field u(x, y) = (a x + b, c y + d) is reproduced exactly at latent pixel centres.
    t, h, w, f = 2, 16, 24, 8
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    flow = torch.stack((0.1 * xs + 3.0, -0.05 * ys + 1.0))[None].expand(t, 2, h, w)
    lat = flow_to_latent(flow, f)
    assert lat.shape == (t, 2, h // f, w // f) and lat.dtype == torch.float64
    cx = (torch.arange(w // f, dtype=torch.float64) + 0.5) * f - 0.5
    cy = (torch.arange(h // f, dtype=torch.float64) + 0.5) * f - 0.5
    assert torch.allclose(lat[0, 0], ((0.1 * cx + 3.0) / f)[None].expand(h // f, -1))
    assert torch.allclose(lat[1, 1], ((-0.05 * cy + 1.0) / f)[:, None].expand(-1, w // f))
    assert torch.allclose(flow_to_latent(torch.full((1, 2, 8, 8), 4.0), 4), torch.ones(1, 2, 2, 2))
    # Half-precision flows: positions computed in float32 (a bfloat16 grid rounds the centres and the
    # border clamp, reading half a pixel off or into the next row on wide frames).
    wide = torch.zeros(1, 2, 16, 2048)
    wide[:, 0] = (torch.arange(2048) % 16).float()  # exact in bfloat16
    for dt in (torch.bfloat16, torch.float16):
        out = flow_to_latent(wide.to(dt), 8)
        assert out.dtype == dt
        assert torch.equal(out.float(), flow_to_latent(wide, 8).to(dt).float())
    assert flow_to_latent(torch.zeros(1, 2, 4, 2048, dtype=torch.bfloat16), 2).shape == (1, 2, 2, 1024)
    with pytest.raises(ValueError, match="divisible"):
        flow_to_latent(torch.zeros(1, 2, 10, 16), 8)
    with pytest.raises(ValueError, match="factor"):
        flow_to_latent(torch.zeros(1, 2, 8, 8), 0)


def test_compose_back_to_first_frame():
    t, h, w = 4, 6, 7
    back = torch.zeros(t - 1, 2, h, w)
    back[:, 0] = -0.75  # content pans right by 0.75 px per frame
    back[:, 1] = 0.5
    x = coords_to_first(back)
    assert x.shape == (t, h, w, 2)
    grid = wf.identity_coords(h, w)[0]
    for j in range(t):
        assert torch.allclose(x[j], grid + torch.tensor([-0.75, 0.5]) * j, atol=1e-5)
    f0 = flow_to_first(back)
    assert f0.shape == (t, 2, h, w) and torch.allclose(f0[3, 0], torch.full((h, w), -2.25))


def test_occlusions_of_a_moving_square():
    h = w = 12
    fwd = torch.zeros(1, 2, h, w)
    back = torch.zeros(1, 2, h, w)
    fwd[0, 0, 3:7, 3:7] = 3  # the square moves right by 3
    back[0, 0, 3:7, 6:10] = -3
    new = occlusions(fwd, back, "new")[0, 0]
    prev = occlusions(fwd, back, "prev")[0, 0]
    want_new = torch.zeros(h, w, dtype=torch.bool)
    want_new[3:7, 3:6] = True  # uncovered background
    want_prev = torch.zeros(h, w, dtype=torch.bool)
    want_prev[3:7, 7:10] = True  # background hidden by the square
    assert torch.equal(new, want_new) and torch.equal(prev, want_prev)
    with pytest.raises(ValueError, match="frame"):
        occlusions(fwd, back, "both")
    fwd[0, 1, 0, 0] = float("nan")  # named as the caller's argument, not the op's
    with pytest.raises(ValueError, match="fwd_flows: expected finite"):
        occlusions(fwd, back, "new")
    with pytest.raises(TypeError, match="back_flows: expected a floating-point"):
        occlusions(back, back.int(), "new")
    with pytest.raises(ValueError, match="back_flows: expected finite"):
        coords_to_first(fwd)
    with pytest.raises(ValueError, match="flow: expected finite"):
        flow_to_latent(fwd, 2)


def test_raft_needs_local_weights_and_torchvision(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_raft(tmp_path / "raft.safetensors")
    with pytest.raises(FileNotFoundError, match="local weights"):
        load_raft(None)

    class Fake(torch.nn.Module):  # RAFT's call signature: a list of flow refinements
        def forward(self, a, b, num_flow_updates=12):
            return [torch.zeros(a.shape[0], 2, *a.shape[-2:])]

    with pytest.raises(ValueError, match=r"frames: float frames must be in \[0, 1\].*255"):
        estimate_flow_raft(torch.rand(2, 3, 16, 16) * 255, Fake())
    with pytest.raises(ValueError, match="batch: expected an int >= 1"):
        estimate_flow_raft(torch.rand(2, 3, 16, 16), Fake(), batch=0)
    fwd, back = estimate_flow_raft(torch.rand(3, 1, 12, 20), Fake(), batch=1)
    assert fwd.shape == back.shape == (2, 2, 12, 20)
    if importlib.util.find_spec("torchvision") is None:
        (tmp_path / "raft.pt").write_bytes(b"")
        with pytest.raises(ImportError, match="torchvision"):
            estimate_flow_raft(torch.zeros(2, 3, 16, 16), tmp_path / "raft.pt")
