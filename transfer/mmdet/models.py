"""mmdet parts of the suite, registered in mmdet's MODELS on import (configs list this module in
`custom_imports`): the ViT backbone + layer-decay constructor (transfer.openmmlab_models), a ViTDet-style
simple feature pyramid, and the MoCo C4 RoI head with an extra norm after res5."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.models.backbones import ResNet
from mmdet.models.roi_heads.shared_heads import ResLayer
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from mmengine.registry import MODELS as ROOT_MODELS
from timm.layers import LayerNorm2d

from transfer.openmmlab_models import register

register("mmdet")
# LayerNorm over channels of NCHW maps (ViTDet's norm in the pyramid), usable as norm_cfg=dict(type='LN2d-timm');
# in mmengine's root registry, where mmcv's build_norm_layer looks when no default scope is set
if "LN2d-timm" not in ROOT_MODELS.module_dict:
    ROOT_MODELS.register_module(name="LN2d-timm", module=LayerNorm2d)


@MODELS.register_module(force=True)
class SimpleFeaturePyramid(BaseModule):
    """ViTDet simple feature pyramid: one stride-16 map (B, C, h, w) -> maps of strides 16/scale.

    scale 4: deconv 2x2 (C->C/2), norm, GELU, deconv 2x2 (C/2->C/4); 2: deconv (C->C/2); 1: identity;
    0.5: maxpool 2x2. Each then 1x1 conv + 3x3 conv (out_channels, norm, no activation). num_outs beyond
    len(scale_factors) adds stride-2 max-pools of the last map (P6 for the RPN).
    """

    def __init__(self, in_channels: int = 768, out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), num_outs: int = 5,
                 norm_cfg: dict = dict(type="LN2d-timm"), init_cfg=None):
        super().__init__(init_cfg)
        C = in_channels
        self.stages = nn.ModuleList()
        for s in scale_factors:
            if s == 4.0:
                pre, dim = [nn.ConvTranspose2d(C, C // 2, 2, 2), build_norm_layer(norm_cfg, C // 2)[1], nn.GELU(),
                            nn.ConvTranspose2d(C // 2, C // 4, 2, 2)], C // 4
            elif s == 2.0:
                pre, dim = [nn.ConvTranspose2d(C, C // 2, 2, 2)], C // 2
            elif s == 1.0:
                pre, dim = [], C
            elif s == 0.5:
                pre, dim = [nn.MaxPool2d(2, 2)], C
            else:
                raise ValueError(f"SimpleFeaturePyramid: scale factor {s} not in (4, 2, 1, 0.5)")
            self.stages.append(nn.Sequential(
                *pre, ConvModule(dim, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None),
                ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=None)))
        if num_outs < len(scale_factors):
            raise ValueError(f"SimpleFeaturePyramid: num_outs {num_outs} < {len(scale_factors)} scale factors")
        self.num_outs = num_outs

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x = inputs[-1]                                    # the last backbone output, stride 16
        outs = [stage(x) for stage in self.stages]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)


@MODELS.register_module(force=True)
class ResLayerExtraNorm(ResLayer):
    """mmdet's C4 RoI shared head (res5) followed by one more norm on its output (MoCo's
    Res5ROIHeadsExtraNorm): keys `layer4.*` (pre-trained res5) and `norm.*` (new)."""

    def __init__(self, depth: int, stage: int = 3, **kwargs):
        super().__init__(depth, stage=stage, **kwargs)
        block, _ = ResNet.arch_settings[depth]
        self.add_module("norm", build_norm_layer(self.norm_cfg, 64 * 2 ** stage * block.expansion)[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))
