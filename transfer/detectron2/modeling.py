"""Models registered with detectron2 (importing this module registers them).

Res5ROIHeadsExtraNorm     ROI_HEADS.NAME: Res5ROIHeads with one more norm (MODEL.RESNETS.NORM) after res5, as in
                          MoCo's detectron2 protocol (the native ResNet of the C4 configs).
ExportedBackbone          the backbone contract (transfer.backbones.FeatureBackbone) as a detectron2 Backbone:
                          CNN stages -> {'res2'..'res5'} by stride (4..32); a plain ViT -> {'last_feat'} (stride 16).
build_exported_backbone   BACKBONE.NAME: any exported backbone (MODEL.EXPORTED.*, filled from the weights' sidecar):
                          a CNN -> detectron2's FPN over its stages (+ p6 by max-pool); a ViT -> detectron2's ViTDet
                          SimpleFeaturePyramid on the stride-16 map (scales MODEL.EXPORTED.SCALE_FACTORS, + p6),
                          inputs square-padded to MODEL.EXPORTED.IMG_SIZE (fixed position tables).
"""
from __future__ import annotations

import json

import torch
import torch.nn as nn
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid
from detectron2.modeling.roi_heads import Res5ROIHeads

from transfer.backbones import FeatureBackbone

BACKBONE_NAME = "build_exported_backbone"


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads whose res5 stage ends with an extra norm layer: res5 = Sequential(block0..2, norm)."""

    @classmethod
    def _build_res5_block(cls, cfg):
        seq, out_channels = super()._build_res5_block(cfg)
        seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return seq, out_channels


class ExportedBackbone(Backbone):
    """FeatureBackbone under detectron2's Backbone contract. Its timm model is `features.body` (the gate's scope)."""

    def __init__(self, features: FeatureBackbone):
        super().__init__()
        self.features = features
        if features.kind == "vit":
            names = ["last_feat"]
            if len(features.out_indices) != 1:
                raise ValueError("a ViT feeds detectron2's simple feature pyramid one map: one out index")
        else:
            names = [f"res{s.bit_length()}" for s in features.strides]      # stride 4 -> res2 ... 32 -> res5
        self._out_features = names
        self._out_feature_strides = dict(zip(names, features.strides))
        self._out_feature_channels = dict(zip(names, features.channels))

    @property
    def padding_constraints(self) -> dict[str, int]:
        if self.features.img_size:
            return {"square_size": self.features.img_size}
        return {"size_divisibility": max(self.features.strides)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self._out_features, self.features(x)))


def exported_features(cfg) -> FeatureBackbone:
    e = cfg.MODEL.EXPORTED
    if not e.TIMM_NAME:
        raise ValueError("MODEL.EXPORTED.TIMM_NAME is empty: train.py fills MODEL.EXPORTED.* from the weights' sidecar")
    return FeatureBackbone(e.TIMM_NAME, json.loads(e.TIMM_KWARGS or "{}"), e.KIND, out_indices=tuple(e.OUT_INDICES),
                           img_size=e.IMG_SIZE if e.KIND == "vit" else None, drop_path=e.DROP_PATH,
                           final_norm=e.FINAL_NORM)


@BACKBONE_REGISTRY.register()
def build_exported_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    if input_shape.channels != 3:
        raise ValueError(f"exported backbones take 3-channel images, MODEL.PIXEL_MEAN has {input_shape.channels}")
    net = ExportedBackbone(exported_features(cfg))
    out = cfg.MODEL.FPN.OUT_CHANNELS
    if net.features.kind == "vit":
        s = cfg.MODEL.EXPORTED.IMG_SIZE
        if s % 32:
            raise ValueError(f"MODEL.EXPORTED.IMG_SIZE must be a multiple of 32 (p5 halves the stride-16 map), got {s}")
        return SimpleFeaturePyramid(net, "last_feat", out, tuple(cfg.MODEL.EXPORTED.SCALE_FACTORS),
                                    top_block=LastLevelMaxPool(), norm=cfg.MODEL.EXPORTED.SFP_NORM, square_pad=s)
    return FPN(bottom_up=net, in_features=net._out_features, out_channels=out, norm=cfg.MODEL.FPN.NORM,
               top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


def exported_prefix(model: nn.Module) -> str:
    """Where the FeatureBackbone sits in a built detectron2 model ('backbone.net.features.' for the ViT pyramid,
    'backbone.bottom_up.features.' for FPN)."""
    for name, m in model.named_modules():
        if isinstance(m, FeatureBackbone):
            return name + "."
    raise TypeError(f"{type(model).__name__} holds no exported backbone (BACKBONE.NAME {BACKBONE_NAME})")
