"""The one backbone contract over the matrix family (ResNet, ConvNeXt, ViT) x framework (mmdet, mmseg, detectron2):
each exported backbone builds in each framework from its sidecar alone (no per-family code), loads through the gate
with 0 missing and 0 unexpected tensors, trains one step and runs inference on the toy world (result.json).

The ConvNeXt is timm's convnext_atto, which no preset names (channels 40/80/160/320): pre-trained here with A²MIM
for two steps on the toy world through `pretrain.train` (token after the last downsample) and exported by the run,
i.e. "any timm CNN" going through the same path with no new code.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.openmmlab, pytest.mark.usefixtures("one_torch_thread")]
REPO = Path(__file__).resolve().parents[2]
FAMILIES = ("resnet", "convnext", "vit")
FRAMEWORKS = ("mmdet", "mmseg", "detectron2")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from benchmarks.toydata import make_toy_world
    return make_toy_world(tmp_path_factory.mktemp("matrix") / "w", size=32, dense_size=64, n_train=2, n_val=1,
                          n_dense_train=3, n_dense_val=2, check=False)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, world):
    from pretrain.config import load_config
    from pretrain.engine import train
    from pretrain.export import export_random

    tmp = tmp_path_factory.mktemp("exports")
    run = train(load_config(REPO / "pretrain/configs/tiny_r18.yaml", [
        f"data.root={world['imagenet_train']}", f"run.out_dir={tmp / 'cnx'}", "model.preset=convnext_tiny",
        "model.timm_name=convnext_atto", "model.inject_channels=320", "model.out_channels=320",
        "model.input_size=64", "model.mask_patch=32", "run.batch_per_gpu=4", "run.max_steps=2", "run.tensorboard=false",
        "run.image_interval=0", "schedule.warmup_epochs=0"]))
    return {"resnet": export_random(tmp / "r18.safetensors", ["model.preset=resnet18", "model.input_size=64"]),
            "convnext": run / "backbone.safetensors",
            "vit": export_random(tmp / "vit.safetensors", ["model.preset=vit_tiny", "model.input_size=64"])}


D2_TINY = ["SEED", "0", "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)",
           "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
           "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "32",
           "MODEL.RPN.PRE_NMS_TOPK_TEST", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "10", "TEST.DETECTIONS_PER_IMAGE", "10",
           "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "DATALOADER.NUM_WORKERS", "0",
           "SOLVER.CHECKPOINT_PERIOD", "100000", "TEST.PRECISE_BN.ENABLED", "False", "MODEL.FPN.OUT_CHANNELS", "32"]


def _run(framework: str, family: str, weights: Path, world: dict, out: Path) -> None:
    vit = family == "vit"
    if framework == "mmdet":
        from transfer.mmdet.train import main
        cfg = "toy_mask_rcnn_sfp.py" if vit else "toy_mask_rcnn_fpn.py"
        main([f"transfer/mmdet/configs/{cfg}", "--weights", str(weights), "--work-dir", str(out), "--data-root",
              world["coco"], "--tiny", "64", "--iters", "1"])
    elif framework == "mmseg":
        from transfer.mmseg.train import main
        cfg = "toy_upernet_vit.py" if vit else "toy_upernet.py"
        main([f"transfer/mmseg/configs/{cfg}", "--weights", str(weights), "--work-dir", str(out), "--data-root",
              world["ade"], "--tiny", "64", "--iters", "1"])
    else:
        pytest.importorskip("detectron2", reason="detectron2 is not installed")
        from transfer.detectron2.train import main
        cfg, extra = (("vit_base_sfp", ["MODEL.EXPORTED.IMG_SIZE", "64"]) if vit else ("exported_fpn_1x", []))
        assert main(["--config", cfg, "--weights", str(weights), "--data-root", world["coco"], "--output-dir",
                     str(out), *D2_TINY, *extra]) == 0


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_runs_in_every_framework(tmp_path, world, exports, family, framework):
    from pretrain.export_format import read_backbone
    from transfer.results import read_result

    weights = exports[family]
    _run(framework, family, weights, world, tmp_path / "run")
    rep = json.loads((tmp_path / "run" / "load_report.json").read_text())
    sd, meta = read_backbone(weights)
    counted = [k for k in sd if not k.endswith("num_batches_tracked")]
    assert rep["ok"] and rep["counts"]["missing"] == rep["counts"]["unexpected"] == 0, rep["counts"]
    assert rep["counts"]["shape_mismatched"] == 0 and rep["counts"]["matched"] >= len(counted)
    assert all(".features.body." in k or k.startswith(("body.", "backbone.body.")) for k in rep["matched"])
    res = read_result(tmp_path / "run" / "result.json")
    assert res["framework"] == framework and res["backbone"] == (meta.get("preset") or meta["timm_name"])
    assert res["dataset"] in ("toy_coco", "toy_ade") and all(v == v for v in res["metrics"].values())   # no NaN
    if family == "convnext":
        assert meta["timm_name"] == "convnext_atto" and meta["method"] == "a2mim" and res["method"] == "a2mim"


def test_the_contract_declares_strides_and_channels(exports):
    from pretrain.export_format import read_backbone
    from transfer.backbones import from_sidecar

    _, meta = read_backbone(exports["convnext"])
    fb = from_sidecar(meta, out_indices=(0, 1, 2, 3))
    assert (fb.channels, fb.strides) == ([40, 80, 160, 320], [4, 8, 16, 32])
    outs = fb(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(40, 16, 16), (80, 8, 8), (160, 4, 4), (320, 2, 2)]
    _, vmeta = read_backbone(exports["vit"])
    vit = from_sidecar(vmeta, out_indices=(-1,), img_size=96)
    assert (vit.channels, vit.strides, vit.unused) == ([96], [16], {"norm.weight", "norm.bias"})
    assert [tuple(o.shape) for o in vit(torch.randn(2, 3, 80, 48))] == [(2, 96, 5, 3)]     # padded, cropped back
