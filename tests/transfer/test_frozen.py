"""transfer/frozen: the linear probe and k-NN on cached frozen features (hand-computed k-NN votes, a separable
probe, the real entry point on a tiny toy world: gated load, one cache shared by both protocols and invalidated by a
changed image, the run identity in result.json)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from transfer.frozen.config import load_config
from transfer.frozen.probes import knn, linear_probe
from transfer.frozen.train import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIGS = Path(__file__).resolve().parents[2] / "transfer" / "frozen" / "configs"


def test_knn_votes_by_hand():
    # train: class 0 at angle 0 and 10 deg, class 1 at 90 deg; query at 20 deg
    ang = torch.tensor([0.0, 10.0, 90.0]) * math.pi / 180
    x_tr = torch.stack([ang.cos(), ang.sin()], 1) * torch.tensor([[1.0], [3.0], [2.0]])   # norms do not matter
    y_tr = torch.tensor([0, 0, 1])
    q = torch.tensor([[math.cos(math.pi / 9), math.sin(math.pi / 9)]])
    # k = 3, T = 1: votes class 0: e^cos20 + e^cos10 = 2.5591 + 2.6770; class 1: e^cos70 = 1.4078 -> class 0
    res = knn(x_tr, y_tr, q, torch.tensor([0]), num_classes=2, k=3, temperature=1.0)
    assert res == {"top1": 100.0, "top5": 100.0}
    # k = 1 takes the nearest only: 10 deg (class 0); a query at 80 deg goes to class 1
    q2 = torch.tensor([[math.cos(4 * math.pi / 9), math.sin(4 * math.pi / 9)]])
    assert knn(x_tr, y_tr, q2, torch.tensor([1]), num_classes=2, k=1)["top1"] == 100.0
    with pytest.raises(ValueError, match="knn.k = 5 is larger than the 3 training"):
        knn(x_tr, y_tr, q, torch.tensor([0]), num_classes=2, k=5)


def test_linear_probe_separates_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat(50)
    x = torch.nn.functional.one_hot(y, 4).float() * 3 + 0.3 * torch.randn(200, 4, generator=g)
    cfg = load_config(CONFIGS / "toy_linear.yaml", ["model.weights=w", "data.root=r", "run.out_dir=o",
                                                    "probe.epochs=20"]).probe
    res = linear_probe(x, y, x, y, 4, cfg, seed=0)
    assert res["top1"] == 100.0 and res["train_top1"] == 100.0 and res["steps"] == 20
    assert linear_probe(x, y, x, y, 4, cfg, seed=0) == res            # seeded: the same numbers again


@pytest.fixture(scope="module")
def world_and_weights(tmp_path_factory):
    from benchmarks.toydata import make_toy_world
    from pretrain.export import export_random
    root = tmp_path_factory.mktemp("frozen")
    paths = make_toy_world(root / "w", size=32, dense_size=64, n_train=3, n_val=2, n_dense_train=2, n_dense_val=2,
                           check=False)
    w = export_random(root / "r18.safetensors", ["model.preset=resnet18", "model.input_size=32"], seed=3)
    return Path(paths["imagenet"]), w


def _run(tmp, weights, data, protocol, *extra):
    return main([f"toy_{protocol}", "--weights", str(weights), "--data-root", str(data), "--work-dir",
                 str(tmp / protocol), "--cache-dir", str(tmp / "cache"), *extra])


def test_entry_point_shares_one_cache_and_records_the_run_identity(tmp_path, world_and_weights):
    data, weights = world_and_weights
    assert _run(tmp_path, weights, data, "linear", "run.seed=2") == 0
    assert _run(tmp_path, weights, data, "knn", "knn.k=3") == 0
    lin = json.loads((tmp_path / "linear" / "result.json").read_text())
    kn = json.loads((tmp_path / "knn" / "result.json").read_text())
    assert json.loads((tmp_path / "linear" / "load_report.json").read_text())["counts"]["missing"] == 0
    assert (lin["task"], lin["dataset"], lin["recipe"], lin["pretrain"], lin["markers"]) == \
        ("in1k_linear", "toy_imagenet", "toy_linear", "scratch", [])
    assert lin["protocol_key"] == "in1k_linear/toy_imagenet/a2mim-suite/resnet18/toy_linear@scratch"
    assert (lin["seed"], lin["pretrain_seed"], lin["num_classes"]) == (2, 3, 8)
    assert kn["task"] == "in1k_knn" and kn["markers"] == ["overrides"]      # knn.k changed the recipe
    rows = [json.loads((tmp_path / p / "metrics.jsonl").read_text()) for p in ("linear", "knn")]
    assert rows[0]["cache_hit"] is False and rows[1]["cache_hit"] is True      # one backbone pass for both
    assert rows[0]["train_images"] == 24 and rows[0]["val_images"] == 16 and rows[0]["dim"] == 256 + 512
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2           # train + val of these weights
    assert _run(tmp_path, weights, data, "linear", "run.seed=2") == 0            # complete: left as it is
    assert json.loads((tmp_path / "linear" / "result.json").read_text())["time"] == lin["time"]
    assert _run(tmp_path, weights, data, "linear") == 1      # the same folder with other settings: refused
    assert json.loads((tmp_path / "linear" / "result.json").read_text())["time"] == lin["time"]


def test_changed_image_invalidates_the_cache_and_bad_levels_name_the_key(tmp_path, world_and_weights, capsys):
    data, weights = world_and_weights
    assert _run(tmp_path / "a", weights, data, "knn") == 0
    img = sorted((data / "val").glob("*/*.JPEG"))[0]
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))                 # the file changed (mtime)
    try:
        (tmp_path / "a" / "knn" / "done").unlink()
        assert _run(tmp_path / "a", weights, data, "knn") == 0
        rows = (tmp_path / "a" / "knn" / "metrics.jsonl").read_text().splitlines()
        assert json.loads(rows[-1])["cache_hit"] is False
    finally:
        os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _run(tmp_path / "b", weights, data, "knn", "model.levels=[7]") == 1
    assert "config key 'model.levels' = [7]" in capsys.readouterr().err
