"""detectron2 transfer against the INSTALLED detectron2 (upstream a59f056, pure-Python part; no _C needed here).

Converter names checked by hand; exports loaded IN MEMORY through the gate into the built R50-C4 / R50-FPN (native
ResNet) and ViT-B (the backbone contract) Mask R-CNN with nothing missing (values checked at hand-picked names);
the gate failing on a missing key; the user-facing .pkl loading into stock DetectionCheckpointer; the MoCo-protocol
config values; the shared layer-wise lr decay; and every config training 2 iterations at 96-128 px on the toy
world's COCO set, then COCOEvaluator, result.json.
"""
from __future__ import annotations

import json
import logging
import math
import pickle

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed (scripts/setup_env.sh installs it)")
pytestmark = pytest.mark.detectron2

from transfer.detectron2 import modeling  # noqa: E402,F401  (registers the exported backbone and the C4 head)
from transfer.detectron2.configs import adapt_to_runtime, get_config  # noqa: E402
from transfer.detectron2.convert import ConversionError, convert, read_pkl, resnet_to_d2  # noqa: E402
from transfer.detectron2.gate import load_backbone  # noqa: E402
from transfer.weights import IncompleteLoadError, read_backbone_weights  # noqa: E402

VIT_IMG = 128   # detection input of the tiny ViT runs: 8x8 tokens


def _export(tmp, preset: str, random_bn: bool = True):
    """A project export (pretrain.export_format) with random weights and (random_bn) random BN statistics, so that
    a value found at its detectron2 name cannot be the layer's default initialisation."""
    from pretrain.export_format import write_backbone
    from pretrain.models.backbone import build_backbone

    torch.manual_seed(0)
    m = build_backbone(preset)
    for mod in m.modules() if random_bn else ():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
            torch.nn.init.normal_(mod.weight)
            torch.nn.init.normal_(mod.bias)
            mod.num_batches_tracked.fill_(7)
    from pretrain.models.presets import get_preset
    p = get_preset(preset)
    return write_backbone(tmp / f"{preset}{'' if random_bn else '_plain'}.safetensors", m.state_dict(),
                          {"preset": preset, "kind": p.kind, "method": "random", "timm_name": p.timm_name,
                           "timm_kwargs": p.timm_kwargs, "input_size": 224}), m.state_dict()


def _model(name: str, opts=(), weights=None):
    from detectron2.modeling import build_model

    from transfer.detectron2.train import fill_backbone

    cfg = get_config(name, list(opts))
    adapt_to_runtime(cfg, world_size=1, cuda=False)
    if weights is not None:
        sd, meta, _ = read_backbone_weights(weights)
        fill_backbone(cfg, sd, meta, name, str(weights))
    return build_model(cfg)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("d2_r50")
    path, sd = _export(tmp, "resnet50")
    convert(path, tmp / "r50.pkl")
    return {"export": path, "sd": sd, "pkl": tmp / "r50.pkl", "dir": tmp}


@pytest.fixture(scope="module")
def r50_plain(tmp_path_factory):
    """Freshly initialised BN (as an export of a random-init run): eval-mode features stay sane for training tests."""
    return _export(tmp_path_factory.mktemp("d2_r50_plain"), "resnet50", random_bn=False)[0]


