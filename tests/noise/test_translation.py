"""Translations: exact integer shifts, GP's exact sub-pixel consistency, bilinear's variance loss (the
baseline's known flaw, measured), fresh noise for disoccluded pixels, GP's occlusion option."""

import pytest
import torch

from warped_fast import reference
from warped_fast.noise import (
    RFFConfig,
    RFFField,
    fresh_offset,
    identity_coords,
    make_noise_warper,
    warp_noise_video,
)

from .common import translation

EXACT = [
    ("gp", {}),
    ("nearest", {}),
    ("bilinear", {}),
    ("hiwyn", {}),
    ("infres", {}),
    ("gwtf", {}),
    ("gwtf", {"upsample": 2}),
]


@pytest.mark.parametrize("method,opts", EXACT, ids=[m + ("-up2" if o else "") for m, o in EXACT])
@pytest.mark.parametrize("shift", [(2, -1), (-3, 0), (0, 1)])
def test_integer_translation_is_exact(method, opts, shift):
    t, c, h, w = 4, 3, 14, 17
    back, fwd = translation(t, h, w, shift)
    v = warp_noise_video(method, (c, h, w), back, fwd, generator=2, **opts)
    sx, sy = shift
    # frame j at (x, y) equals frame j-1 at (x - sx, y - sy) wherever that pixel exists
    ys = slice(max(sy, 0), h + min(sy, 0))
    xs = slice(max(sx, 0), w + min(sx, 0))
    ps = slice(max(-sy, 0), h + min(-sy, 0))
    px = slice(max(-sx, 0), w + min(-sx, 0))
    for j in range(1, t):
        if method == "gp":  # the field at the shifted points, to float32 rounding (block-relative phases)
            err = (v[j][:, ys, xs] - v[j - 1][:, ps, px]).abs().max().item()
            assert err < 1e-5, f"gp: frame {j} differs by {err:.2e}"
        else:
            assert torch.equal(v[j][:, ys, xs], v[j - 1][:, ps, px]), f"{method}: frame {j} differs"


def test_gp_subpixel_translation_is_exactly_consistent():
    """u_j(x) = xi(x - j s): the value at x in frame j equals frame j-1's field at x - s."""
    t, c, h, w = 5, 4, 16, 20
    s = (0.37, -0.21)
    back, _ = translation(t, h, w, s)
    cfg = RFFConfig(num_features=1000)
    v = warp_noise_video("gp", (c, h, w), back, generator=4, rff=cfg)
    warper = make_noise_warper("gp", rff=cfg)
    warper.reset((c, h, w), 4)
    field = warper.field
    for j in range(1, t):
        want = field(identity_coords(h, w) - torch.tensor(s) * j)[0]
        err = (v[j] - want).abs().max().item()
        # float32 composition of j offsets and |z| <= pi rad/px: ~1e-5
        assert err < 1e-4, f"frame {j}: max error {err:.2e}"
    # Outside the frame too: the entering column is the GP's continuation, not fresh noise.
    assert torch.allclose(
        v[1][:, :, 0], field(identity_coords(h, w) - torch.tensor(s))[0][:, :, 0], atol=1e-4
    )


def test_gwtf_follows_slow_pan_only_on_a_finer_grid():
    """GWTF rounds positions every frame: at 1x a 0.37 px/frame pan never moves the noise; on an
    8x grid it moves by 3/8 px per frame."""
    t, c, h, w = 4, 2, 32, 32
    back, fwd = translation(t, h, w, (0.37, 0.0))
    v1 = warp_noise_video("gwtf", (c, h, w), back, fwd, generator=0)
    assert all(torch.equal(v1[j], v1[0]) for j in range(t))
    v8 = warp_noise_video("gwtf", (c, h, w), back, fwd, generator=0, upsample=8)
    # after 8 frames of 3/8 px the 8x state has moved by exactly 3 px: check the 1 px move at
    # frame 8/3 indirectly: frame 3 (9/8 px) correlates best with frame 0 moved by 1 px
    a = v8[3, :, :, 4:-4].flatten()
    corr = {
        d: torch.corrcoef(torch.stack([a, v8[0, :, :, 4 - d : w - 4 - d].flatten()]))[0, 1].item()
        for d in (0, 1, 2)
    }
    assert corr[1] > 0.8 and corr[0] < 0.3 and corr[2] < 0.3, corr


