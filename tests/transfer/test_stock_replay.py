"""The run folder replays in stock mmdet / mmseg: the dumped config's load_from holds the weights the gate loaded.

A suite run on the toy world, then the stock path on its dumped config (what `tools/train.py CONFIG` does:
Config.fromfile -> Runner.from_cfg -> train, in a new work dir): at the first training iteration the backbone's
tensors equal the exported file's, key by key, for a native torchvision-named ResNet-18 and for the exported-backbone
contract (ExportedBackbone, body = the timm model).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    from benchmarks.toydata import make_toy_world
    return make_toy_world(tmp_path_factory.mktemp("toy") / "w", size=32, dense_size=96, n_train=1, n_val=1,
                          n_dense_train=4, n_dense_val=2)


def _first_iter_backbone(config: Path, work: Path) -> dict[str, torch.Tensor]:
    """Stock mmengine: build the Runner from the dumped config file, train 1 iteration, return the backbone's
    state dict as it was at the first iteration (before the optimizer stepped)."""
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    seen = {}

    class Grab(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if not seen:
                seen.update({k: v.detach().clone() for k, v in runner.model.backbone.state_dict().items()})

    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work)
    cfg.resume = False
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=1, val_interval=10)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=-1, save_last=False)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(Grab())
    runner.train()
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("fw,name,preset", [("mmdet", "toy_mask_rcnn_fpn.py", "resnet18"),
                                            ("mmseg", "toy_upernet.py", "resnet18"),
                                            ("mmdet", "mask_rcnn_r50_fpn_1x.py", "resnet50")])   # mmdet's own ResNet
def test_dumped_config_trains_from_the_exported_weights_in_stock_mmengine(tmp_path, toy_world, coco_root, fw, name,
                                                                          preset):
    from pretrain.export import export_random
    from transfer.openmmlab_stock import STOCK_WEIGHTS
    from transfer.weights import read_backbone_weights

    weights = export_random(tmp_path / f"{preset}.safetensors", [f"model.preset={preset}"], seed=5)
    main = __import__(f"transfer.{fw}.train", fromlist=["main"]).main
    work = tmp_path / "run"
    root = toy_world["coco" if fw == "mmdet" else "ade"] if name.startswith("toy") else str(coco_root)
    main([str(REPO / "transfer" / fw / "configs" / name), "--weights", str(weights), "--work-dir", str(work),
          "--data-root", root, "--tiny", "64"])
    dumped = work / name
    text = dumped.read_text()
    assert f"load_from = '{(work / STOCK_WEIGHTS).resolve()}'" in text      # the dump names the weights
    export = read_backbone_weights(weights)[0]
    got = _first_iter_backbone(dumped, tmp_path / "stock")
    body = {k.removeprefix("body."): v for k, v in got.items()}         # ExportedBackbone: body = the timm model
    assert set(export) <= set(body), sorted(set(export) - set(body))[:5]
    for k, v in export.items():                      # every exported tensor, bit for bit
        assert torch.equal(body[k], v), k
