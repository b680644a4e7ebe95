"""The timm model an export's sidecar names (timm_name + timm_kwargs + kind), without its classifier.

Shared by the backbone contract (transfer/backbones.py) and the weight readers' sidecar check (transfer/weights.py).
"""
from __future__ import annotations

import torch.nn as nn


def build_timm_body(timm_name: str, timm_kwargs: dict, kind: str, img_size: int | None = None,
                    drop_path: float | None = None) -> nn.Module:
    """The timm model of a sidecar, without classifier; a ViT built for `img_size` (its position tables)."""
    import timm

    kw = {**dict(timm_kwargs or {}), "num_classes": 0}
    if kind == "vit" and img_size is not None:
        kw["img_size"] = int(img_size)
    if drop_path is not None:
        kw["drop_path_rate"] = float(drop_path)
    return timm.create_model(timm_name, pretrained=False, **kw)
