"""mmsegmentation 1.2 transfer: configs (protocol values), the shared ViT backbone and layer-decay constructor
(transfer/openmmlab_models.py, registered in mmseg and mmdet), and 2-iteration CPU runs through mmengine's
Runner (python -m transfer.mmseg.train ... --tiny) with project-exported weights on a tiny ADE20K set."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.openmmlab
torch.set_num_threads(1)
CFG = Path("transfer/mmseg/configs")


def _cfg(name: str):
    from mmengine.config import Config
    return Config.fromfile(str(CFG / name))


# ----------------------------------------------------------------------------- configs = the protocols (spec §5)
def test_upernet_vit_config_is_the_spec_protocol():
    c = _cfg("upernet_vit_base_160k.py")
    m = c.model
    assert (m.backbone.type, m.backbone.out_indices, m.backbone.img_size, m.backbone.final_norm) == \
        ("ExportedBackbone", (3, 5, 7, 11), 512, False)
    assert (m.neck.type, m.neck.rescales, m.neck.embed_dim) == ("Feature2Pyramid", [4, 2, 1, 0.5], "from_backbone[-1]")
    assert (m.decode_head.type, m.auxiliary_head.type, m.auxiliary_head.loss_decode.loss_weight) == \
        ("UPerHead", "FCNHead", 0.4)
    assert m.decode_head.num_classes == m.auxiliary_head.num_classes == 150
    assert (m.test_cfg.mode, m.test_cfg.crop_size, m.test_cfg.stride) == ("slide", (512, 512), (341, 341))
    ow = c.optim_wrapper
    assert ow.optimizer == dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert ow.constructor == "LayerDecayOptimWrapperConstructor" and ow.paramwise_cfg.decay_rate == 0.65
    warm, poly = c.param_scheduler
    assert (warm.type, warm.end, poly.type, poly.power, poly.begin, poly.end) == \
        ("LinearLR", 1500, "PolyLR", 1.0, 1500, 160000)
    assert c.train_cfg.max_iters == 160000 and c.train_dataloader.batch_size == 2    # x 8 GPUs = 16
    assert m.pretrained is None


@pytest.mark.parametrize("name,head", [("upernet_r50_160k.py", "UPerHead"), ("fcn_d8_r50_160k.py", "FCNHead")])
def test_r50_configs_use_the_plain_stem(name, head):
    c = _cfg(name)
    bb = c.model.backbone
    assert bb.type == "ResNet" and not bb.get("deep_stem", False) and bb.init_cfg is None
    assert c.model.pretrained is None and c.model.decode_head.type == head
    assert c.model.decode_head.num_classes == 150 and c.train_cfg.max_iters == 160000
    if head == "FCNHead":
        assert (bb.strides, bb.dilations) == ((1, 2, 1, 1), (1, 1, 2, 4))


# ----------------------------------------------------------------------------- the contract + the shared constructor
def test_exported_backbone_features_equal_timm_beit():
    from pretrain.models import build_backbone, get_preset
    from transfer.backbones import FeatureBackbone
    p = get_preset("vit_tiny")
    torch.manual_seed(0)
    ours = FeatureBackbone(p.timm_name, {**p.timm_kwargs, "drop_path_rate": 0.0}, "vit", out_indices=(1, 3),
                           img_size=64, final_norm=True).eval()
    ref = build_backbone("vit_tiny", img_size=64, drop_path_rate=0.0).eval()
    ref.load_state_dict(ours.body.state_dict())       # same timm names, strict
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        o1, o3 = ours(x)
        mid = ref.forward_intermediates(x, indices=[1], norm=True, intermediates_only=True)[0]    # (2, 96, 4, 4)
        last = ref.forward_features(x)[:, 1:].transpose(1, 2).reshape(2, 96, 4, 4)              # final norm applied
    assert torch.allclose(o1, mid, atol=1e-5) and torch.allclose(o3, last, atol=1e-5)
    with torch.no_grad():
        small = ours(torch.randn(1, 3, 48, 40))       # padded to 64, features cropped to ceil(48/16) x ceil(40/16)
    assert [tuple(t.shape) for t in small] == [(1, 96, 3, 3), (1, 96, 3, 3)]
    with pytest.raises(ValueError, match="input 80x64 is larger than the ViT's img_size 64"):
        ours(torch.randn(1, 3, 80, 64))


def _model_with(backbone):
    import torch.nn as nn
    model = nn.Module()
    model.backbone = backbone
    model.head = nn.Linear(8, 2)
    return model


def test_layer_decay_groups_hand_values():
    from pretrain.models import get_preset
    from transfer.backbones import FeatureBackbone
    from transfer.openmmlab_models import LayerDecayOptimWrapperConstructor
    p = get_preset("vit_tiny")
    model = _model_with(FeatureBackbone(p.timm_name, p.timm_kwargs, "vit", out_indices=(3,), img_size=32))  # 4 blocks
    ow = LayerDecayOptimWrapperConstructor(
        dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1.0, weight_decay=0.05)),
        dict(decay_rate=0.5))(model)
    groups = ow.optimizer.param_groups
    where = {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["param_names"]}
    b = "backbone.body."
    # lr = 0.5 ** (4 + 1 - layer_id): embeddings 0, blocks.i -> i+1, everything after the backbone 5
    assert where[b + "pos_embed"] == (0.5 ** 5, 0.0)
    assert where[b + "cls_token"] == (0.5 ** 5, 0.0)
    assert where[b + "patch_embed.proj.weight"] == (0.5 ** 5, 0.05)
    assert where[b + "blocks.0.attn.qkv.weight"] == (0.5 ** 4, 0.05)
    assert where[b + "blocks.2.attn.relative_position_bias_table"] == (0.5 ** 2, 0.0)
    assert where[b + "blocks.3.gamma_1"] == (0.5, 0.0)
    assert where[b + "blocks.3.norm2.weight"] == (0.5, 0.0)
    assert where[b + "blocks.3.mlp.fc1.bias"] == (0.5, 0.0)
    assert where["head.weight"] == (1.0, 0.05) and where["head.bias"] == (1.0, 0.0)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert sorted(where) == trainable and b + "norm.weight" not in where        # unused final norm: frozen


def test_convnext_layer_and_stage_wise_ids_are_mmsegs():
    """The ConvNeXt ids of mmseg 1.2's LearningRateDecayOptimizerConstructor (get_layer_id_for_convnext,
    get_stage_id_for_convnext, num_layers 6 for ConvNeXt-T), written out here on timm's names."""
    from transfer.backbones import FeatureBackbone
    from transfer.param_groups import layer_ids
    body = FeatureBackbone("convnext_tiny", {}, "cnn", out_indices=(0, 1, 2, 3)).body
    ids, top = layer_ids(body, "layer_wise")
    assert top == 7 and ids["stem.0.weight"] == 0 and ids["stages.0.blocks.2.conv_dw.weight"] == 1
    assert ids["stages.1.downsample.1.weight"] == 2 and ids["stages.2.downsample.1.weight"] == 3
    assert [ids[f"stages.2.blocks.{b}.conv_dw.weight"] for b in (0, 2, 3, 8)] == [3, 3, 4, 5]
    assert ids["stages.3.downsample.1.weight"] == ids["stages.3.blocks.0.conv_dw.weight"] == 6
    ids, top = layer_ids(body, "stage_wise")
    assert top == 7 and ids["stages.2.downsample.1.weight"] == 0 and ids["stages.3.blocks.2.gamma"] == 4