def test_bilinear_loses_variance_at_subpixel_shifts():
    """The baseline's known flaw: one bilinear step of white noise shifted by (a, b) has variance
    ((1-a)^2 + a^2) ((1-b)^2 + b^2); it keeps dropping frame after frame."""
    t, c, h, w = 4, 4, 64, 64
    a, b = 0.37, 0.37
    back, _ = translation(t, h, w, (a, b))
    v = warp_noise_video("bilinear", (c, h, w), back, generator=0)
    inner = v[:, :, 4:, 4:]  # away from the fresh border strip
    var = inner.double().var(dim=(1, 2, 3))
    predicted = ((1 - a) ** 2 + a**2) * ((1 - b) ** 2 + b**2)  # 0.2849
    assert abs(var[0].item() - 1) < 0.05
    assert abs(var[1].item() - predicted) < 0.02, f"measured {var[1]:.4f} vs predicted {predicted:.4f}"
    assert var[3] < var[2] < var[1] < 0.3, f"variance per frame {var.tolist()}"


@pytest.mark.parametrize("method", ["nearest", "bilinear", "hiwyn", "infres", "gwtf"])
def test_disoccluded_pixels_get_fresh_noise(method):
    """Content pans right by 2 px: the 2 entering columns of frame 1 are fresh N(0, 1) draws,
    independent of frame 0."""
    n, c, h, w = 150, 2, 6, 8
    back, fwd = translation(2, h, w, (2, 0))
    v = torch.stack([warp_noise_video(method, (c, h, w), back, fwd, generator=s) for s in range(n)])
    strip = v[:, 1, :, :, :2].double()  # [n, c, h, 2]
    prev = v[:, 0, :, :, :2].double()
    assert abs(strip.var().item() - 1) < 0.1
    assert abs(strip.mean().item()) < 0.1
    a, b = strip.flatten(1).T, prev.flatten(1).T  # per pixel: correlation across seeds
    corr = ((a - a.mean(1, keepdim=True)) * (b - b.mean(1, keepdim=True))).mean(1) / (a.std(1) * b.std(1))
    assert corr.abs().max() < 0.35 and abs(corr.mean().item()) < 0.06, f"corr with frame 0: {corr.tolist()}"
    # ... and of every pixel of frame 0 (noise moved over from elsewhere is not fresh): [24, 96] pairs
    s_all, f_all = v[:, 1, :, :, :2].flatten(1).double(), v[:, 0].flatten(1).double()
    za = (s_all - s_all.mean(0)) / s_all.std(0)
    zb = (f_all - f_all.mean(0)) / f_all.std(0)
    corr_all = za.T @ zb / (n - 1)
    assert corr_all.abs().max() < 0.45, f"max |corr| with any frame-0 pixel {corr_all.abs().max():.2f}"
    assert not any(torch.isin(s_all[k], f_all[k]).any() for k in range(n)), "entering pixels copy frame 0"
    # the rest is carried exactly
    assert torch.equal(v[:, 1, :, :, 2:], v[:, 0, :, :, :-2])


def _moving_square(h, w, x0, size, dx):
    """A square moving right by dx over a static background: (back, fwd) of one pair, [2, h, w] each."""
    back = torch.zeros(2, h, w)
    fwd = torch.zeros(2, h, w)
    fwd[0, x0 : x0 + size, x0 : x0 + size] = dx  # rows x0.., columns x0.. of the previous frame
    back[0, x0 : x0 + size, x0 + dx : x0 + dx + size] = -dx
    return back, fwd


