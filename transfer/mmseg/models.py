"""mmseg parts of the suite, registered on import (configs list this module in `custom_imports`): the ViT
backbone, the exported-backbone contract and the layer-decay optimizer constructor of transfer.openmmlab_models, and
BNHead, DINOv2's "linear" segmentation head. The ViT pyramid is mmseg's own Feature2Pyramid neck."""
from __future__ import annotations

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS

from transfer.openmmlab_models import register

register("mmseg")


@MODELS.register_module(force=True)
class BNHead(BaseDecodeHead):
    """DINOv2's linear segmentation head (dinov2/eval/segmentation/models/decode_heads/linear_head.py): the chosen
    levels resized (bilinear) to the first one's size and concatenated (input_transform='resize_concat'), one
    BatchNorm over the channels, a 1x1 conv to the classes; mmseg upsamples the logits to the label size in the
    loss and at test. channels = sum(in_channels) (the concatenation); nothing else is learnt."""

    def __init__(self, **kwargs):
        in_channels = kwargs.get("in_channels")
        kwargs["channels"] = sum(in_channels) if isinstance(in_channels, (list, tuple)) else in_channels
        kwargs.setdefault("norm_cfg", dict(type="SyncBN", requires_grad=True))
        super().__init__(**kwargs)
        self.bn = build_norm_layer(self.norm_cfg, self.channels)[1]

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = self._transform_inputs(inputs)            # (B, sum C, h, w)
        return self.cls_seg(self.bn(x))                # (B, K, h, w)