def test_registered_in_mmseg_and_mmdet():
    import transfer.mmdet.models  # noqa: F401
    import transfer.mmseg.models  # noqa: F401
    from mmdet.registry import MODELS as DET, OPTIM_WRAPPER_CONSTRUCTORS as DET_OWC
    from mmseg.registry import MODELS as SEG, OPTIM_WRAPPER_CONSTRUCTORS as SEG_OWC
    from transfer.openmmlab_models import LayerDecayOptimWrapperConstructor, exported_backbone
    assert DET.module_dict["ExportedBackbone"] is SEG.module_dict["ExportedBackbone"] is exported_backbone
    assert DET_OWC.module_dict["LayerDecayOptimWrapperConstructor"] is LayerDecayOptimWrapperConstructor
    assert SEG_OWC.module_dict["LayerDecayOptimWrapperConstructor"] is LayerDecayOptimWrapperConstructor


# ----------------------------------------------------------------------------- entry point + 2-iteration runs
def test_wrong_data_root_names_the_ade_layout(tmp_path, r50_weights):
    from transfer.mmseg.train import main
    from transfer.openmmlab_common import DataLayoutError
    with pytest.raises(DataLayoutError) as e:
        main([str(CFG / "fcn_d8_r50_160k.py"), "--weights", str(r50_weights), "--data-root", str(tmp_path)])
    msg = str(e.value)
    assert "ADEChallengeData2016 layout" in msg
    assert f"{tmp_path}/images/training/ (train; non-empty folder)" in msg
    assert f"{tmp_path}/annotations/validation/ (val; non-empty folder)" in msg