@pytest.fixture(scope="module")
def vitb(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("d2_vitb")
    path, sd = _export(tmp, "vit_base")
    convert(path, tmp / "vitb.pkl", img_size=VIT_IMG)
    return {"export": path, "sd": sd, "pkl": tmp / "vitb.pkl", "dir": tmp}


@pytest.fixture(scope="module")
def vit_model(vitb):
    return _model("vit_base_sfp", ["MODEL.EXPORTED.IMG_SIZE", str(VIT_IMG), "INPUT.MAX_SIZE_TRAIN", str(VIT_IMG),
                                   "INPUT.MAX_SIZE_TEST", str(VIT_IMG)], weights=vitb["export"])


@pytest.fixture(scope="module")
def toy_coco(tmp_path_factory):
    from benchmarks.toydata import make_toy_world

    paths = make_toy_world(tmp_path_factory.mktemp("toyworld"), size=32, dense_size=96, n_train=1, n_val=1,
                           n_dense_train=4, n_dense_val=2)
    return paths["coco"]


# ------------------------------------------------------------------ converter
def test_resnet_names_by_hand():
    t = torch.zeros(1)
    sd = {"conv1.weight": t, "bn1.running_var": t, "layer1.0.conv2.weight": t, "layer1.0.bn3.bias": t,
          "layer3.5.downsample.0.weight": t, "layer4.2.downsample.1.num_batches_tracked": t, "fc.weight": t}
    out, notes = resnet_to_d2(sd)
    assert sorted(out) == sorted(["stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.conv2.weight",
                                  "res2.0.conv3.norm.bias", "res4.5.shortcut.weight",
                                  "res5.2.shortcut.norm.num_batches_tracked"])
    assert notes == ["dropped fc.weight (classifier)"]
    with pytest.raises(ConversionError, match=r"layer2\.0\.bn_1\.weight"):
        resnet_to_d2({**sd, "layer2.0.bn_1.weight": t}, "x.safetensors")


def test_pkl_format(r50):
    obj = read_pkl(r50["pkl"])
    assert obj["__author__"] == "a2mim-suite" and obj["matching_heuristics"] is True
    assert obj["a2mim"]["kind"] == "resnet" and obj["a2mim"]["depth"] == 50
    assert len(obj["model"]) == len(r50["sd"]) == 53 + 53 * 5   # 53 convs, 53 BNs x 5 tensors; no fc exported
    assert obj["model"]["res5.0.shortcut.weight"].shape == (2048, 1024, 1, 1)


def test_official_openmixup_pth_converts_like_the_export(r50, tmp_path):
    """openmixup checkpoint: state_dict with backbone./neck./head. keys plus the mask token (pre-training only)."""
    import numpy as np

    sd = {f"backbone.{k}": v for k, v in r50["sd"].items()}
    sd.update({"backbone.mask_token": torch.zeros(1, 1024, 1, 1), "neck.decoder.0.weight": torch.zeros(3, 2048, 1, 1)})
    torch.save({"state_dict": sd, "meta": {"epoch": 300, "iter": 1000}}, tmp_path / "a2mim_r50.pth")
    info = convert(tmp_path / "a2mim_r50.pth", tmp_path / "official.pkl")
    assert info["kind"] == "resnet" and any("mask_token" in n for n in info["notes"])
    ours, official = read_pkl(r50["pkl"])["model"], read_pkl(tmp_path / "official.pkl")["model"]
    assert sorted(ours) == sorted(official)
    assert all(np.array_equal(ours[k], official[k]) for k in ours)


def test_pkl_reader_refuses_code(tmp_path):
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"model": {}, "__author__": "x", "f": print}))
    with pytest.raises(ConversionError, match="refused global builtins.print"):
        read_pkl(bad)


def test_convert_cli(r50, tmp_path, capsys):
    from pretrain.export_format import write_backbone
    from transfer.detectron2.convert import main

    assert main([str(r50["export"]), str(tmp_path / "o.pkl")]) == 0
    out = capsys.readouterr().out
    assert "318 tensors" in out and "  layer4.2.bn3.running_var -> res5.2.conv3.norm.running_var" in out
    assert out.count(" -> ") == 318                                     # every renamed key printed
    odd = write_backbone(tmp_path / "odd.safetensors", {"stem.0.weight": torch.zeros(2)}, {"kind": "cnn"})
    assert main([str(odd), str(tmp_path / "odd.pkl")]) == 2
    assert "no sidecar naming the architecture" in capsys.readouterr().err


# ------------------------------------------------------------------ in-memory loading through the gate
def _check_values(model, sd, pairs):
    state = model.state_dict()
    for d2_name, tv_name in pairs:
        assert torch.equal(state[d2_name], sd[tv_name]), (d2_name, tv_name)


