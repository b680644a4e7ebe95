"""A²MIM (and the SimMIM baseline as a switch): backbone + mask token at one named point + decoder + loss.

img (B,3,H,W) normalised, mask (B,h,w) uint8 at `mask_stride` (1 = masked)
  -> m_pix (B,1,H,W) -> x_in = masked pixels filled (A²MIM: per-image channel mean; SimMIM: untouched)
  -> backbone(x_in) with the token injected at the preset's module -> last map (B,C,H/s,W/s)
  -> decoder -> x_rec (B,3,H,W) -> loss(x_rec, img, m_pix)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from pretrain.config import ModelConfig, PretrainConfig, resolve_preset
from pretrain.losses import A2MIMLoss
from pretrain.masking import BlockMaskGenerator, fill_masked, upsample_mask
from pretrain.models.backbone import build_backbone
from pretrain.models.decoder import PixelShuffleDecoder, decoder_input
from pretrain.models.injection import MaskTokenInjector
from pretrain.models.presets import BackbonePreset, LossPreset

METHODS = ("a2mim", "simmim")
GAMMA_INIT = 1e-6                       # mask_gamma init of A²MIM CNNs (spec §1; openmixup mask_init)
# the 'all 1-D' convention (optim.paramwise unset): ViT parameters without weight decay besides 1-D ones
_VIT_NO_WD = ("pos_embed", "cls_token", "relative_position_bias_table")
_TOKEN_PARAMS = ("injector.mask_token", "injector.mask_gamma")


class A2MIM(nn.Module):
    def __init__(self, preset: BackbonePreset, method: str = "a2mim", input_size: int = 224,
                 mask_patch: int = 32, mask_ratio: float = 0.6, mask_init: float | None = None,
                 **backbone_overrides):
        """mask_init: the initial mask_gamma of A²MIM (openmixup's mask_init): None = the method's default (CNNs
        1e-6, ViTs none), 0 = no gamma (the official no-gamma ablations), > 0 = a gamma with that init."""
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if preset.kind not in ("cnn", "vit"):
            raise ValueError(f"preset '{preset.name}': kind must be 'cnn' or 'vit', got {preset.kind!r}")
        self.preset, self.method = preset, method
        self.input_size, self.mask_patch, self.mask_ratio = input_size, mask_patch, mask_ratio
        self.backbone = build_backbone(preset, img_size=input_size, **backbone_overrides)
        if method == "a2mim":
            module, stride, channels = preset.inject_module, preset.inject_stride, preset.inject_channels
            gamma = (GAMMA_INIT if preset.kind == "cnn" else None) if mask_init is None else (mask_init or None)
            self.injector = MaskTokenInjector(channels, mode="add", gamma_init=gamma)
            self.fill = "mean"
            loss = preset.loss
        else:   # SimMIM: clean image, token at the first stage (replaced, or added for ConvNeXt), plain L1, no FFT
            module, stride = preset.simmim_inject_module, preset.simmim_inject_stride
            self.injector = MaskTokenInjector(preset.simmim_inject_channels, mode=preset.simmim_inject_mode)
            self.fill = "none"
            loss = LossPreset(spatial="l1", freq_weight=0.0)
        if not module:
            raise ValueError(f"preset '{preset.name}' names no injection module for method '{method}'")
        self.injector.attach(self.backbone, module)
        self.mask_stride = stride
        self.decoder = PixelShuffleDecoder(preset.out_channels, preset.out_stride)
        self.loss = A2MIMLoss(loss)
        self.mask_generator()      # validates input_size / mask_patch / stride divisibility now, not in a worker

    def mask_generator(self) -> BlockMaskGenerator:
        """The mask generator matching this model (for the data pipeline)."""
        return BlockMaskGenerator(self.input_size, self.mask_patch, self.mask_stride, self.mask_ratio)

    def _check_mask(self, img: torch.Tensor, mask: torch.Tensor) -> None:
        if img.ndim != 4 or mask.ndim != 3:
            raise ValueError(f"A2MIM expects img (B,3,H,W) and mask (B,h,w); got {tuple(img.shape)} and "
                             f"{tuple(mask.shape)}")
        B, _, H, W = img.shape
        want = (B, H // self.mask_stride, W // self.mask_stride)
        if tuple(mask.shape) != want:
            raise ValueError(f"mask shape {tuple(mask.shape)} != {want}: the mask must be generated at the "
                             f"injection stride {self.mask_stride} ({self.method}, preset '{self.preset.name}')")

    def _encode_decode(self, img: torch.Tensor, mask: torch.Tensor):
        self._check_mask(img, mask)
        mask_pix = upsample_mask(mask, img.shape[-2:], dtype=img.dtype)    # (B, 1, H, W), one copy per step
        x_in = fill_masked(img, mask_pix, self.fill)
        self.injector.check_attached(self.backbone)
        with self.injector.masked(mask):
            feat = decoder_input(self.backbone, x_in)                     # (B, C_last, H/s, W/s)
        return x_in, self.decoder(feat), mask_pix

    def forward(self, img: torch.Tensor, mask: torch.Tensor):
        """-> (loss, {'loss_spatial', 'loss_freq'} detached)."""
        _, x_rec, mask_pix = self._encode_decode(img, mask)
        return self.loss(x_rec, img, mask_pix)

    @torch.no_grad()
    def reconstruct(self, img: torch.Tensor, mask: torch.Tensor):
        """-> (x_in, x_rec), both (B,3,H,W) normalised (for reconstruction grids)."""
        x_in, x_rec, _ = self._encode_decode(img, mask)
        return x_in, x_rec.float()

    def param_groups(self, weight_decay: float, token_lr_mult: float | None = None,
                     paramwise: dict | None = None) -> list[dict]:
        """Optimizer groups, each with 'name', 'weight_decay' and 'lr_mult' (the engine sets lr = peak x lr_mult per
        group, so every group's schedule ends at the same absolute min_lr, as openmixup's).

        paramwise (the official recipes): openmixup's regex rules {regex: {weight_decay: v, lr_mult: v}}, every rule
        whose regex re.search-es a parameter name applied in order (a later rule overrides an earlier one's key);
        a parameter no rule matches keeps weight_decay and lr x1.
        paramwise None (the 'all 1-D' convention): no weight decay on 1-D parameters (norm weights, biases,
        layer-scale gammas), on the mask token/gamma and, for ViTs, on pos_embed / cls_token / relative position
        tables; token (and gamma) lr x0.1 for CNNs (x1 for ViTs) unless `token_lr_mult` is given.
        """
        if paramwise is not None:
            return self._paramwise_groups(weight_decay, paramwise)
        if token_lr_mult is None:
            token_lr_mult = 0.1 if self.preset.kind == "cnn" else 1.0
        groups = {"decay": [], "no_decay": [], "mask_token": []}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            leaf = name.rsplit(".", 1)[-1]
            if name in _TOKEN_PARAMS:
                groups["mask_token"].append(p)
            elif p.ndim <= 1 or name.endswith(".bias") or (self.preset.kind == "vit" and leaf in _VIT_NO_WD):
                groups["no_decay"].append(p)
            else:
                groups["decay"].append(p)
        settings = {"decay": (weight_decay, 1.0), "no_decay": (0.0, 1.0), "mask_token": (0.0, token_lr_mult)}
        return [{"name": n, "params": ps, "weight_decay": settings[n][0], "lr_mult": settings[n][1]}
                for n, ps in groups.items() if ps]

    def _paramwise_groups(self, weight_decay: float, rules: dict) -> list[dict]:
        import re
        keyed: dict[tuple[float, float], list] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            opt = {"weight_decay": weight_decay, "lr_mult": 1.0}
            for regex, options in rules.items():
                if re.search(regex, name):
                    opt.update(options)
            keyed.setdefault((float(opt["weight_decay"]), float(opt["lr_mult"])), []).append((name, p))
        return [{"name": f"wd{wd:g}_lr_x{mult:g}", "params": [p for _, p in ps], "param_names": [n for n, _ in ps],
                 "weight_decay": wd, "lr_mult": mult} for (wd, mult), ps in sorted(keyed.items(), reverse=True)]

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """The backbone's weights only, timm key names (no token, gamma or decoder)."""
        return dict(self.backbone.state_dict())


def build_model(cfg: PretrainConfig | ModelConfig) -> A2MIM:
    """The A2MIM (or SimMIM-switch) model of a config: preset + hand overrides + drop path + mask_init + ViT init."""
    m = cfg.model if isinstance(cfg, PretrainConfig) else cfg
    kw = {} if m.drop_path is None else {"drop_path_rate": m.drop_path}
    return A2MIM(resolve_preset(m), method=m.method, input_size=m.input_size, mask_patch=m.mask_patch,
                 mask_ratio=m.mask_ratio, mask_init=m.mask_init, vit_init=m.vit_init, **kw)
