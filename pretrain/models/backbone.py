"""Build a preset's backbone through timm (no re-implemented architectures)."""
from __future__ import annotations

import math

import timm
import torch
import torch.nn as nn

from pretrain.models.presets import BackbonePreset, get_preset


def build_backbone(preset: BackbonePreset | str, img_size: int | None = None, vit_init: str = "official",
                   **overrides) -> nn.Module:
    """timm model of the preset without classifier (num_classes=0). `img_size` only matters for ViTs.

    vit_init='official' (a ViT preset): the official SimMIMViT initialisation - trunc-normal(0.02) on every Linear,
    with none of BEiT's per-block rescaling, which timm's Beit applies at construction (fix_init_weight divides
    attn.proj and mlp.fc2 of block l by sqrt(2(l+1))); multiplying those back restores the official draws exactly.
    'timm' keeps timm's BEiT init."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    kw = {**p.timm_kwargs, **overrides}
    if p.kind == "vit" and img_size is not None:
        kw["img_size"] = img_size
    kw.setdefault("num_classes", 0)
    model = timm.create_model(p.timm_name, pretrained=False, **kw)
    if vit_init not in ("official", "timm"):
        raise ValueError(f"vit_init must be 'official' or 'timm', got {vit_init!r}")
    if p.kind == "vit" and vit_init == "official" and hasattr(model, "fix_init_weight"):
        with torch.no_grad():
            for layer_id, block in enumerate(model.blocks):
                scale = math.sqrt(2.0 * (layer_id + 1))       # undo timm Beit.fix_init_weight
                block.attn.proj.weight.mul_(scale)
                block.mlp.fc2.weight.mul_(scale)
    return model
