"""Models registered with detectron2 (importing this module registers them) and ViT layer-wise lr decay.

Res5ROIHeadsExtraNorm   ROI_HEADS.NAME: Res5ROIHeads with one more norm (MODEL.RESNETS.NORM) after res5, as in
                        MoCo's detectron2 protocol: the C4 head's res5 output is normalised before the box/mask heads.
build_a2mim_vit_sfp_backbone
                        BACKBONE.NAME: the project's ViT (pretrain.models.build_backbone(MODEL.VIT.PRESET), timm Beit)
                        + detectron2's ViTDet SimpleFeaturePyramid: stride-16 tokens -> p2..p5 (x4, x2, x1, x0.5)
                        + p6 (max-pool of p5). Inputs are square-padded to MODEL.VIT.IMG_SIZE (fixed pos tables).
vit_param_groups        AdamW groups: lr = base_lr * decay^(L + 1 - layer_id), no weight decay on 1-D tensors
                        (norms, biases, LayerScale gammas), pos_embed, cls_token, relative-position tables.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid
from detectron2.modeling.roi_heads import Res5ROIHeads

from pretrain.models.backbone import build_backbone
from pretrain.models.presets import get_preset


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads whose res5 stage ends with an extra norm layer: res5 = Sequential(block0..2, norm)."""

    @classmethod
    def _build_res5_block(cls, cfg):
        seq, out_channels = super()._build_res5_block(cfg)
        seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return seq, out_channels


class TimmViT(Backbone):
    """The project's ViT as a detectron2 Backbone: (B, 3, S, S) -> {'last_feat': (B, D, S/16, S/16)}.

    Features are the patch tokens after the last block and the final LayerNorm (cls token dropped): the map the
    A²MIM decoder read in pre-training, so every pre-trained tensor is used. S must equal img_size (timm checks it).
    """

    def __init__(self, preset: str, img_size: int, drop_path: float):
        super().__init__()
        p = get_preset(preset)
        if p.kind != "vit":
            raise ValueError(f"MODEL.VIT.PRESET={preset!r} is a {p.kind} preset; the ViT pyramid needs a ViT preset")
        self.vit = build_backbone(p, img_size=img_size, drop_path_rate=drop_path)
        self.patch = self.vit.patch_embed.patch_size[0]
        self._out_features = ["last_feat"]
        self._out_feature_strides = {"last_feat": self.patch}
        self._out_feature_channels = {"last_feat": self.vit.embed_dim}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.vit.forward_features(x)                       # (B, 1 + h*w, D), final norm applied
        h, w = self.vit.patch_embed.grid_size
        patches = tokens[:, self.vit.num_prefix_tokens:]            # (B, h*w, D)
        return {"last_feat": patches.transpose(1, 2).reshape(x.shape[0], -1, h, w)}


@BACKBONE_REGISTRY.register()
def build_a2mim_vit_sfp_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    v = cfg.MODEL.VIT
    if input_shape.channels != 3:
        raise ValueError(f"the ViT backbone takes 3-channel images, MODEL.PIXEL_MEAN has {input_shape.channels}")
    if v.IMG_SIZE % 32:
        raise ValueError(f"MODEL.VIT.IMG_SIZE must be a multiple of 32 (p5 halves the stride-16 map), got {v.IMG_SIZE}")
    net = TimmViT(v.PRESET, v.IMG_SIZE, v.DROP_PATH)
    return SimpleFeaturePyramid(net, "last_feat", cfg.MODEL.FPN.OUT_CHANNELS, tuple(v.SCALE_FACTORS),
                                top_block=LastLevelMaxPool(), norm=v.SFP_NORM, square_pad=v.IMG_SIZE)


# ---- layer-wise lr decay
_NO_DECAY = ("pos_embed", "cls_token", "relative_position_bias_table")


def vit_layer_id(name: str, num_layers: int) -> int:
    """0: embeddings (patch_embed, pos_embed, cls_token); i + 1: ViT block i; num_layers + 1: everything after
    the blocks (final norm, pyramid, RPN, RoI heads). `name` is a full model parameter name."""
    if ".vit." not in name:
        return num_layers + 1
    if re.search(r"\.vit\.(patch_embed|pos_embed|cls_token)", name):
        return 0
    m = re.search(r"\.vit\.blocks\.(\d+)\.", name)
    return int(m[1]) + 1 if m else num_layers + 1


def vit_param_groups(model: nn.Module, base_lr: float, weight_decay: float, layer_decay: float,
                     num_layers: int) -> list[dict]:
    """One optimizer group per (layer scale, decay?) pair; each group's 'lr' is its scaled lr."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = vit_layer_id(name, num_layers)
        decay = p.ndim > 1 and not name.endswith(_NO_DECAY)
        g = groups.setdefault((layer, decay), {
            "params": [], "lr": base_lr * layer_decay ** (num_layers + 1 - layer),
            "weight_decay": weight_decay if decay else 0.0})
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]
