from pretrain.models.backbone import build_backbone
from pretrain.models.presets import PRESETS, BackbonePreset, LossPreset, get_preset

__all__ = ["PRESETS", "BackbonePreset", "LossPreset", "build_backbone", "get_preset"]
