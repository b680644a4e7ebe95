"""Backbone weights into a BUILT detectron2 model, in memory, through the suite's load gate (no .pkl round trip).

Two targets, chosen by the model:
  the backbone contract (BACKBONE.NAME build_exported_backbone): the export's timm names under the FeatureBackbone
      (backbone.net.features.body.* for the ViT pyramid, backbone.bottom_up.features.body.* for FPN), through
      transfer.backbones.load_exported (position tables resized once, there);
  detectron2's native ResNet (the stock MoCo C4 / FPN configs): torchvision names renamed to detectron2's
      (transfer.detectron2.convert.resnet_to_d2, MoCo's rules), then
          R50-C4   res5.* -> roi_heads.res5.* (the RoI head's res5), everything else -> backbone.*
          R50-FPN  *      -> backbone.bottom_up.*
      through transfer.weights.load_with_report: nothing missing (except the C4 head's extra res5 norm, which is
      new, and BN step counters), nothing unused (except BN step counters, absent in FrozenBatchNorm2d), no shape
      mismatch.
load_report.json is written either way; IncompleteLoadError on failure, naming the keys.
"""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn
from detectron2.modeling.backbone import FPN
from detectron2.modeling.roi_heads import Res5ROIHeads

from transfer.backbones import FeatureBackbone, load_exported
from transfer.detectron2.convert import resnet_to_d2
from transfer.weights import COUNTER_KEYS, LoadReport, load_with_report

EXTRA_RES5_NORM = "roi_heads.res5.norm.*"   # Res5ROIHeadsExtraNorm's norm after res5: not pre-trained


def native_targets(model: nn.Module, keys) -> tuple[dict[str, str], list[str], tuple[str, ...]]:
    """-> ({detectron2 ResNet key: model key}, gate prefixes, allow_missing patterns) for a native-ResNet model."""
    if isinstance(model.backbone, FPN):
        return {k: f"backbone.bottom_up.{k}" for k in keys}, ["backbone.bottom_up."], COUNTER_KEYS
    if isinstance(getattr(model, "roi_heads", None), Res5ROIHeads):
        plan = {k: (f"roi_heads.{k}" if k.startswith("res5.") else f"backbone.{k}") for k in keys}
        return plan, ["backbone.", "roi_heads.res5."], COUNTER_KEYS + (EXTRA_RES5_NORM,)
    return {k: f"backbone.{k}" for k in keys}, ["backbone."], COUNTER_KEYS


def load_backbone(model: nn.Module, loaded: tuple, report_path: str | Path | None = None,
                  source: str = "") -> LoadReport:
    """Load `loaded` (transfer.weights.read_backbone_weights) into `model` (or its DDP .module) through the gate."""
    model = getattr(model, "module", model)
    prefix = next((n + "." for n, m in model.named_modules() if isinstance(m, FeatureBackbone)), None)
    if prefix is not None:
        return load_exported(model, loaded, report_path=report_path, source=source, prefix=prefix)
    sd, _meta, notes = loaded
    d2, more = resnet_to_d2(sd, source)
    plan, prefixes, allow_missing = native_targets(model, d2.keys())
    return load_with_report(model, {plan[k]: v for k, v in d2.items()}, allow_missing=allow_missing,
                            allow_unexpected=COUNTER_KEYS, report_path=report_path, prefixes=prefixes, source=source,
                            notes=[*notes, *more])
