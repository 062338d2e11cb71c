"""LPIPS, FID, Inception score and CLIP score from local weight files (random weights built here: the
real files are never downloaded), against independent computations of each formula."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from warped_fast.metrics import clip_score, fid, frechet_distance, inception_score, lpips
from warped_fast.metrics.inception_net import FIDInception
from warped_fast.metrics.lpips_net import LPIPS
from warped_fast.metrics.perceptual import clip_preprocess, inception_score_from_logits

ALEX_SLICES = [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)]  # the lpips package's split of AlexNet


def _random_lpips(seed=0, net="alex") -> LPIPS:
    torch.manual_seed(seed)
    m = LPIPS(net)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    for lin in m.lins:
        lin.weight.abs_()  # learned heads are non-negative
    return m


def _frames(n=2, h=64, w=72, seed=1):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _alex_lpips_by_hand(sd, x, y):
    """LPIPS v0.1 with AlexNet written out layer by layer from a torchvision-layout state dict."""

    def feats(img):
        shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        h = (2 * img - 1 - shift) / scale
        out = []
        for i, (stride, pad, pool) in zip(
            [0, 3, 6, 8, 10], [(4, 2, 1), (1, 2, 1), (1, 1, 0), (1, 1, 0), (1, 1, 0)], strict=True
        ):
            h = F.relu(F.conv2d(h, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], stride, pad))
            out.append(h)
            if pool:
                h = F.max_pool2d(h, 3, 2)
        return out

    total = 0
    for k, (a, b) in enumerate(zip(feats(x), feats(y), strict=True)):
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + ((na - nb) ** 2 * sd[f"lin{k}"].view(1, -1, 1, 1)).sum(1).mean((1, 2))
    return total


def test_lpips_matches_a_layer_by_layer_computation_in_both_file_layouts(tmp_path):
    from safetensors.torch import save_file

    m = _random_lpips()
    feats = {k: v for k, v in m.state_dict().items() if k.startswith("features.")}
    heads = {f"lin{i}.model.1.weight": lin.weight.clone() for i, lin in enumerate(m.lins)}
    # torchvision backbone file (with its classifier) + the lpips heads file
    save_file({**feats, "classifier.1.weight": torch.zeros(4, 9216)}, str(tmp_path / "alexnet.safetensors"))
    torch.save(heads, tmp_path / "alex.pth")
    # a whole lpips.LPIPS state dict: net.slice<k>.<i>.*, lin<k>.model.1.weight, scaling_layer.*
    whole = {"scaling_layer.shift": torch.zeros(1, 3, 1, 1), "scaling_layer.scale": torch.ones(1, 3, 1, 1)}
    for k, v in feats.items():
        i = int(k.split(".")[1])
        s = next(n for n, (a, b) in enumerate(ALEX_SLICES, 1) if a <= i < b)
        whole[f"net.slice{s}.{k[len('features.') :]}"] = v
    torch.save({**whole, **heads}, tmp_path / "lpips_alex.pth")

    x, y = _frames(seed=1), _frames(seed=2)
    d_two = lpips(x, y, weights=[tmp_path / "alexnet.safetensors", tmp_path / "alex.pth"])
    d_one = lpips(x, y, weights=tmp_path / "lpips_alex.pth")
    sd = {**feats, **{f"lin{i}": lin.weight.flatten() for i, lin in enumerate(m.lins)}}
    want = _alex_lpips_by_hand(sd, x, y)
    assert d_two.shape == (2,)
    torch.testing.assert_close(d_two, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(d_one, d_two)
    # a distance: zero on equal frames, symmetric, growing with the perturbation
    torch.testing.assert_close(lpips(x, x, weights=tmp_path / "lpips_alex.pth"), torch.zeros(2))
    torch.testing.assert_close(lpips(y, x, weights=tmp_path / "lpips_alex.pth"), d_one)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    near = lpips(x, (x + 0.02 * noise).clamp(0, 1), weights=tmp_path / "lpips_alex.pth")
    far = lpips(x, (x + 0.2 * noise).clamp(0, 1), weights=tmp_path / "lpips_alex.pth")
    tiny = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="16x16 frames are too small for LPIPS"):
        lpips(tiny, tiny, weights=tmp_path / "lpips_alex.pth")
    assert (near > 0).all() and (far > near).all()


def test_lpips_vgg_loads_and_errors_name_the_problem(tmp_path):
    from safetensors.torch import save_file

    m = _random_lpips(net="vgg")
    heads = {f"lin{i}.model.1.weight": lin.weight for i, lin in enumerate(m.lins)}
    feats = {k: v for k, v in m.state_dict().items() if k.startswith("features.")}
    save_file({**feats, **heads}, str(tmp_path / "vgg.safetensors"))
    x = _frames(1, 32, 40)
    d = lpips(x, x.flip(-1), weights=tmp_path / "vgg.safetensors", net="vgg")
    assert d.shape == (1,) and d.item() > 0
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        lpips(x, x)
    with pytest.raises(ValueError, match="missing"):  # VGG weights are not AlexNet's
        lpips(x, x, weights=tmp_path / "vgg.safetensors", net="alex")
    save_file(feats, str(tmp_path / "no_heads.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['lins.0.weight'"):
        lpips(x, x, weights=tmp_path / "no_heads.safetensors", net="vgg")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="cannot read"):
        lpips(x, x, weights=tmp_path / "junk.pth", net="vgg")
    with pytest.raises(ValueError, match="net"):
        lpips(x, x, weights=tmp_path / "vgg.safetensors", net="squeeze")
    with pytest.raises(ValueError, match="pred/target"):
        lpips(x, x[..., :20], weights=tmp_path / "vgg.safetensors", net="vgg")


def test_frechet_distance_matches_the_closed_form_and_scipy():
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    # diagonal covariances: sum (s1 + s2 - 2 sqrt(s1 s2)) + |mu1 - mu2|^2
    s1, s2 = torch.rand(5, generator=g, dtype=torch.float64), torch.rand(5, generator=g, dtype=torch.float64)
    m1, m2 = (
        torch.randn(5, generator=g, dtype=torch.float64),
        torch.randn(5, generator=g, dtype=torch.float64),
    )
    want = float((m1 - m2).square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())
    assert frechet_distance(m1, torch.diag(s1), m2, torch.diag(s2)) == pytest.approx(want, rel=1e-10)
    # full covariances, against scipy's matrix square root (pytorch-fid's formula)
    a, b = (
        torch.randn(8, 8, generator=g, dtype=torch.float64),
        torch.randn(8, 8, generator=g, dtype=torch.float64),
    )
    c1, c2 = a @ a.T / 8, b @ b.T / 8
    covmean = linalg.sqrtm(c1.numpy() @ c2.numpy()).real
    want = float((m1[:1] - m2[:1]).square().sum()) + np.trace(c1.numpy() + c2.numpy() - 2 * covmean)
    got = frechet_distance(m1[:1].expand(8), c1, m2[:1].expand(8), c2) - 7 * float((m1[0] - m2[0]) ** 2)
    assert got == pytest.approx(want, rel=1e-8)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialized FID Inception saved in pytorch-fid's (torchvision's) key layout."""
    torch.manual_seed(0)
    net = FIDInception()
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):  # keep activations at unit scale through 90+ layers
            mod.running_var.fill_(2.0)
    path = tmp_path_factory.mktemp("inception") / "pt_inception.pth"
    torch.save(net.state_dict(), path)
    return path


