"""The one parameter-group rule of every downstream framework (mmdet / mmseg optimizer constructor, detectron2's
trainer, the classification fine-tune): weight decay and layer-wise lr decay, on timm parameter names.

No weight decay: 1-D tensors (norm weights, biases, layer-scale gammas), and names whose last part is a position
table or token (pos_embed, cls_token, relative_position_bias_table, mask_token; timm's no_weight_decay() names).
Layer ids of the backbone (its parameters under `prefix`, timm names after it) and lr x decay^(T - id), T = the id
of everything after the backbone (neck, heads: lr x1), BEiT's rule (microsoft/unilm beit/optim_factory.py):
  ViT       cls_token, pos_embed, patch_embed, rel_pos_bias -> 0; blocks.i -> i + 1; final norm -> L + 1
  ConvNeXt  'layer_wise' (mmdet/mmseg LearningRateDecayOptimizerConstructor, the ConvNeXt detection recipe; N = 6
            for 9 blocks in stage 2, 12 for 27): stem -> 0; stage 0 -> 1, stage 1 and its downsample -> 2, stage 2 ->
            3 + block // 3 (its downsample 3), stage 3 and its downsample -> N; T = N + 1.
            'stage_wise' (the ConvNeXt UperNet recipe): stem and every downsample -> 0, stage s -> s + 1; T = N + 1.
  ResNet    stem (conv1, bn1) -> 0; layer1..4 -> 1..4; T = 5
A group carries 'lr_scale' (timm's schedulers and the frameworks multiply their scheduled lr by it, as BEiT does)
and 'param_names'.
"""
from __future__ import annotations

import re

import torch.nn as nn

NO_WD_NAMES = ("pos_embed", "cls_token", "relative_position_bias_table", "mask_token", "dist_token")


def no_weight_decay(name: str, param) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim <= 1 or leaf.endswith("bias") or leaf in NO_WD_NAMES


def _vit_layer(name: str, depth: int) -> int:
    if re.match(r"(cls_token|pos_embed|patch_embed|rel_pos_bias|reg_token)", name):
        return 0
    m = re.match(r"blocks\.(\d+)\.", name)
    return int(m[1]) + 1 if m else depth + 1


def _convnext_layer(name: str, num_layers: int, stage_wise: bool) -> int:
    if name.startswith("stem"):
        return 0
    m = re.match(r"stages\.(\d+)\.(downsample|blocks\.(\d+))", name)
    if not m:
        return num_layers + 1
    stage, block = int(m[1]), int(m[3]) if m[3] is not None else None
    if stage_wise:
        return 0 if m[2] == "downsample" else stage + 1
    if m[2] == "downsample":
        return {0: 0, 1: 2, 2: 3, 3: num_layers}[stage]
    return {0: 1, 1: 2, 3: num_layers}.get(stage, 3 + (block or 0) // 3)


def _resnet_layer(name: str) -> int:
    if re.match(r"(conv1|bn1)\.", name):
        return 0
    m = re.match(r"layer(\d+)\.", name)
    return int(m[1]) if m else 5


DECAY_TYPES = ("layer_wise", "stage_wise")


def layer_ids(body: nn.Module, decay_type: str = "layer_wise", num_layers: int | None = None
              ) -> tuple[dict[str, int], int]:
    """{timm parameter name: layer id} of a timm backbone, and T (the id of everything after it)."""
    if decay_type not in DECAY_TYPES:
        raise ValueError(f"layer decay type must be one of {DECAY_TYPES}, got {decay_type!r}")
    names = [n for n, _ in body.named_parameters()]
    if hasattr(body, "blocks") and hasattr(body, "patch_embed"):
        depth = len(body.blocks)
        return {n: _vit_layer(n, depth) for n in names}, depth + 1
    if hasattr(body, "stages") and hasattr(body, "stem"):
        n_layers = num_layers or (12 if len(body.stages[2].blocks) > 9 else 6)
        sw = decay_type == "stage_wise"
        return {n: _convnext_layer(n, n_layers, sw) for n in names}, n_layers + 1
    if hasattr(body, "layer4"):
        return {n: _resnet_layer(n) for n in names}, 5
    raise TypeError(f"{type(body).__name__}: no layer-id rule (ViT blocks, ConvNeXt stages or ResNet layers)")


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None, body: nn.Module | None = None,
                 prefix: str = "", decay_type: str = "layer_wise", num_layers: int | None = None) -> list[dict]:
    """Groups of `model`'s trainable parameters: weight decay per no_weight_decay(); with layer_decay, lr_scale =
    layer_decay ** (T - id) for the timm backbone `body` whose parameters are `prefix` + timm name in `model`."""
    ids, top = ({}, 0) if layer_decay is None else layer_ids(body if body is not None else model, decay_type,
                                                             num_layers)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        inner = name[len(prefix):] if name.startswith(prefix) else None
        lid = ids.get(inner, top) if inner is not None else top
        nwd = no_weight_decay(name, p)
        g = groups.get((lid, nwd))
        if g is None:
            scale = 1.0 if layer_decay is None else layer_decay ** (top - lid)
            g = groups[(lid, nwd)] = {"params": [], "param_names": [], "lr_scale": scale,
                                      "weight_decay": 0.0 if nwd else weight_decay,
                                      "group_name": f"layer_{lid}_{'no_decay' if nwd else 'decay'}"}
        g["params"].append(p)
        g["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]
