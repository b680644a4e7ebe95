"""Multi-order interactions (benchmarks/analysis/multiorder.py) on models whose interactions are known by hand,
and the CLI on tiny exported backbones + a tiny generated ImageNet-style folder."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.analysis.classifier import ClassifierError, fit_probe, load_head, log_odds
from benchmarks.analysis.interactions import main as interactions_main
from benchmarks.analysis.multiorder import (candidate_pairs, context_size, interaction_strengths, normalise,
                                            patch_index_map)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _patch_image(values, grid: int, px: int) -> torch.Tensor:
    """(1, 1, grid*px, grid*px) float64 image whose patch p (row-major) is constant values[p]."""
    pm = patch_index_map(grid * px, grid * px, grid)
    return torch.tensor(values, dtype=torch.float64)[pm].view(1, 1, grid * px, grid * px)


def _patch_mean(x: torch.Tensor, grid: int, p: int) -> torch.Tensor:
    """(b,) mean of patch p over its pixels and channels."""
    pm = patch_index_map(x.shape[-2], x.shape[-1], grid)
    return x.flatten(2)[:, :, pm == p].mean(dim=(1, 2))


Y0 = torch.zeros(1, dtype=torch.long)


def test_context_size_and_patch_map():
    assert [context_size(r, 49) for r in (0, 0.05, 0.5, 1)] == [0, 2, 23, 47]   # floor(r * 47)
    assert context_size(0.3, 12) == 3                                            # 0.3*10 is 3.0000000000000004
    assert patch_index_map(4, 4, 2).view(4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    # uneven: rows 0-2 -> grid row 0, rows 3-4 -> grid row 1 (r*2//5), same for columns
    assert patch_index_map(5, 5, 2).view(5, 5)[:, 0].tolist() == [0, 0, 0, 2, 2]
    assert len(candidate_pairs(7, 1)) == 6 * 7 * 2 + 6 * 6 * 2                  # 8-neighbour pairs of a 7x7 grid
    assert len(candidate_pairs(7, 0)) == 49 * 48 // 2


@pytest.mark.parametrize("baseline", ["mean", "zero"])
def test_additive_model_has_no_interactions(baseline):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, 12, generator=g, dtype=torch.float64)
    w = torch.randn(9, generator=g, dtype=torch.float64)
    pm = patch_index_map(12, 12, 3)

    def f(z, y):   # sum over patches of w_p * g(patch_p), g nonlinear
        per_pixel = (z ** 2 + torch.sin(3 * z)).sum(1).flatten(1)        # (b, H*W)
        return (per_pixel * w[pm]).sum(1)

    r = interaction_strengths(f, x, torch.zeros(2, dtype=torch.long), grid=3, orders=[0, 0.25, 0.5, 0.75, 1],
                              pairs=6, contexts=3, pair_radius=0, baseline=baseline)
    assert r.I.shape == (2, 5, 6)
    assert np.abs(r.I).max() < 1e-10                # zero up to float64 rounding, at every order


def test_product_of_two_patches_interacts_only_as_that_pair():
    # patches 1, 3, 5, 7 -> image mean 4 (the 'mean' baseline); f = a_0 * a_3
    x = _patch_image([1.0, 3.0, 5.0, 7.0], grid=2, px=2)
    f = lambda z, y: _patch_mean(z, 2, 0) * _patch_mean(z, 2, 3)
    r = interaction_strengths(f, x, Y0, grid=2, orders=[0, 0.5, 1], pairs=[(0, 3), (0, 1), (1, 2)], contexts=4)
    # Δf = a0*a3 - a0*4 - 4*a3 + 4*4 = (1 - 4) * (7 - 4) = -9, whatever S is
    assert r.m.tolist() == [0, 1, 2]
    np.testing.assert_allclose(r.I[0, :, 0], [-9.0, -9.0, -9.0], atol=1e-12)
    np.testing.assert_allclose(r.I[0, :, 1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(r.strength, [3.0, 3.0, 3.0], atol=1e-12)   # |-9| averaged over 3 pairs
    np.testing.assert_allclose(r.J, [1.0, 1.0, 1.0])
    # sampled pairs (all 6 of a 2x2 grid): only the pair (0, 3) is nonzero
    r = interaction_strengths(f, x, Y0, grid=2, orders=[0, 1], pairs=6, contexts=2, pair_radius=0)
    hit = (r.pairs[0] == [0, 3]).all(axis=1)
    assert hit.sum() == 1
    np.testing.assert_allclose(r.I[0][:, hit], -9.0, atol=1e-12)
    np.testing.assert_allclose(r.I[0][:, ~hit], 0.0, atol=1e-12)


def test_context_enters_a_three_way_product():
    # f = a0 * a3 * a1: Δf(0, 3, S) = (1-4)(7-4) * (a1 if 1 in S else 4) -> -36 at S = {}, -27 at S = {1, 2}
    x = _patch_image([1.0, 3.0, 5.0, 7.0], grid=2, px=2)
    f = lambda z, y: _patch_mean(z, 2, 0) * _patch_mean(z, 2, 3) * _patch_mean(z, 2, 1)
    r = interaction_strengths(f, x, Y0, grid=2, orders=[0, 0.5, 1], pairs=[(0, 3)], contexts=64)
    assert r.I[0, 0, 0] == pytest.approx(-36.0)
    assert r.I[0, 2, 0] == pytest.approx(-27.0)
    assert -36.0 < r.I[0, 1, 0] < -27.0            # S = {1} or {2}, each drawn about half the time


def test_contexts_have_exactly_m_patches_besides_the_pair():
    # f = (number of kept patches)^3, read off an all-ones image with a zero baseline:
    # Δf = (m+2)^3 - 2 (m+1)^3 + m^3 = 6m + 6 for every pair, iff |S| = m and S excludes i and j
    x = torch.ones(1, 1, 6, 6, dtype=torch.float64)
    f = lambda z, y: (z.sum(dim=(1, 2, 3)) / 4) ** 3
    r = interaction_strengths(f, x, Y0, grid=3, orders=[k / 7 for k in range(8)], pairs=5, contexts=3,
                              baseline="zero", pair_radius=0)
    assert r.m.tolist() == list(range(8))
    np.testing.assert_allclose(r.I[0], np.repeat(6.0 * np.arange(8)[:, None] + 6.0, 5, axis=1), rtol=1e-12)


def _nonlinear_f():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 1)).double()
    return lambda z, y: net(z)[:, 0] ** 2


def test_normalisation_and_batching_and_seed():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)
    f = _nonlinear_f()
    kw = dict(grid=4, orders=[0, 0.25, 0.5, 0.75, 1], pairs=3, contexts=2, seed=5)
    rng_before, np_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = interaction_strengths(f, x, y, batch=7, norm="mean", **kw)
    assert torch.equal(torch.get_rng_state(), rng_before) and (np.random.get_state()[1] == np_before).all()
    b = interaction_strengths(f, x, y, batch=1000, norm="sum", **kw)
    assert a.J.mean() == pytest.approx(1.0) and b.J.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(a.J / len(a.J), b.J, rtol=1e-12)
    np.testing.assert_array_equal(a.pairs, b.pairs)                     # same seed, same samples
    np.testing.assert_allclose(a.I, b.I, rtol=1e-9, atol=1e-12)         # batch size does not matter
    assert a.forwards == 2 * 5 * 3 * 2 * 4
    c = interaction_strengths(f, x, y, batch=7, **{**kw, "seed": 6})
    assert not np.array_equal(a.pairs, c.pairs)
    assert np.isnan(normalise(np.zeros(3))).all()                       # no interaction: J undefined


def test_log_odds_and_probe_and_head(tmp_path):
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    v = log_odds(logits, torch.tensor([2, 0]))
    p = torch.softmax(logits, 1)
    assert v[0].item() == pytest.approx(math.log(p[0, 2] / (1 - p[0, 2])))
    assert v[0].item() == pytest.approx(3.0 - math.log(math.e + math.e ** 2))
    assert v[1].item() == pytest.approx(math.log(0.5))                  # p = 1/3: log (1/3)/(2/3)
    feats = torch.cat([torch.randn(10, 5) + 3, torch.randn(10, 5) - 3])
    labels = torch.tensor([0] * 10 + [1] * 10)
    h1, acc = fit_probe(feats, labels, 2, steps=20)
    h2, _ = fit_probe(feats, labels, 2, steps=20)
    assert acc == 100.0 and torch.equal(h1.weight, h2.weight)           # deterministic
    torch.save({"state_dict": {"fc.weight": h1.weight.detach(), "fc.bias": h1.bias.detach()}}, tmp_path / "h.pt")
    head = load_head(tmp_path / "h.pt", 5, 2)
    assert torch.equal(head.weight, h1.weight)
    with pytest.raises(ClassifierError, match=r"h\.pt.*\(3, 5\)"):
        load_head(tmp_path / "h.pt", 5, 3)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """8-class ImageNet-style folder (1 train + 1 val image per class, 64 px) and two random-init exports."""
    from benchmarks.toydata import write_imagenet
    from pretrain.export import export_random

    root = tmp_path_factory.mktemp("interactions")
    write_imagenet(root / "data", 64, 0, 1, 1)
    torch.set_num_threads(1)
    r18 = export_random(root / "r18.safetensors", ["model.preset=resnet18", "model.input_size=64",
                                                   "model.mask_patch=16"], seed=0)
    vit = export_random(root / "vit.safetensors", ["model.preset=vit_tiny", "model.input_size=64",
                                                   "model.mask_patch=16"], seed=0)
    return root, r18, vit


def test_cli_writes_csv_png_and_json(tiny_world, tmp_path):
    root, r18, vit = tiny_world
    out = tmp_path / "out"
    common = ["--data", str(root / "data"), "--grid", "4", "--orders", "0,0.5,1", "--pairs", "1",
              "--contexts", "2", "--num-images", "2", "--batch", "48", "--device", "cpu", "--out", str(out)]
    assert interactions_main(["--weights", str(r18), "--weights", str(vit), "--labels", "cnn,vit",
                              "--probe-steps", "5", *common]) == 0
    with open(out / "interactions.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["order_ratio", "m", "cnn", "vit"]
    assert [(float(r[0]), int(r[1])) for r in rows[1:]] == [(0.0, 0), (0.5, 7), (1.0, 14)]
    J = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    assert np.isfinite(J).all() and np.allclose(J.mean(axis=0), 1.0)
    with Image.open(out / "interactions.png") as im:
        assert im.format == "PNG" and im.size[0] > 200
    summary = json.loads((out / "interactions.json").read_text())
    assert summary["num_images"] == 2 and summary["checkpoints"]["vit"]["forwards"] == 2 * 3 * 1 * 2 * 4
    assert json.loads((out / "load_report_cnn.json").read_text())["ok"] is True


def test_cli_head_file_and_bad_inputs(tiny_world, tmp_path, capsys):
    root, r18, _ = tiny_world
    torch.save({"head.weight": torch.randn(8, 512), "head.bias": torch.zeros(8)}, tmp_path / "head.pt")
    common = ["--data", str(root / "data"), "--grid", "2", "--orders", "0,1", "--pairs", "1", "--contexts", "1",
              "--num-images", "2", "--device", "cpu"]
    assert interactions_main(["--weights", str(r18), "--head", str(tmp_path / "head.pt"), *common,
                              "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "interactions.json").read_text())["checkpoints"]["random"]["head"]
    torch.save({"head.weight": torch.randn(8, 100), "head.bias": torch.zeros(8)}, tmp_path / "bad.pt")
    assert interactions_main(["--weights", str(r18), "--head", str(tmp_path / "bad.pt"), *common,
                              "--out", str(tmp_path / "b")]) == 1
    assert "bad.pt" in capsys.readouterr().err
    assert interactions_main(["--weights", str(r18), "--data", str(tmp_path / "nowhere"), "--out",
                              str(tmp_path / "c")]) == 1
    assert "nowhere" in capsys.readouterr().err