def test_r50_c4_loads_backbone_and_res5_head(r50):
    model = _model("r50_c4_1x")
    rep = load_backbone(model, read_backbone_weights(r50["export"]), r50["dir"] / "c4_report.json")
    assert rep.ok and rep.counts["matched"] == 318 and rep.missing == [] and rep.unexpected == []
    assert sorted(rep.allowed_missing) == sorted(f"roi_heads.res5.norm.{k}" for k in
                                                 ("weight", "bias", "running_mean", "running_var",
                                                  "num_batches_tracked"))
    assert sum(k.startswith("roi_heads.res5.") for k in rep.matched) == 10 + 10 * 5   # 10 convs + their BNs
    _check_values(model, r50["sd"], [
        ("backbone.stem.conv1.weight", "conv1.weight"), ("backbone.stem.conv1.norm.running_var", "bn1.running_var"),
        ("backbone.res2.0.shortcut.norm.bias", "layer1.0.downsample.1.bias"),
        ("backbone.res4.5.conv3.weight", "layer3.5.conv3.weight"),
        ("roi_heads.res5.2.conv2.norm.running_mean", "layer4.2.bn2.running_mean"),
        ("roi_heads.res5.0.shortcut.weight", "layer4.0.downsample.0.weight")])
    report = json.loads((r50["dir"] / "c4_report.json").read_text())
    assert report["ok"] and report["counts"]["missing"] == 0
    # Res5ROIHeadsExtraNorm: res5 = 3 bottleneck blocks then a BN over the 2048 output channels
    last = list(model.roi_heads.res5.children())[-1]
    assert last is model.roi_heads.res5.norm and last.num_features == 2048


def test_r50_fpn_loads_bottom_up(r50):
    model = _model("r50_fpn_1x")
    rep = load_backbone(model, read_backbone_weights(r50["export"]))
    assert rep.ok and rep.counts["matched"] == 318 and rep.allowed_missing == []
    _check_values(model, r50["sd"], [("backbone.bottom_up.res5.0.conv1.weight", "layer4.0.conv1.weight"),
                                     ("backbone.bottom_up.stem.conv1.norm.weight", "bn1.weight")])


def test_gate_fails_on_a_missing_key_and_the_converter_on_an_unknown_one(r50, tmp_path):
    sd, meta, notes = read_backbone_weights(r50["export"])
    cut = {k: v for k, v in sd.items() if k != "layer4.0.conv1.weight"}
    with pytest.raises(IncompleteLoadError, match="1 missing, 0 unexpected"):
        load_backbone(_model("r50_c4_1x"), (cut, meta, notes), tmp_path / "load_report.json")
    report = json.loads((tmp_path / "load_report.json").read_text())
    assert not report["ok"] and report["missing"] == ["roi_heads.res5.0.conv1.weight"]
    renamed = {**cut, "layer4.0.conv9.weight": sd["layer4.0.conv1.weight"]}
    with pytest.raises(ConversionError, match=r"layer4\.0\.conv9\.weight"):
        load_backbone(_model("r50_c4_1x"), (renamed, meta, notes))


def test_vit_b_loads_everything_through_the_contract(vitb, vit_model):
    rep = load_backbone(vit_model, read_backbone_weights(vitb["export"]), vitb["dir"] / "vit_report.json")
    assert rep.ok and rep.counts["matched"] == len(vitb["sd"]) == 198 and rep.allowed_missing == []
    assert all(k.startswith("backbone.net.features.body.") for k in rep.matched)
    vit = vit_model.backbone.net.features.body
    assert torch.equal(vit.blocks[3].attn.qkv.weight, vitb["sd"]["blocks.3.attn.qkv.weight"])
    g = VIT_IMG // 16                                                   # tables resized to the detection grid
    assert vit.pos_embed.shape == (1, 1 + g * g, 768)
    assert torch.equal(vit.pos_embed[:, 0], vitb["sd"]["pos_embed"][:, 0])   # cls position is not resampled
    table = vit.blocks[0].attn.relative_position_bias_table
    assert table.shape == ((2 * g - 1) ** 2 + 3, 12)
    assert torch.equal(table[-3:], vitb["sd"]["blocks.0.attn.relative_position_bias_table"][-3:])  # cls terms


