"""mmdet 3.3 transfer: configs (protocol values), the suite's mmdet modules, and 2-iteration CPU runs through
mmengine's Runner (python -m transfer.mmdet.train ... --tiny) with project-exported weights on a tiny COCO set."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.openmmlab
torch.set_num_threads(1)
CFG = Path("transfer/mmdet/configs")


def _cfg(name: str):
    from mmengine.config import Config
    return Config.fromfile(str(CFG / name))


# ----------------------------------------------------------------------------- configs = the protocols (spec §5)
def test_c4_config_is_the_moco_protocol():
    c = _cfg("mask_rcnn_r50_c4_2x_moco.py")
    bb, sh = c.model.backbone, c.model.roi_head.shared_head
    assert (bb.type, bb.num_stages, bb.frozen_stages, bb.norm_eval, bb.style, bb.init_cfg) == \
        ("ResNet", 3, -1, False, "pytorch", None)
    assert bb.norm_cfg == sh.norm_cfg == dict(type="SyncBN", requires_grad=True)
    assert (sh.type, sh.style, sh.norm_eval) == ("ResLayerExtraNorm", "pytorch", False)
    dp = c.model.data_preprocessor
    assert dp.bgr_to_rgb and dp.mean == [123.675, 116.28, 103.53] and dp.std == [58.395, 57.12, 57.375]
    ms = c.train_dataloader.dataset.pipeline[2]
    assert ms.type == "RandomChoiceResize" and ms.scales == [(1333, s) for s in (640, 672, 704, 736, 768, 800)]
    test_resize = [t for t in c.test_dataloader.dataset.pipeline if t.type == "Resize"][0]
    assert test_resize.scale == (1333, 800)
    assert c.optim_wrapper.optimizer == dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=0.0001)
    assert c.train_cfg.max_epochs == 24 and c.train_dataloader.batch_size == 2        # x 8 GPUs = 16
    warm, step = c.param_scheduler
    assert (warm.type, warm.end, warm.by_epoch, step.milestones) == ("LinearLR", 1000, False, [16, 23])


@pytest.mark.parametrize("name,epochs,milestones,warmup", [("mask_rcnn_r50_fpn_1x.py", 12, [8, 11], 500),
                                                           ("mask_rcnn_r50_fpn_2x.py", 24, [16, 23], 1000)])
def test_fpn_configs_syncbn_everywhere_4conv1fc(name, epochs, milestones, warmup):
    c = _cfg(name)
    sync = dict(type="SyncBN", requires_grad=True)
    m = c.model
    heads = m.roi_head
    assert m.backbone.norm_cfg == m.neck.norm_cfg == heads.bbox_head.norm_cfg == heads.mask_head.norm_cfg == sync
    assert (m.backbone.frozen_stages, m.backbone.norm_eval, m.backbone.init_cfg) == (-1, False, None)
    assert m.roi_head.bbox_head.type == "Shared4Conv1FCBBoxHead"
    assert c.train_cfg.max_epochs == epochs
    assert c.param_scheduler[0].end == warmup and c.param_scheduler[1].milestones == milestones


def test_vit_config_sfp_adamw_layer_decay():
    c = _cfg("mask_rcnn_vit_base_sfp_1x.py")
    m = c.model
    assert (m.backbone.type, m.backbone.out_indices, m.backbone.img_size, m.backbone.final_norm) == \
        ("ExportedBackbone", (-1,), 1024, False)
    assert (m.neck.type, m.neck.scale_factors, m.neck.num_outs) == ("SimpleFeaturePyramid", (4.0, 2.0, 1.0, 0.5), 5)
    assert m.neck.in_channels == "from_backbone[-1]"
    assert m.rpn_head.anchor_generator.strides == [4, 8, 16, 32, 64]
    ow = c.optim_wrapper
    assert ow.optimizer == dict(type="AdamW", lr=3e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert ow.constructor == "LayerDecayOptimWrapperConstructor" and ow.paramwise_cfg.decay_rate == 0.7
    assert c.train_cfg.max_epochs == 12


# ----------------------------------------------------------------------------- the suite's mmdet modules
def test_simple_feature_pyramid_strides():
    import transfer.mmdet.models as M
    sfp = M.SimpleFeaturePyramid(in_channels=32, out_channels=8)
    outs = sfp((torch.randn(2, 32, 6, 4),))            # one stride-16 map of a 96x64 image
    assert [tuple(o.shape) for o in outs] == [(2, 8, 24, 16), (2, 8, 12, 8), (2, 8, 6, 4), (2, 8, 3, 2), (2, 8, 2, 1)]
    assert sfp.stages[0][0].out_channels == 16 and sfp.stages[0][3].out_channels == 8     # C/2 then C/4


def test_res_layer_extra_norm_is_bn_of_res5():
    from mmdet.models.roi_heads.shared_heads import ResLayer
    import transfer.mmdet.models as M
    bn = dict(type="BN", requires_grad=True)
    head = M.ResLayerExtraNorm(depth=50, stage=3, style="pytorch", norm_cfg=bn, norm_eval=False)
    plain = ResLayer(depth=50, stage=3, style="pytorch", norm_cfg=bn, norm_eval=False)
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("norm.")})
    head.eval(), plain.eval()          # (mmdet's ResLayer.train returns None, so no chaining)
    with torch.no_grad():
        head.norm.running_mean.fill_(1.0), head.norm.running_var.fill_(4.0)
        head.norm.weight.fill_(2.0), head.norm.bias.fill_(3.0)
        x = torch.randn(2, 1024, 4, 4)
        want = (plain(x) - 1.0) / torch.sqrt(torch.tensor(4.0 + head.norm.eps)) * 2.0 + 3.0
        assert torch.allclose(head(x), want, atol=1e-5)
    assert head.norm.num_features == 2048


# ----------------------------------------------------------------------------- entry point: errors before training
def test_wrong_data_root_names_the_coco_layout(tmp_path, r50_weights):
    from transfer.mmdet.train import main
    from transfer.openmmlab_common import DataLayoutError
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    with pytest.raises(DataLayoutError) as e:
        main([str(CFG / "mask_rcnn_r50_fpn_1x.py"), "--weights", str(r50_weights), "--work-dir", str(tmp_path / "w"),
              "--data-root", str(tmp_path / "coco")])
    msg = str(e.value)
    assert "annotations/instances_train2017.json (train; file)" in msg
    assert "val2017/ (val; non-empty folder)" in msg and "train2017/ (train" in msg   # empty folder counts as missing
    assert not (tmp_path / "w").exists()


def test_silent_pretrained_init_is_refused(tmp_path, coco_root, r50_weights):
    from transfer.mmdet.train import main
    from transfer.openmmlab_common import ConfigError
    with pytest.raises(ConfigError, match=r"model.backbone.pretrained='torchvision://resnet50'"):
        main([str(CFG / "mask_rcnn_r50_fpn_1x.py"), "--weights", str(r50_weights), "--data-root", str(coco_root),
              "--work-dir", str(tmp_path / "w"), "--cfg-options", "model.backbone.pretrained=torchvision://resnet50"])
    from transfer.openmmlab_common import forbid_silent_pretrained   # the mmdet base configs' own default
    cfg = _cfg("mask_rcnn_r50_fpn_1x.py")
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint="torchvision://resnet50")
    with pytest.raises(ConfigError, match=r"model.backbone.init_cfg=Pretrained\('torchvision://resnet50'\)"):
        forbid_silent_pretrained(cfg)


# ----------------------------------------------------------------------------- 2-iteration runs (Runner, CPU)
def _check_run(work: Path, weights: Path, n_matched: int, loaded: str, protocol: str, dataset: str = "coco2017",
               seed: int = 0):
    from pretrain.fileio import sha256_file
    from transfer.results import read_result
    res = read_result(work / "result.json")
    # task = reference.yaml's key; a --tiny run's protocol never equals a published row's
    assert (res["task"], res["framework"], res["dataset"]) == ("coco_det", "mmdet", dataset)
    assert (res["protocol"], res["seed"]) == (protocol, seed)
    assert res["backbone"] == weights.stem and res["method"] == "random"
    assert res["weights_sha256"] == sha256_file(weights) and res["tiny"] is True
    assert set(res["metrics"]) == {"bbox_mAP", "segm_mAP"}
    assert all(0.0 <= v <= 100.0 for v in res["metrics"].values())
    rep = json.loads((work / "load_report.json").read_text())
    assert rep["ok"] and rep["counts"]["missing"] == 0 and rep["counts"]["matched"] == n_matched
    assert loaded in rep["matched"]
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in lines if x["split"] == "train"] == [1, 2]
    assert all(x["loss"] > 0 for x in lines if x["split"] == "train")
    val = [x for x in lines if x["split"] == "val"]
    assert len(val) == 1 and abs(100 * val[0]["coco/bbox_mAP"] - res["metrics"]["bbox_mAP"]) < 1e-6
    assert (work / Path(res["config"]).name).is_file()           # the config is dumped into the run folder
    return res


def _run(tmp_path, coco_root, weights, config):
    from transfer.mmdet.train import main
    work = tmp_path / Path(config).stem
    main([str(CFG / config), "--weights", str(weights), "--work-dir", str(work), "--data-root", str(coco_root),
          "--tiny", "128"])
    return work


def test_train_r50_c4_2x_moco(tmp_path, coco_root, r50_weights):
    work = _run(tmp_path, coco_root, r50_weights, "mask_rcnn_r50_c4_2x_moco.py")
    res = _check_run(work, r50_weights, 318, "roi_head.shared_head.layer4.0.conv1.weight", "maskrcnn-c4-ms2x@scratch+tiny")
    from transfer.mmdet.train import main          # a complete run folder is left alone
    again = main([str(CFG / "mask_rcnn_r50_c4_2x_moco.py"), "--weights", str(r50_weights), "--work-dir", str(work),
                  "--data-root", str(coco_root), "--tiny"])
    assert again == res


def test_train_r50_fpn_1x(tmp_path, coco_root, r50_weights):
    work = _run(tmp_path, coco_root, r50_weights, "mask_rcnn_r50_fpn_1x.py")
    _check_run(work, r50_weights, 318, "backbone.layer4.2.conv3.weight", "maskrcnn-fpn-1x@scratch+tiny")


def test_train_vit_base_sfp_1x(tmp_path, coco_root, vitb_weights):
    work = _run(tmp_path, coco_root, vitb_weights, "mask_rcnn_vit_base_sfp_1x.py")
    _check_run(work, vitb_weights, 198, "backbone.body.blocks.11.attn.relative_position_bias_table", "maskrcnn-vit@scratch+tiny")


# ----------------------------------------------------------------------------- the toy-world configs (the toy suite)
TOY = {"toy_mask_rcnn_fpn.py": ("ExportedBackbone", "FPN"),
       "toy_mask_rcnn_sfp.py": ("ExportedBackbone", "SimpleFeaturePyramid")}


@pytest.mark.parametrize("name", sorted(TOY))
def test_toy_configs_are_cpu_sized_and_never_compared(name):
    from benchmarks.toyrender import CLASSES
    c = _cfg(name)
    m = c.model
    assert c.benchmark == dict(dataset="toy_coco", protocol="toy")      # result.json: no published row matches
    assert (m.backbone.type, m.neck.type) == TOY[name] and m.backbone.get("init_cfg") is None
    for dl in (c.train_dataloader, c.val_dataloader):
        assert tuple(dl.dataset.metainfo.classes) == CLASSES                # the toy world's classes, by name
    assert m.roi_head.bbox_head.num_classes == m.roi_head.mask_head.num_classes == 8
    assert m.rpn_head.anchor_generator.scales == [4] and m.neck.out_channels == m.rpn_head.in_channels == 64
    assert (m.train_cfg.rcnn.sampler.num, m.test_cfg.rpn.max_per_img, m.test_cfg.rcnn.max_per_img) == (32, 50, 20)
    for dl in (c.train_dataloader, c.val_dataloader):
        resize = [t for t in dl.dataset.pipeline if t.type == "Resize"][0]
        assert resize.scale == (96, 96) and dl.num_workers == 0
    assert c.train_cfg == dict(type="IterBasedTrainLoop", max_iters=200, val_interval=200)
    assert (c.val_evaluator.type, c.val_evaluator.metric) == ("CocoMetric", ["bbox", "segm"])
    assert c.default_hooks.checkpoint.interval == -1
    warm, step = c.param_scheduler
    assert (warm.end, step.milestones, step.by_epoch) == (50, [160], False)
    if "sfp" in name:
        assert (m.backbone.img_size, m.backbone.out_indices) == (96, (-1,))
        assert c.optim_wrapper.constructor == "LayerDecayOptimWrapperConstructor"


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    from benchmarks.toydata import make_toy_world
    return make_toy_world(tmp_path_factory.mktemp("toy") / "w", size=32, dense_size=96, n_train=1, n_val=1,
                          n_dense_train=4, n_dense_val=2)


@pytest.mark.slow
@pytest.mark.parametrize("name,preset,n_matched,loaded", [
    ("toy_mask_rcnn_fpn.py", "resnet18", 120, "backbone.body.layer4.1.conv2.weight"),
    ("toy_mask_rcnn_sfp.py", "vit_tiny", 70, "backbone.body.blocks.3.attn.relative_position_bias_table")])
def test_train_toy_configs_on_the_toy_world(tmp_path, toy_world, name, preset, n_matched, loaded):
    from pretrain.export import export_random
    from transfer.mmdet.train import main
    weights = export_random(tmp_path / f"{preset}.safetensors", [f"model.preset={preset}"])
    work = tmp_path / "run"
    main([str(CFG / name), "--weights", str(weights), "--work-dir", str(work), "--data-root", toy_world["coco"],
          "--tiny", "64", "--seed", "3"])
    _check_run(work, weights, n_matched, loaded, "toy@scratch+tiny", dataset="toy_coco", seed=3)