def test_gp_occlusion_option_gives_fresh_noise():
    c, h, w = 2, 16, 16
    back, fwd = _moving_square(h, w, 4, 6, 3)
    cfg = RFFConfig(num_features=500)
    warper = make_noise_warper("gp", rff=cfg, occlusion=True)
    assert warper.uses_forward_flow
    warper.reset((c, h, w), 9)
    u1 = warper.step(back, fwd)
    plain = make_noise_warper("gp", rff=cfg)
    plain.reset((c, h, w), 9)
    p1 = plain.step(back)
    field: RFFField = warper.field
    # Disoccluded: rows 4..9, columns 4..6 (the square left them; background back flow is 0 there,
    # but the previous pixel moved away).
    occ = torch.zeros(h, w, dtype=torch.bool)
    occ[4:10, 4:7] = True
    fresh_xy = identity_coords(h, w, offset=fresh_offset(0, h, w))
    fresh = field(fresh_xy)[0]
    # Those pixels share blocks with near-by coordinates, so their phases are absolute float32 ones,
    # which at 16384 px err by ~1e-3 rad per feature: compared with float64 at the float32 reference's
    # own error there.
    f64 = reference.gp_noise(fresh_xy.double(), field.z.double(), field.b.double(), field.w.double())[0]
    ref_err = (reference.gp_noise(fresh_xy, field.z, field.b, field.w)[0].double() - f64).abs().max().item()
    assert (u1.double() - f64)[:, occ].abs().max().item() <= 2 * ref_err + 1e-5
    # the rest as without the option (to float32 rounding: a block holding far-away points takes absolute
    # phases, its near points then round differently)
    assert (u1 - p1)[:, ~occ].abs().max().item() < 1e-5
    # without the option, those pixels reuse the noise of what was there (the square's old noise)
    assert not torch.allclose(p1[:, occ], fresh[:, occ], atol=1e-2)
    with pytest.raises(ValueError, match="fwd_flow"):
        warper.step(back)


def test_gp_fresh_noise_moves_on_without_mixing_tiles():
    """After a disocclusion, a sub-pixel pan moves the fresh noise and the rest: a pixel whose footprint
    spans a fresh tile and frame 0's plane follows one of its taps, never coordinates between the two
    (noise from neither side), and the fresh block moves with the pan."""
    c, h, w, s = 2, 16, 20, 0.3
    back, fwd = _moving_square(h, w, 4, 5, 3)
    warper = make_noise_warper("gp", rff=RFFConfig(num_features=300), occlusion=True)
    warper.reset((c, h, w), 3)
    warper.step(back, fwd)
    pan = torch.zeros(2, h, w)
    pan[0] = s
    fresh_x = fresh_offset(0, h, w)[0]
    first = None
    for _ in range(7):
        before = warper.coords[0].clone()
        warper.step(-pan, pan)
        x = warper.coords[0, ..., 0]
        far = x > fresh_x - 64
        assert ((x < 64) | far).all(), "coordinates between frame 0's plane and the fresh tile"
        assert far.sum() == 15  # the fresh block (5 x 3) moves on, whole
        # pixel x comes from x - s: where a tap is on the fresh tile, its left tap moved on by 1 - s, or its
        # right tap by -s (elsewhere the square's own motion edge in frame 0's plane interpolates)
        new = warper.coords[0, :, 1:]
        left = (new - before[:, :-1] - torch.tensor([1 - s, 0.0])).abs().amax(-1)
        right = (new - before[:, 1:] + torch.tensor([s, 0.0])).abs().amax(-1)
        on_tile = (before[:, :-1, 0] > fresh_x - 64) | (before[:, 1:, 0] > fresh_x - 64)
        assert torch.minimum(left, right)[on_tile].max() < 1e-3
        cols = far.nonzero()[:, 1].float().mean()
        first = cols if first is None else first
    assert 1.0 <= cols - first <= 2.6  # 6 frames of 0.3 px: 1.8 px, to the pixel