def test_user_facing_pkl_loads_in_stock_detection_checkpointer(r50, vitb, vit_model):
    """transfer.detectron2.convert's .pkl (for stock detectron2 tools): DetectionCheckpointer finds every tensor."""
    from detectron2.checkpoint import DetectionCheckpointer

    model = _model("r50_c4_1x")
    inc = DetectionCheckpointer(model)._load_model(DetectionCheckpointer(model)._load_file(str(r50["pkl"])))
    assert not [k for k in inc.missing_keys if not k.startswith(("roi_heads.res5.norm", "roi_heads.box", "roi_heads.mask",
                                                                 "proposal_generator"))]
    _check_values(model, r50["sd"], [("roi_heads.res5.2.conv3.weight", "layer4.2.conv3.weight")])
    DetectionCheckpointer(vit_model).load(str(vitb["pkl"]))
    assert torch.equal(vit_model.backbone.net.features.body.blocks[11].mlp.fc2.weight,
                       vitb["sd"]["blocks.11.mlp.fc2.weight"])


# ------------------------------------------------------------------ configs
def test_moco_protocol_configs():
    for name in ("r50_c4_1x", "r50_c4_2x"):
        c = get_config(name)
        assert c.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm" and c.MODEL.RESNETS.NORM == "SyncBN"
        assert c.MODEL.BACKBONE.FREEZE_AT == 0 and c.MODEL.RESNETS.STRIDE_IN_1X1 is False
        assert c.INPUT.FORMAT == "RGB" and c.MODEL.MASK_ON
        assert c.MODEL.PIXEL_MEAN == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])
        assert c.MODEL.PIXEL_STD == pytest.approx([0.229 * 255, 0.224 * 255, 0.225 * 255])
        assert tuple(c.INPUT.MIN_SIZE_TRAIN) == (640, 672, 704, 736, 768, 800) and c.INPUT.MIN_SIZE_TEST == 800
        assert (c.SOLVER.BASE_LR, c.SOLVER.IMS_PER_BATCH, c.SOLVER.MOMENTUM) == (0.02, 16, 0.9)
        assert c.MODEL.WEIGHTS == "" and c.TEST.PRECISE_BN.ENABLED
    c1 = get_config("r50_c4_1x")
    assert (c1.SOLVER.MAX_ITER, tuple(c1.SOLVER.STEPS)) == (90000, (60000, 80000))
    c2 = get_config("r50_c4_2x")
    assert (c2.SOLVER.MAX_ITER, tuple(c2.SOLVER.STEPS)) == (180000, (120000, 160000))
    f = get_config("r50_fpn_1x")
    assert (f.MODEL.ROI_BOX_HEAD.NUM_CONV, f.MODEL.ROI_BOX_HEAD.NUM_FC) == (4, 1)
    assert {f.MODEL.FPN.NORM, f.MODEL.ROI_BOX_HEAD.NORM, f.MODEL.ROI_MASK_HEAD.NORM, f.MODEL.RESNETS.NORM} == {"SyncBN"}
    v = get_config("vit_base_sfp")
    assert (v.SOLVER.OPTIMIZER, v.SOLVER.BASE_LR, v.SOLVER.WEIGHT_DECAY) == ("ADAMW", 3e-4, 0.05)
    assert v.SOLVER.LAYER_DECAY == 0.65
    assert v.MODEL.BACKBONE.NAME == "build_exported_backbone" and v.INPUT.MAX_SIZE_TRAIN <= v.MODEL.EXPORTED.IMG_SIZE
    assert (v.MODEL.EXPORTED.KIND, tuple(v.MODEL.EXPORTED.OUT_INDICES)) == ("vit", (-1,))
    e = get_config("exported_fpn_1x")
    assert (e.MODEL.EXPORTED.KIND, tuple(e.MODEL.EXPORTED.OUT_INDICES)) == ("cnn", (-4, -3, -2, -1))