def test_fid_is_zero_on_equal_sets_and_positive_otherwise(inception_file):
    real = _frames(3, 48, 48, seed=1)
    other = (real.flip(-1) * 0.5 + 0.25).contiguous()
    same = fid(real, real, weights=inception_file)
    diff = fid(real, other, weights=inception_file)
    assert abs(same) < 1e-6 * max(1.0, diff)
    assert diff > 0
    # the features FID uses: the network's 2048-d pool output, equal for equal frames in any batch size
    net = FIDInception.from_file(inception_file, "fid")
    p1, _ = net(real[:1])
    p2, logits = net(real[:2])
    torch.testing.assert_close(p1[0], p2[0], rtol=1e-4, atol=1e-5)
    assert p2.shape == (2, 2048) and logits.shape == (2, 1008)
    with pytest.raises(ValueError, match="at least 2"):
        fid(real[:1], real, weights=inception_file)


def test_inception_score_formula_and_bounds(inception_file):
    # K equally used, certain classes: IS = K; identical predictions: IS = 1
    logits = torch.full((8, 1008), -1e4, dtype=torch.float64)
    logits[torch.arange(8), torch.arange(8) % 4] = 0
    mean, std = inception_score_from_logits(logits, splits=1)
    assert mean == pytest.approx(4.0) and std == pytest.approx(0.0, abs=1e-9)
    mean, _ = inception_score_from_logits(torch.zeros(6, 1008, dtype=torch.float64), splits=3)
    assert mean == pytest.approx(1.0)
    # As torch-fidelity: the rows shuffled by numpy's RandomState(2020), then exactly `splits` groups,
    # rows [i T // splits, (i + 1) T // splits), also when splits does not divide T: 12 frames in 10
    # groups of 1 or 2.
    logits = torch.randn(12, 1008, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    shuffled = logits[torch.from_numpy(np.random.RandomState(2020).permutation(12))]
    groups = [shuffled[i * 12 // 10 : (i + 1) * 12 // 10] for i in range(10)]
    want = torch.stack([inception_score_from_logits(g, splits=1)[0] * torch.ones(()) for g in groups])
    mean, std = inception_score_from_logits(logits, splits=10)
    assert mean == pytest.approx(float(want.mean())) and std == pytest.approx(float(want.std(unbiased=False)))
    with pytest.raises(ValueError, match="splits"):
        inception_score_from_logits(logits, splits=13)
    m, s = inception_score(_frames(4, 40, 40), weights=inception_file, splits=2)
    assert 1.0 <= m <= 1008 and s >= 0
    with pytest.raises(ValueError, match="at least 2"):
        inception_score(_frames(1, 40, 40), weights=inception_file, splits=2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inception_score(_frames(4), weights=inception_file.with_name("missing.pth"))
    (inception_file.parent / "wrong.pth").write_bytes(b"")
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, inception_file.parent / "wrong.pth")
    with pytest.raises(ValueError, match="missing"):
        fid(_frames(2), _frames(2), weights=inception_file.parent / "wrong.pth")


def _tiny_clip_folder(path):
    """A randomly initialized CLIP with a character-level BPE tokenizer, saved like a hub folder."""
    transformers = pytest.importorskip("transformers")
    import json

    # GPT-2 / CLIP byte-to-unicode table: every byte gets a printable character
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in bs] + [chr(256 + n) for n in range(256 - len(bs))]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    path.mkdir()
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    cfg = transformers.CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(cfg).eval()
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return model, tok


def test_clip_score_from_a_local_folder(tmp_path):
    model, tok = _tiny_clip_folder(tmp_path / "clip")
    frames = _frames(3, 40, 56)
    captions = ["a cat", "a dog on grass", "sky"]
    got = clip_score(frames, captions, model_dir=tmp_path / "clip")
    with torch.no_grad():
        out = model(
            pixel_values=clip_preprocess(frames, 32),
            return_dict=True,
            **tok(captions, padding=True, return_tensors="pt"),
        )
    cos = F.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)
    assert got == pytest.approx(float((100 * cos.clamp(min=0)).mean()), rel=1e-5)
    assert 0 <= clip_score(frames, "a cat", model_dir=tmp_path / "clip") <= 100
    with pytest.raises(ValueError, match="text"):
        clip_score(frames, ["one", "two"], model_dir=tmp_path / "clip")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        clip_score(frames, "a cat")


def test_clip_preprocess_matches_the_clip_image_processor():
    transformers = pytest.importorskip("transformers")
    proc = transformers.models.clip.image_processing_pil_clip.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    # smooth content: resampling filters (PIL vs torch bicubic) agree on it
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 80), indexing="ij")
    frame = torch.stack([xx, yy, (xx + yy) / 2])[None]
    img = (frame[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    want = proc(images=img, return_tensors="pt")["pixel_values"]
    got = clip_preprocess(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, 32)
    assert got.shape == want.shape == (1, 3, 32, 32)
    torch.testing.assert_close(got, want, atol=0.03, rtol=0)
