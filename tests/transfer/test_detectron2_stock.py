"""A converted ResNet in STOCK detectron2: get_cfg() + a model-zoo config + the OUT.yaml the converter writes.

No suite module is imported on the detectron2 side (no add_a2mim_config, no registered backbone): the yaml holds
stock keys only, and with it stock detectron2 builds the network the weights belong to (stride in the 3x3 conv, RGB,
torchvision mean/std) and DetectionCheckpointer loads every backbone tensor of the export, equal.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed (scripts/setup_env.sh installs it)")

ZOO_FPN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
# torchvision name -> detectron2 FPN model name (the suffix matching puts the bare names under backbone.bottom_up)
PAIRS = [("conv1.weight", "stem.conv1.weight"), ("bn1.running_var", "stem.conv1.norm.running_var"),
         ("layer1.0.conv2.weight", "res2.0.conv2.weight"), ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
         ("layer4.1.bn2.weight", "res5.1.conv2.norm.weight")]


@pytest.mark.parametrize("preset,depth", [("resnet18", 18), ("resnet50", 50)])
def test_converted_resnet_loads_into_stock_detectron2(tmp_path, preset, depth):
    from detectron2 import model_zoo
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from pretrain.export import export_random
    from transfer.detectron2.convert import main
    from transfer.weights import read_backbone_weights

    weights = export_random(tmp_path / f"{preset}.safetensors", [f"model.preset={preset}"], seed=2)
    pkl = tmp_path / f"{preset}.pkl"
    assert main([str(weights), str(pkl), "--quiet"]) == 0
    cfg = get_cfg()                                            # stock: no suite keys
    cfg.merge_from_file(model_zoo.get_config_file(ZOO_FPN))
    cfg.merge_from_file(str(pkl.with_suffix(".yaml")))
    cfg.MODEL.DEVICE = "cpu"
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.STRIDE_IN_1X1, cfg.INPUT.FORMAT) == (depth, False, "RGB")
    assert cfg.MODEL.PIXEL_STD == pytest.approx([58.395, 57.12, 57.375])
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    body = model.backbone.bottom_up
    sd = body.state_dict()
    export = read_backbone_weights(weights)[0]
    for src, dst in PAIRS:
        assert torch.equal(sd[dst], export[src]), dst
    n_export = len([k for k in export if not k.startswith("fc.") and not k.endswith("num_batches_tracked")])
    assert len([k for k in sd if not k.endswith("num_batches_tracked")]) == n_export   # nothing left at random
    # the stride sits where torchvision puts it, in a 3x3 conv: a bottleneck's conv2 (not its 1x1 conv1); a basic
    # block's conv1 (both its convs are 3x3)
    first = body.res3[0]
    strided = first.conv2 if depth >= 50 else first.conv1
    assert strided.stride == (2, 2) and strided.kernel_size == (3, 3)
    if depth >= 50:
        assert first.conv1.stride == (1, 1)