def test_config_errors_and_runtime_adaptation():
    with pytest.raises(KeyError, match="did you mean 'r50_c4_1x'"):
        get_config("r50_c4_1")
    with pytest.raises(AssertionError, match="SOLVER.BASE_LRR"):   # yacs: unknown keys fail
        get_config("r50_c4_1x", ["SOLVER.BASE_LRR", "0.1"])
    with pytest.raises(ValueError, match="exceed MODEL.EXPORTED.IMG_SIZE=256"):
        get_config("vit_base_sfp", ["MODEL.EXPORTED.IMG_SIZE", "256"])
    c = get_config("r50_fpn_1x")
    assert adapt_to_runtime(c, world_size=8, cuda=True) == [] and c.MODEL.FPN.NORM == "SyncBN"
    changes = adapt_to_runtime(c, world_size=1, cuda=False)
    assert {c.MODEL.RESNETS.NORM, c.MODEL.FPN.NORM, c.MODEL.ROI_BOX_HEAD.NORM, c.MODEL.ROI_MASK_HEAD.NORM} == {"BN"}
    assert len(changes) == 5 and c.MODEL.DEVICE == "cpu"


def test_layer_decay_groups_are_the_shared_rule(vit_model):
    from transfer.detectron2.train import _trainer_class

    cfg = get_config("vit_base_sfp", ["MODEL.EXPORTED.IMG_SIZE", str(VIT_IMG), "INPUT.MAX_SIZE_TRAIN", str(VIT_IMG),
                                      "INPUT.MAX_SIZE_TEST", str(VIT_IMG)])
    opt = _trainer_class().build_optimizer(cfg, vit_model)
    where = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    params = {n: p for n, p in vit_model.named_parameters() if p.requires_grad}
    assert len(where) == len(params) == sum(len(g["params"]) for g in opt.param_groups)
    assert not vit_model.backbone.net.features.body.norm.weight.requires_grad or cfg.MODEL.EXPORTED.FINAL_NORM

    def lr_wd(name):
        return where[id(params["backbone.net.features.body." + name if not name.startswith(("backbone.s", "roi"))
                                else name])]

    assert lr_wd("patch_embed.proj.weight") == pytest.approx((3e-4 * 0.65 ** 13, 0.05))
    assert lr_wd("pos_embed") == pytest.approx((3e-4 * 0.65 ** 13, 0.0))
    assert lr_wd("blocks.0.gamma_1") == pytest.approx((3e-4 * 0.65 ** 12, 0.0))
    assert lr_wd("blocks.0.attn.relative_position_bias_table") == pytest.approx((3e-4 * 0.65 ** 12, 0.0))
    assert lr_wd("blocks.11.mlp.fc1.weight") == pytest.approx((3e-4 * 0.65, 0.05))
    assert lr_wd("blocks.11.norm1.weight") == pytest.approx((3e-4 * 0.65, 0.0))
    assert lr_wd("backbone.simfp_2.0.weight") == pytest.approx((3e-4, 0.05))
    assert lr_wd("roi_heads.box_predictor.cls_score.weight") == pytest.approx((3e-4, 0.05))


