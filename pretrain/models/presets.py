"""Backbone presets: which timm model, where the A²MIM mask token goes, and the loss preset (spec §1-§3).

A preset names a timm model, the module whose OUTPUT receives the mask token (the "injection point"),
the feature stride and channels there, the stride/channels of the feature map the decoder reads, and the
loss preset of spec §2. Any timm CNN/ViT can be used by building a BackbonePreset by hand.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LossPreset:
    spatial: str = "focal_l1"      # 'focal_l1' (CNNs) | 'l1' (ViTs)
    freq_weight: float = 0.0       # lambda_f; 0 disables the frequency term
    freq_focal: bool = True        # True: focal-frequency loss on batch-averaged spectra; False: focal-L1 on spectra
    unmask_weight: float = 0.0     # w_u: weight kept on the live prediction outside the mask in the frequency term


@dataclass(frozen=True)
class BackbonePreset:
    name: str                      # preset name used in configs
    timm_name: str                 # timm.create_model name
    kind: str                      # 'cnn' | 'vit'
    timm_kwargs: dict = field(default_factory=dict)
    inject_module: str = ""        # module whose output gets the token (A²MIM)
    inject_stride: int = 16        # feature stride there (= mask resolution: input_size / inject_stride)
    inject_channels: int = 0       # channels C there (token / gamma shape)
    out_stride: int = 32           # stride of the map the decoder reads (PixelShuffle factor)
    out_channels: int = 0          # channels of that map (decoder input)
    loss: LossPreset = LossPreset()
    # SimMIM switch: the token goes in at the first stage (spec §2 last paragraph), on the clean image; it REPLACES
    # the features (official SimMIM-ResNet / -ViT: replace=True) or is ADDED (official SimMIM-ConvNeXt: replace=False)
    simmim_inject_module: str = ""
    simmim_inject_stride: int = 4
    simmim_inject_channels: int = 0
    simmim_inject_mode: str = "replace"

    def replace(self, **kw) -> "BackbonePreset":
        return dataclasses.replace(self, **kw)


_R50_LOSS = LossPreset("focal_l1", 0.5, True, 1e-3)
_R101_LOSS = LossPreset("focal_l1", 0.1, False, 1e-3)
_NOFREQ_CNN = LossPreset("focal_l1", 0.0, True, 0.0)      # R152/R200 (official HEAD), ConvNeXt
_VIT_LOSS = LossPreset("l1", 0.1, True, 0.0)

# BEiT-style ViT of the official runs: rel-pos bias per layer + absolute pos embed + LayerScale 0.1, LN eps 1e-6.
# global_pool='token' keeps timm's final LayerNorm (`norm`) in forward_features, as the official decoder input.
_VIT_COMMON = dict(use_abs_pos_emb=True, use_rel_pos_bias=True, use_shared_rel_pos_bias=False,
                   init_values=0.1, qkv_bias=True, drop_path_rate=0.1, global_pool="token")


def _resnet(name: str, depth: int, loss: LossPreset) -> BackbonePreset:
    c3, c4 = (256, 512) if depth < 50 else (1024, 2048)
    return BackbonePreset(name, f"resnet{depth}", "cnn", {}, "layer3", 16, c3, 32, c4, loss,
                          simmim_inject_module="maxpool", simmim_inject_stride=4, simmim_inject_channels=64)


def _convnext(name: str, timm_name: str, c3: int, c0: int) -> BackbonePreset:
    return BackbonePreset(name, timm_name, "cnn", {}, "stages.3.downsample", 32, c3, 32, c3, _NOFREQ_CNN,
                          simmim_inject_module="stem", simmim_inject_stride=4, simmim_inject_channels=c0,
                          simmim_inject_mode="add")


def _vit(name: str, timm_name: str, dim: int, loss: LossPreset = _VIT_LOSS, **arch) -> BackbonePreset:
    return BackbonePreset(name, timm_name, "vit", {**_VIT_COMMON, **arch}, "patch_embed", 16, dim, 16, dim, loss,
                          simmim_inject_module="patch_embed", simmim_inject_stride=16, simmim_inject_channels=dim)


PRESETS: dict[str, BackbonePreset] = {p.name: p for p in [
    _resnet("resnet18", 18, _R50_LOSS),
    _resnet("resnet34", 34, _R50_LOSS),
    _resnet("resnet50", 50, _R50_LOSS),
    _resnet("resnet101", 101, _R101_LOSS),
    _resnet("resnet152", 152, _NOFREQ_CNN),
    _resnet("resnet200", 200, _NOFREQ_CNN),
    _convnext("convnext_tiny", "convnext_tiny", 768, 96),
    _convnext("convnext_small", "convnext_small", 768, 96),
    _convnext("convnext_base", "convnext_base", 1024, 128),
    # official "ViT-S" = mmcls 'small': 8 layers x 768 dims x 8 heads, MLP 2304 (48.8 M params) - NOT DeiT-S
    _vit("vit_small", "beit_base_patch16_224", 768, depth=8, num_heads=8, mlp_ratio=3.0),
    # DeiT-S geometry (12 x 384 x 6 heads), named distinctly so nobody confuses it with the official ViT-S
    _vit("vit_deit_small", "beit_base_patch16_224", 384, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    _vit("vit_base", "beit_base_patch16_224", 768),
    _vit("vit_large", "beit_large_patch16_224", 1024),
    # tiny CPU preset (tests, toy world; the CNN counterpart is resnet18 at a small input size)
    _vit("vit_tiny", "beit_base_patch16_224", 96, embed_dim=96, depth=4, num_heads=3, mlp_ratio=2.0),
]}


def get_preset(name: str) -> BackbonePreset:
    if name not in PRESETS:
        import difflib
        near = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise KeyError(f"unknown backbone preset '{name}'{hint}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
