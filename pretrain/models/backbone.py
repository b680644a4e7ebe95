"""Build a preset's backbone through timm (no re-implemented architectures)."""
from __future__ import annotations

import timm
import torch.nn as nn

from pretrain.models.presets import BackbonePreset, get_preset


def build_backbone(preset: BackbonePreset | str, img_size: int | None = None, **overrides) -> nn.Module:
    """timm model of the preset without classifier (num_classes=0). `img_size` only matters for ViTs."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    kw = {**p.timm_kwargs, **overrides}
    if p.kind == "vit" and img_size is not None:
        kw["img_size"] = img_size
    kw.setdefault("num_classes", 0)
    return timm.create_model(p.timm_name, pretrained=False, **kw)