# ------------------------------------------------------------------ train entry point
# the configs' own lr and 1000-iteration warm-up stay: 2 steps barely move the random model, which keeps predicting
TINY = ["SEED", "0", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "96",
        "INPUT.MAX_SIZE_TEST", "128", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "20", "TEST.DETECTIONS_PER_IMAGE", "20",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.CHECKPOINT_PERIOD", "100000"]
EXTRA = {"r50_c4_1x": ["TEST.PRECISE_BN.NUM_ITER", "1"], "r50_c4_2x": ["TEST.PRECISE_BN.ENABLED", "False"],
         "r50_fpn_1x": ["TEST.PRECISE_BN.ENABLED", "False"],
         "vit_base_sfp": ["TEST.PRECISE_BN.ENABLED", "False", "MODEL.EXPORTED.IMG_SIZE", str(VIT_IMG)]}


@pytest.mark.slow
@pytest.mark.parametrize("config", ["r50_c4_1x", "r50_c4_2x", "r50_fpn_1x", "vit_base_sfp"])
def test_train_two_iterations_and_evaluate(config, r50_plain, vitb, toy_coco, tmp_path):
    from transfer.detectron2.train import main
    from transfer.results import read_result

    weights = vitb["export"] if config.startswith("vit") else r50_plain
    run = tmp_path / config
    argv = ["--config", config, "--weights", str(weights), "--data-root", str(toy_coco), "--output-dir", str(run),
            *TINY, *EXTRA[config]]
    assert main(argv) == 0
    res = read_result(run / "result.json")
    assert (res["task"], res["framework"], res["method"]) == ("coco_det", "detectron2", "random")
    # toy data + command-line overrides: never the paper's protocol key
    assert res["dataset"] == "toy_coco" and res["protocol"].endswith("@scratch+opts")
    if config == "r50_c4_2x":
        assert res["protocol"] == "maskrcnn-c4-ms2x@scratch+opts"
    assert res["backbone"] == ("vit_base" if config.startswith("vit") else "resnet50")
    for k in ("bbox_mAP", "segm_mAP", "bbox_mAP_50", "segm_mAP_75"):
        assert 0.0 <= res["metrics"][k] <= 100.0
    assert any("SyncBN -> BN" in c for c in res["runtime_changes"])
    assert "MODEL.ROI_HEADS.NUM_CLASSES: 80 -> 8" in " ".join(res["runtime_changes"])   # toy world: 8 shapes
    report = json.loads((run / "load_report.json").read_text())
    assert report["ok"] and report["counts"]["missing"] == 0 and report["counts"]["matched"] in (318, 198)
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s["iteration"] for s in steps if "total_loss" in s] == [1]   # logged at the last of 2 iterations
    assert math.isfinite(steps[0]["total_loss"])
    assert "NORM: BN" in (run / "config.yaml").read_text() and any(run.glob("events.out.tfevents.*"))
    assert main(argv) == 0 and read_result(run / "result.json")["time"] == res["time"]   # complete: no rerun
    if config == "r50_fpn_1x":   # a partial run (no result.json) resumes from its own last checkpoint
        (run / "result.json").unlink()
        assert main([*argv, "SOLVER.MAX_ITER", "3"]) == 0
        assert read_result(run / "result.json")["iterations"] == 3
        for name in ("detectron2", "a2mim.detectron2"):   # log.txt streams are block-buffered
            for h in logging.getLogger(name).handlers:
                h.flush()
        log = (run / "log.txt").read_text()
        assert "Starting training from iteration 2" in log and "resuming from this run's own checkpoint" in log


def test_train_rejects_bad_layout_and_kind(r50, toy_coco, tmp_path, capsys):
    from transfer.detectron2.train import main

    argv = ["--config", "r50_c4_1x", "--weights", str(r50["export"]), "--output-dir", str(tmp_path / "run")]
    assert main([*argv, "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a COCO 2017 layout" in err and "instances_train2017.json" in err
    assert main([*argv, "--data-root", str(toy_coco), "SOLVER.NOPE", "1"]) == 2
    assert "SOLVER.NOPE" in capsys.readouterr().err
    assert main(["--config", "vit_base_sfp", "--weights", str(r50["export"]), "--data-root", str(toy_coco),
                 "--output-dir", str(tmp_path / "vit"), *TINY]) == 2
    assert "needs VIT weights" in capsys.readouterr().err


def test_train_preflight_names_a_bad_annotation(r50, toy_coco, tmp_path, capsys):
    """A COCO json with an unknown category id fails before detectron2 starts, naming the file and the id."""
    import json
    import shutil

    from transfer.detectron2.train import main

    root = tmp_path / "coco"
    shutil.copytree(toy_coco, root)
    ann = root / "annotations" / "instances_val2017.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = 999
    ann.write_text(json.dumps(data))
    argv = ["--config", "r50_c4_1x", "--weights", str(r50["export"]), "--output-dir", str(tmp_path / "run"),
            "--data-root", str(root)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "instances_val2017.json" in err and "999" in err
    assert not (tmp_path / "run" / "result.json").exists()