def _run_and_check(tmp_path, ade_root, weights, config, n_matched, protocol, dataset="ade20k", seed=0):
    from pretrain.fileio import sha256_file
    from transfer.mmseg.train import main
    from transfer.results import read_result
    work = tmp_path / Path(config).stem
    main([str(CFG / config), "--weights", str(weights), "--work-dir", str(work), "--data-root", str(ade_root.parent),
          "--tiny", "64", "--seed", str(seed)])       # --data-root: the folder holding ADEChallengeData2016
    res = read_result(work / "result.json")
    # task = reference.yaml's key; a --tiny run's protocol never equals a published row's
    assert (res["task"], res["framework"], res["dataset"]) == ("ade20k_seg", "mmseg", dataset)
    assert (res["protocol"], res["seed"]) == (protocol, seed)
    assert res["weights_sha256"] == sha256_file(weights)
    assert set(res["metrics"]) == {"mIoU", "aAcc"} and all(0 <= v <= 100 for v in res["metrics"].values())
    rep = json.loads((work / "load_report.json").read_text())
    assert rep["ok"] and rep["counts"]["missing"] == 0 and rep["counts"]["matched"] == n_matched
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in lines if x["split"] == "train"] == [1, 2]
    (val,) = [x for x in lines if x["split"] == "val"]
    assert abs(val["mIoU"] - res["metrics"]["mIoU"]) < 1e-3
    return work


def test_train_upernet_vit_base(tmp_path, ade_root, vitb_weights):
    _run_and_check(tmp_path, ade_root, vitb_weights, "upernet_vit_base_160k.py", 198, "upernet-160k@scratch+tiny")


def test_train_upernet_r50(tmp_path, ade_root, r50_weights):
    _run_and_check(tmp_path, ade_root, r50_weights, "upernet_r50_160k.py", 318, "upernet-160k@scratch+tiny")


def test_train_fcn_d8_r50(tmp_path, ade_root, r50_weights):
    _run_and_check(tmp_path, ade_root, r50_weights, "fcn_d8_r50_160k.py", 318, "fcn-d8-160k@scratch+tiny")


# ----------------------------------------------------------------------------- the toy-world configs (the toy suite)
TOY = {"toy_upernet.py": ("ExportedBackbone", "from_backbone", "from_backbone[2]"),
       "toy_upernet_vit.py": ("ExportedBackbone", "from_backbone", "from_backbone[2]")}


@pytest.mark.parametrize("name", sorted(TOY))
def test_toy_configs_are_cpu_sized_and_never_compared(name):
    c = _cfg(name)
    m = c.model
    bb, decode_in, aux_in = TOY[name]
    assert c.benchmark == dict(dataset="toy_ade", protocol="toy")      # result.json: no published row matches
    assert c.classes_json == "classes.json" and m.pretrained is None
    assert m.backbone.type == bb and not m.backbone.get("deep_stem", False) and m.backbone.get("init_cfg") is None
    assert (m.decode_head.type, m.decode_head.in_channels, m.decode_head.channels) == ("UPerHead", decode_in, 64)
    assert (m.auxiliary_head.type, m.auxiliary_head.in_channels, m.auxiliary_head.loss_decode.loss_weight) == \
        ("FCNHead", aux_in, 0.4)
    assert m.decode_head.num_classes == m.auxiliary_head.num_classes == 9
    for dl in (c.train_dataloader, c.val_dataloader):
        assert (dl.dataset.type, dl.dataset.reduce_zero_label, dl.num_workers) == ("BaseSegDataset", True, 0)
    crop = [t for t in c.train_dataloader.dataset.pipeline if t.type == "RandomCrop"][0]
    assert crop.crop_size == (96, 96) and m.data_preprocessor.size == (96, 96) and m.test_cfg.mode == "whole"
    assert c.train_cfg == dict(type="IterBasedTrainLoop", max_iters=200, val_interval=200)
    assert (c.val_evaluator.type, c.val_evaluator.iou_metrics) == ("IoUMetric", ["mIoU"])
    assert c.default_hooks.checkpoint.interval == -1
    if "vit" in name:
        assert (m.backbone.img_size, m.backbone.out_indices) == (96, (-4, -3, -2, -1))
        assert (m.neck.type, m.neck.embed_dim, m.neck.rescales) == ("Feature2Pyramid", "from_backbone[-1]", [4, 2, 1, 0.5])


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    from benchmarks.toydata import make_toy_world
    return make_toy_world(tmp_path_factory.mktemp("toy") / "w", size=32, dense_size=96, n_train=1, n_val=1,
                          n_dense_train=4, n_dense_val=2)


