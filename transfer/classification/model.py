"""Classification models of an exported backbone, and the gated weight load.

finetune: the timm model of the weights (timm_name + timm_kwargs of the sidecar) with a K-class head; a ViT
  (timm Beit) pools with global_pool 'avg' = mean of the patch tokens + `fc_norm` LayerNorm (BEiT/SimMIM
  protocol), which replaces the final `norm`: the exported `norm.*` is loaded into `fc_norm.*` (reported).
linear: LinearProbe = that backbone without classifier, frozen (eval mode always, no grad), pooled features
  (B, C) -> BatchNorm1d(C, affine=False, eps=1e-6) (MAE; optional) -> Linear(C, K).
Gate (transfer.weights.load_with_report): every backbone tensor must be matched; only the new head (timm's
`pretrained_cfg['classifier']`: `fc.*` ResNet, `head.fc.*` ConvNeXt, `head.*` ViT),
`fc_norm.*` and BN step counters may be missing; load_report.json is written either way.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from pretrain.config import ConfigError
from pretrain.models.presets import get_preset
from transfer.weights import COUNTER_KEYS, LoadReport, load_with_report, read_backbone_weights


class LinearProbe(nn.Module):
    """Frozen backbone (always in eval mode, no grad) + [BatchNorm1d(affine=False)] + Linear head."""

    def __init__(self, backbone: nn.Module, num_classes: int, bn: bool = True, init_std: float = 0.01):
        from transfer.frozen.probes import linear_head

        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.head = linear_head(backbone.num_features, num_classes, bn, init_std)

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.backbone.eval()          # BN statistics and drop paths of the backbone never change
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.backbone(x)  # (B, C): timm model with num_classes=0 -> pooled features
        return self.head(feats)


def backbone_spec(cfg, meta: dict) -> dict:
    """{preset, timm_name, timm_kwargs, kind} from the sidecar (exported) or from model.preset (official .pth)."""
    preset = cfg.model.preset
    if meta.get("timm_name"):
        if preset is not None and meta.get("preset") not in (None, preset):
            raise ConfigError(f"config key 'model.preset' = {preset!r} but the weights {cfg.model.weights} hold "
                              f"preset {meta['preset']!r}; drop model.preset or use matching weights")
        return {"preset": meta.get("preset") or preset, "timm_name": meta["timm_name"],
                "timm_kwargs": dict(meta.get("timm_kwargs") or {}), "kind": meta.get("kind", "cnn")}
    if preset is None:
        raise ConfigError(f"{cfg.model.weights}: no sidecar naming the architecture; set model.preset=<preset>")
    p = get_preset(preset)
    if meta.get("kind") not in (None, p.kind):
        raise ConfigError(f"config key 'model.preset' = {preset!r} is a {p.kind} but {cfg.model.weights} holds "
                          f"a {meta['kind']} backbone")
    return {"preset": preset, "timm_name": p.timm_name, "timm_kwargs": dict(p.timm_kwargs), "kind": p.kind}


def global_pool(cfg) -> str:
    return cfg.model.global_pool or ("avg" if cfg.model.mode == "finetune" else "token")


def build_classifier(cfg, spec: dict, num_classes: int) -> nn.Module:
    import timm

    kw = dict(spec["timm_kwargs"])
    if spec["kind"] == "vit":
        kw.update(img_size=cfg.data.train_size, global_pool=global_pool(cfg))
    if cfg.model.mode == "finetune":
        kw.update(num_classes=num_classes, drop_path_rate=cfg.model.drop_path)
        return timm.create_model(spec["timm_name"], pretrained=False, **kw)
    kw.update(num_classes=0, drop_path_rate=0.0)
    backbone = timm.create_model(spec["timm_name"], pretrained=False, **kw)
    return LinearProbe(backbone, num_classes, bn=cfg.model.head_bn, init_std=cfg.model.head_init_std)


def adapt_state_dict(target: nn.Module, sd: dict, kind: str) -> tuple[dict, list[str]]:
    """The one position-table resize (transfer.backbones.adapt_state_dict), then norm.* -> fc_norm.* where the target
    pools with fc_norm (its `norm` is then an Identity). Returns (state dict, notes)."""
    from transfer.backbones import adapt_state_dict as resize_tables

    sd, notes = resize_tables(target, sd, kind)
    own = target.state_dict()
    if kind == "vit" and "fc_norm.weight" in own and "norm.weight" not in own and "norm.weight" in sd:
        for name in ("weight", "bias"):
            sd[f"fc_norm.{name}"] = sd.pop(f"norm.{name}")
        notes.append("mapped norm.* -> fc_norm.* (final LayerNorm of the pre-trained ViT initialises the "
                     "LayerNorm after mean pooling)")
    return sd, notes


def classifier_name(model: nn.Module) -> str:
    """The new K-class head of a timm model: 'fc' (ResNet), 'head.fc' (ConvNeXt), 'head' (Beit)."""
    return model.pretrained_cfg.get("classifier", "head")


def load_backbone(model: nn.Module, cfg, spec: dict, loaded: tuple, report_path: Path | None) -> LoadReport:
    """Gated load of the backbone weights into `model` (fine-tune network or LinearProbe.backbone)."""
    sd, _, notes = loaded
    linear = isinstance(model, LinearProbe)
    target = model.backbone if linear else model
    sd, more = adapt_state_dict(target, sd, spec["kind"])
    allow = (*COUNTER_KEYS,) if linear else (f"{classifier_name(model)}.*", "fc_norm.*", *COUNTER_KEYS)
    return load_with_report(target, sd, allow_missing=allow, report_path=report_path, source=cfg.model.weights,
                            notes=[*notes, *more])

