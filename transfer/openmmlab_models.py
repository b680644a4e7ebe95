"""Model parts shared by the mmdet and mmseg adapters: the project's ViT backbone and a layer-wise
lr-decay optimizer constructor, registered in mmdet's and mmseg's registries (`register()`).

A2MIMViT wraps the timm Beit of `pretrain.models.build_backbone` (the architecture the ViT presets were
pre-trained with) and keeps timm's parameter names (`patch_embed.proj`, `cls_token`, `pos_embed`,
`blocks.N....`, `norm`), so exported weights load without renaming. Features of the chosen blocks come
out as NCHW maps of stride 16 (cls token dropped).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from mmengine.model import BaseModule
from mmengine.optim import DefaultOptimWrapperConstructor

from pretrain.models import build_backbone, get_preset


class A2MIMViT(BaseModule):
    """timm Beit (rel-pos bias + abs pos + LayerScale) as an OpenMMLab backbone.

    img_size: the square input size the position embedding / relative-position tables are built for.
      Inputs may be smaller (padded bottom/right to img_size, outputs cropped back); larger is an error.
    out_indices: blocks whose outputs are returned, each (B, C, ceil(H/16), ceil(W/16)).
    final_norm: apply the pre-trained final LayerNorm to the output of the last block (when it is returned).
      mmseg BEiT/MAE and ViTDet use no final norm (False); its weights are then reported as unused.
    """

    def __init__(self, preset: str = "vit_base", img_size: int = 224, out_indices: Sequence[int] = (11,),
                 drop_path_rate: float | None = None, final_norm: bool = False, with_cp: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg)
        p = get_preset(preset)
        if p.kind != "vit":
            raise ValueError(f"A2MIMViT: preset '{preset}' is a {p.kind}, not a ViT")
        kw = {} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}
        vit = build_backbone(p, img_size=img_size, **kw)
        self.img_size = int(img_size)
        self.patch_size = vit.patch_embed.patch_size[0]
        self.embed_dim = vit.embed_dim
        depth = len(vit.blocks)
        self.out_indices = tuple(i if i >= 0 else depth + i for i in out_indices)
        if any(not 0 <= i < depth for i in self.out_indices):
            raise ValueError(f"A2MIMViT: out_indices {tuple(out_indices)} outside 0..{depth - 1} ({preset})")
        # the timm modules themselves, under timm's names
        self.patch_embed, self.cls_token, self.pos_embed = vit.patch_embed, vit.cls_token, vit.pos_embed
        self.pos_drop, self.rel_pos_bias, self.blocks = vit.pos_drop, vit.rel_pos_bias, vit.blocks
        self.norm = vit.norm if final_norm else None
        self.with_cp = with_cp

    def init_weights(self):
        # timm initialised the modules at construction; real weights come from transfer.weights (the gate)
        self._is_init = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B, _, H, W = x.shape
        S = self.img_size
        if H > S or W > S:
            raise ValueError(f"A2MIMViT: input {H}x{W} is larger than img_size {S}; raise backbone.img_size "
                             f"or resize inputs to at most {S}")
        x = F.pad(x, (0, S - W, 0, S - H))                              # (B, 3, S, S)
        h, w = math.ceil(H / self.patch_size), math.ceil(W / self.patch_size)
        g = S // self.patch_size
        x = self.patch_embed(x)                                         # (B, g*g, C)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)     # (B, 1+g*g, C)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        x = self.pos_drop(x)
        rel = self.rel_pos_bias() if self.rel_pos_bias is not None else None
        outs, last = [], len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            if self.with_cp and self.training:
                x = torch.utils.checkpoint.checkpoint(blk, x, rel, use_reentrant=False)
            else:
                x = blk(x, shared_rel_pos_bias=rel)
            if i in self.out_indices:
                y = self.norm(x) if (self.norm is not None and i == last) else x
                y = y[:, 1:].transpose(1, 2).reshape(B, -1, g, g)       # (B, C, g, g)
                outs.append(y[:, :, :h, :w].contiguous())               # crop the padding: (B, C, h, w)
        return tuple(outs)


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay: embeddings 0, blocks.i -> i+1, the rest num_layers+1."""
    if not name.startswith("backbone."):
        return num_layers + 1
    name = name[len("backbone."):]
    if name.startswith(("cls_token", "pos_embed", "patch_embed", "rel_pos_bias")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Norms, biases, LayerScale gammas, position embedding, cls token, relative-position tables."""
    leaf = name.split(".")[-1]
    return (param.ndim == 1 or leaf.endswith("bias") or leaf.startswith("gamma")
            or leaf in ("pos_embed", "cls_token", "relative_position_bias_table"))


class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """lr x decay_rate ** (num_layers + 1 - layer_id) per parameter; no weight decay per no_weight_decay().

    paramwise_cfg: decay_rate (required), num_layers (default: len(model.backbone.blocks)).
    (mmseg 1.2's LayerDecayOptimizerConstructor expects mmseg BEiT names `backbone.layers.N`, so timm's
    `backbone.blocks.N` would all land in one group, and it decays pos_embed/cls_token/rel-pos tables.)
    """

    def add_params(self, params: list, module: nn.Module, **kwargs) -> None:
        cfg = self.paramwise_cfg
        if "decay_rate" not in cfg:
            raise KeyError("LayerDecayOptimWrapperConstructor: paramwise_cfg needs 'decay_rate' (e.g. 0.65)")
        blocks = getattr(getattr(module, "backbone", None), "blocks", None)
        num_layers = int(cfg.get("num_layers", len(blocks) if blocks is not None else 0))
        if num_layers <= 0:
            raise ValueError("LayerDecayOptimWrapperConstructor: model.backbone has no `blocks`; set num_layers")
        groups: dict[tuple[int, bool], dict] = {}
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            lid, nwd = layer_id(name, num_layers), no_weight_decay(name, p)
            g = groups.get((lid, nwd))
            if g is None:
                scale = cfg["decay_rate"] ** (num_layers + 1 - lid)
                g = groups[(lid, nwd)] = {"params": [], "param_names": [], "lr": self.base_lr * scale,
                                          "lr_scale": scale, "weight_decay": 0.0 if nwd else self.base_wd,
                                          "group_name": f"layer_{lid}_{'no_decay' if nwd else 'decay'}"}
            g["params"].append(p)
            g["param_names"].append(name)
        params.extend(groups[k] for k in sorted(groups))


NAME_VIT = "A2MIMViT"
NAME_LD = "LayerDecayOptimWrapperConstructor"


def _register(registry, name: str, cls) -> None:
    if registry.module_dict.get(name) is not cls:
        registry.register_module(name=name, module=cls, force=True)


def register(framework: str) -> None:
    """Register the shared parts in mmengine's and `framework`'s ('mmdet' | 'mmseg') registries."""
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as ROOT_OWC
    _register(ROOT_OWC, NAME_LD, LayerDecayOptimWrapperConstructor)
    if framework == "mmdet":
        from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
    elif framework == "mmseg":
        from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
    else:
        raise ValueError(f"unknown framework {framework!r} (mmdet | mmseg)")
    _register(MODELS, NAME_VIT, A2MIMViT)
    _register(MODELS, NAME_EXPORTED, exported_backbone)
    _register(OPTIM_WRAPPER_CONSTRUCTORS, NAME_LD, LayerDecayOptimWrapperConstructor)


# ----------------------------------------------------------------------------- the backbone contract in mmdet/mmseg
NAME_EXPORTED = "ExportedBackbone"
FROM_BACKBONE = "from_backbone"     # a neck/head `in_channels` written this way gets the backbone's channels


def exported_backbone(**kw):
    """mmengine builder of transfer.backbones.FeatureBackbone (type='ExportedBackbone'): the architecture keys
    (timm_name, timm_kwargs, kind) are filled from the weights' sidecar by fill_exported_backbone."""
    from transfer.backbones import FeatureBackbone
    kw.pop("init_cfg", None)
    return FeatureBackbone(**kw)


def fill_exported_backbone(cfg, meta: dict) -> None:
    """cfg.model.backbone of type ExportedBackbone <- the sidecar's architecture (ViT img_size: the config's, else
    the sidecar's input size); every `in_channels='from_backbone'` of the neck / heads <- the backbone's output
    channels (a list, or one int where the module takes one map). So one config serves every exported family."""
    bb = cfg.model.get("backbone") or {}
    if bb.get("type") != NAME_EXPORTED:
        return
    for key in ("timm_name", "timm_kwargs", "kind"):
        if bb.get(key) is None:
            bb[key] = meta.get(key)
    if bb["timm_name"] is None:
        raise ValueError("model.backbone type=ExportedBackbone needs weights with a sidecar (python -m pretrain.export) "
                         "naming the architecture")
    if bb["kind"] == "vit" and bb.get("img_size") is None:
        bb["img_size"] = meta.get("input_size")
    import torch
    with torch.device("meta"):
        channels = exported_backbone(**{k: v for k, v in bb.items() if k != "type"}).channels

    def fill(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "in_channels" and v == FROM_BACKBONE:
                    node[k] = list(channels)
                elif k == "in_channels" and v == FROM_BACKBONE + "[-1]":
                    node[k] = channels[-1]
                else:
                    fill(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                fill(v)
    for part in ("neck", "decode_head", "auxiliary_head", "rpn_head", "roi_head"):
        if part in cfg.model:
            fill(cfg.model[part])