def test_classes_json_gives_metainfo_and_is_checked(tmp_path, toy_world):
    from benchmarks.toydata import ADE_CLASSES, ADE_PALETTE
    from transfer.mmseg.train import apply_classes_json
    from transfer.openmmlab_common import ConfigError, DataLayoutError, set_data_root
    cfg = _cfg("toy_upernet.py")
    set_data_root(cfg, toy_world["ade_data_root"])            # classes.json lies in the folder above
    apply_classes_json(cfg)
    for dl in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert dl.dataset.metainfo == dict(classes=list(ADE_CLASSES), palette=ADE_PALETTE)
        assert dl.dataset.reduce_zero_label is True
        assert [t.reduce_zero_label for t in dl.dataset.pipeline if t.type == "LoadAnnotations"] == [True]
    cfg = _cfg("toy_upernet.py")
    set_data_root(cfg, toy_world["ade_data_root"])
    cfg.model.auxiliary_head.num_classes = 150
    with pytest.raises(ConfigError, match=r"model.auxiliary_head.num_classes is 150, but .*classes.json lists 9"):
        apply_classes_json(cfg)
    cfg = _cfg("toy_upernet.py")
    set_data_root(cfg, str(tmp_path / "ADEChallengeData2016"))
    with pytest.raises(DataLayoutError, match=r"classes_json 'classes.json' not found; looked for .*"
                                              r"ADEChallengeData2016/classes.json, .*/classes.json"):
        apply_classes_json(cfg)
    (tmp_path / "classes.json").write_text('{"names": []}')
    with pytest.raises(ConfigError, match=r"classes.json: expected a JSON object with 'classes'"):
        apply_classes_json(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("name,preset,n_matched", [("toy_upernet.py", "resnet18", 120),
                                                   ("toy_upernet_vit.py", "vit_tiny", 70)])
def test_train_toy_configs_on_the_toy_world(tmp_path, toy_world, name, preset, n_matched):
    from mmengine.config import Config
    from benchmarks.toydata import ADE_CLASSES
    from pretrain.export import export_random
    weights = export_random(tmp_path / f"{preset}.safetensors", [f"model.preset={preset}"])
    work = _run_and_check(tmp_path, Path(toy_world["ade_data_root"]), weights, name, n_matched, "toy@scratch+tiny",
                          dataset="toy_ade", seed=3)
    dumped = Config.fromfile(str(work / name))        # the resolved config the Runner wrote into the run folder
    assert list(dumped.val_dataloader.dataset.metainfo["classes"]) == list(ADE_CLASSES)


@pytest.mark.slow
@pytest.mark.parametrize("preset,n_matched", [("resnet18", 120), ("vit_tiny", 70)])   # every exported tensor
def test_linear_seg_protocol_on_frozen_cached_features(tmp_path, toy_world, preset, n_matched):
    """toy_linear_seg.py: any export through ExportedBackbone (architecture from the sidecar, head channels filled
    in), frozen, features cached (one backbone pass per image)."""
    from pretrain.export import export_random
    from pretrain.export_format import read_backbone
    from transfer.backbones import FeatureBackbone
    from transfer.mmseg.train import main
    from transfer.results import read_result

    weights = export_random(tmp_path / f"{preset}.safetensors", [f"model.preset={preset}", "model.input_size=96"])
    calls = []
    orig = FeatureBackbone._features
    FeatureBackbone._features = lambda self, x: (calls.append(len(x)), orig(self, x))[1]
    try:
        main(["transfer/mmseg/configs/toy_linear_seg.py", "--weights", str(weights), "--work-dir", str(tmp_path / "w"),
              "--data-root", toy_world["ade"], "--seed", "1", "--cfg-options", "train_cfg.max_iters=3",
              "train_dataloader.batch_size=2"])
    finally:
        FeatureBackbone._features = orig
    assert sum(calls) == 4 + 2, f"one pass per train + val image, got batches {calls}"   # 3 iterations x 2 > 4
    res = read_result(tmp_path / "w" / "result.json")
    assert (res["dataset"], res["recipe"], res["markers"], res["backbone"]) == \
        ("toy_ade", "toy_linear_seg", ["cfg-options"], preset)
    rep = json.loads((tmp_path / "w" / "load_report.json").read_text())
    assert rep["counts"]["missing"] == rep["counts"]["unexpected"] == 0 and rep["counts"]["matched"] == n_matched
    import glob
    from mmengine.config import Config
    cfg = Config.fromfile(glob.glob(str(tmp_path / "w" / "toy_linear_seg.py"))[0])
    ch = {"resnet18": [128, 256, 512], "vit_tiny": [96, 96, 96]}[preset]
    assert cfg.model.decode_head.in_channels == ch and cfg.model.backbone.timm_name == read_backbone(weights)[1]["timm_name"]
