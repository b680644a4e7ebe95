"""The parts shared by the mmdet and mmseg adapters, registered in both registries (`register()`):

ExportedBackbone   the one backbone contract (transfer.backbones.FeatureBackbone) as an OpenMMLab backbone; its
                   architecture (timm_name, timm_kwargs, kind) comes from the weights' sidecar (fill_exported_backbone),
                   so one config serves every exported family: ResNet, ConvNeXt, a ViT, any timm model.
LayerDecayOptimWrapperConstructor
                   transfer.param_groups (the one weight-decay + layer-decay rule of every framework) as an mmengine
                   optimizer-wrapper constructor: paramwise_cfg decay_rate, decay_type (layer_wise | stage_wise),
                   num_layers (ConvNeXt's grouping; default from the architecture).
"""
from __future__ import annotations

import re

from mmengine.optim import DefaultOptimWrapperConstructor

NAME_EXPORTED = "ExportedBackbone"
NAME_LD = "LayerDecayOptimWrapperConstructor"
FROM_BACKBONE = "from_backbone"     # `in_channels` / `embed_dim` = 'from_backbone' (a list) or 'from_backbone[i]'
_MARKER = re.compile(r"^from_backbone(?:\[(-?\d+)\])?$")


def exported_backbone(**kw):
    """mmengine builder of transfer.backbones.FeatureBackbone (type='ExportedBackbone')."""
    from transfer.backbones import FeatureBackbone
    kw.pop("init_cfg", None)
    return FeatureBackbone(**kw)


class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Groups of transfer.param_groups.param_groups over the whole detector/segmentor: the backbone's layer ids by
    its timm names (an ExportedBackbone's body, or a native ResNet), necks and heads at lr x1; 'lr' = base lr x
    lr_scale per group (mmengine's schedulers scale each group from there)."""

    def add_params(self, params: list, module, **kwargs) -> None:
        from transfer.backbones import FeatureBackbone
        from transfer.param_groups import param_groups

        cfg = self.paramwise_cfg
        if "decay_rate" not in cfg:
            raise KeyError(f"{NAME_LD}: paramwise_cfg needs 'decay_rate' (e.g. 0.65)")
        bb = module.backbone
        body, prefix = (bb.body, "backbone.body.") if isinstance(bb, FeatureBackbone) else (bb, "backbone.")
        groups = param_groups(module, self.base_wd, cfg["decay_rate"], body=body, prefix=prefix,
                              decay_type=cfg.get("decay_type", "layer_wise"), num_layers=cfg.get("num_layers"))
        for g in groups:
            g["lr"] = self.base_lr * g["lr_scale"]
        params.extend(groups)


def fill_exported_backbone(cfg, meta: dict) -> None:
    """cfg.model.backbone of type ExportedBackbone <- the sidecar's architecture (a ViT's img_size: the config's,
    else the sidecar's input size); every neck/head `in_channels` / `embed_dim` written 'from_backbone' <- the list
    of the backbone's output channels, 'from_backbone[i]' <- the i-th."""
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
                m = _MARKER.match(v) if isinstance(v, str) and k in ("in_channels", "embed_dim") else None
                if m:
                    node[k] = list(channels) if m[1] is None else channels[int(m[1])]
                else:
                    fill(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                fill(v)
    for part in ("neck", "decode_head", "auxiliary_head", "rpn_head", "roi_head"):
        if part in cfg.model:
            fill(cfg.model[part])


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
    _register(MODELS, NAME_EXPORTED, exported_backbone)
    _register(OPTIM_WRAPPER_CONSTRUCTORS, NAME_LD, LayerDecayOptimWrapperConstructor)