def test_gp_coordinates_entering_another_tile_are_reported(caplog):
    """A pixel whose coordinates were extrapolated into another fresh-noise tile's part of the plane (its
    box and half the gap around it) warns, once per clip: the two could repeat each other's noise.
    Extrapolation inside its own tile's part, or into the part of a tile no pixel holds, does not."""
    import logging

    h, w = 8, 10
    warper = make_noise_warper("gp", rff=RFFConfig(num_features=16), occlusion=True)
    warper.reset((1, h, w), 0)
    warper.frame = 3
    warper.tiles[:, :5], warper.tiles[:, 5:] = 1, 2
    for t in (1, 2):
        ox, oy = fresh_offset(t - 1, h, w)
        warper.coords[0][warper.tiles == t] = identity_coords(h, w, offset=(ox, oy))[0][warper.tiles == t]
    box1, box2 = fresh_offset(0, h, w)[0], fresh_offset(1, h, w)[0]

    def warned(x: float, tile: int = 1) -> bool:
        warper.coords[0, 0, 0, 0], warper.tiles[0, 0], warper._warned_tiles = x, tile, False
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="warped_fast"):
            warper._check_tiles()
        return any("another fresh-noise tile" in r.getMessage() for r in caplog.records)

    assert not warned(box1 + 3)
    assert not warned(box1 + w + 100)  # its own part: within half the 256 px gap
    assert warned(box2 - 100) and warper._warned_tiles  # tile 2's part
    assert warned(box2 + 2, tile=0)  # frame 0's plane, extrapolated into tile 2's box
    assert not warned(fresh_offset(2, h, w)[0] + 2)  # tile 3's part: no pixel holds tile 3


def test_tile_with_the_largest_share_of_a_footprint_wins():
    """Where three tiles meet, a pixel takes the tile holding most of its footprint (not one whose label
    is nearest to some average), and follows that tile's tap."""
    from warped_fast.noise.gp_warp import compose_within_tiles

    tiles = torch.tensor([[0, 5], [3, 5]])
    coords = identity_coords(2, 2).clone()
    coords[0, tiles > 0] += 1000.0 * tiles[tiles > 0, None]  # far apart, by tile
    back = torch.zeros(2, 2, 2)
    back[:, 0, 0] = torch.tensor([0.5, 0.2])  # pixel (0, 0) reads 0: 0.4, 5: 0.4 + 0.1, 3: 0.1
    new, tile, own = compose_within_tiles(coords, tiles, torch.ones(2, 2), back)
    assert tile[0, 0] == 5 and own[0, 0] == pytest.approx(0.5)
    assert new[0, 0, 0].tolist() == pytest.approx([5001.0 - 0.5, 5000.0 + 0.2])  # tap (x 1, y 0), moved


def test_identity_flow_is_exact_past_2_24_pixels():
    """Flat pixel indices stay exact on frames larger than float32's exact integers (2^24 pixels)."""
    from warped_fast.noise.grid_warp import nearest_sample
    from warped_fast.noise.gwtf import _round_target

    h = w = 4100
    noise = torch.randn(1, h, w, generator=torch.Generator().manual_seed(0))
    out, valid = nearest_sample(noise, torch.zeros(2, h, w))
    assert torch.equal(out, noise) and bool(valid.all())
    idx, ok = _round_target(torch.zeros(2, h, w))
    assert torch.equal(idx, torch.arange(h * w)) and bool(ok.all())


def test_gp_coordinate_growth_is_reported(caplog):
    """Flows that disagree near the edges compound through the linear extrapolation outside the frame:
    once the map leaves float32's exact range a warning says so (once per clip); a map that is no longer
    finite is a clear error naming the noise, not the noise op's."""
    import logging

    g = torch.Generator().manual_seed(0)
    h = w = 32
    warper = make_noise_warper("gp", rff=RFFConfig(num_features=64))
    warper.reset((2, h, w), 0)
    with caplog.at_level(logging.WARNING, logger="warped_fast"):
        for _ in range(40):
            back = torch.zeros(2, h, w)
            back[0] = -1
            back += torch.randn(2, h, w, generator=g)  # 1 px of jitter per pixel: not an optical flow
            warper.step(back, -back)
    warnings = [r for r in caplog.records if "composed coordinate map" in r.getMessage()]
    assert len(warnings) == 1 and "no longer exact" in warnings[0].getMessage()
    warper.coords[0, :, 0, 0] = -3e38  # extrapolated once more: past float32's range
    back = torch.zeros(2, h, w)
    back[0] = -1
    with pytest.raises(
        ValueError, match="noise: the composed coordinate map of frame 41 is no longer finite"
    ):
        warper.step(back)
