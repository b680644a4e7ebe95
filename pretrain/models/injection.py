"""The learnable mask token, attached by a forward hook to the OUTPUT of a named module of any timm model.

Feature layouts: NCHW maps (B, C, h, w) with the mask as (B, 1, h, w); NHWC maps (B, h, w, C) (Swin, timm
ViTs with dynamic_img_size) with (B, h, w, 1); token sequences (B, N, C) (a ViT's patch_embed output, before
cls token / pos embed) with the mask flattened row-major to (B, N, 1).
mode='add'     (A²MIM): f = f*(1-m) + gamma*f*m  [if gamma];  f = f + token*m
mode='replace' (SimMIM): f = f*(1-m) + token*m
The mask for one forward is set with `with injector.masked(mask):`; without it the hook returns the features
untouched, so the same backbone also runs plain.
"""
from __future__ import annotations

import contextlib
import difflib

import torch
import torch.nn as nn


class MaskTokenInjector(nn.Module):
    def __init__(self, channels: int, mode: str = "add", gamma_init: float | None = None):
        super().__init__()
        if mode not in ("add", "replace"):
            raise ValueError(f"injection mode must be 'add' (A²MIM) or 'replace' (SimMIM), got {mode!r}")
        if mode == "replace" and gamma_init is not None:
            raise ValueError("mask_gamma only exists in 'add' mode (A²MIM CNNs)")
        self.channels, self.mode = int(channels), mode
        self.mask_token = nn.Parameter(torch.zeros(1, channels, 1, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.mask_gamma = nn.Parameter(torch.full((1, channels, 1, 1), float(gamma_init))) if gamma_init else None
        self.module_name = None
        self._handle = None
        self._mask = None   # (B, h, w) for the current forward, or None

    def attach(self, model: nn.Module, module_name: str) -> "MaskTokenInjector":
        """Register the hook on `model.<module_name>` (the model is NOT made a submodule of the injector)."""
        modules = dict(model.named_modules())
        if module_name not in modules or not module_name:
            near = difflib.get_close_matches(module_name, [n for n in modules if n], n=3)
            raise KeyError(f"injection module '{module_name}' not found in {type(model).__name__}"
                           + (f"; close names: {near}" if near else ""))
        self.remove()
        self._handle = modules[module_name].register_forward_hook(self._hook)
        self.module_name = module_name
        return self

    def check_attached(self, model: nn.Module) -> None:
        """Raise if `model.<module_name>` no longer carries the hook (e.g. replaced by convert_sync_batchnorm)."""
        mod = model.get_submodule(self.module_name) if self.module_name is not None else None
        if mod is None or self._handle is None or self._handle.id not in mod._forward_hooks:
            raise RuntimeError(f"mask token hook is not attached to '{self.module_name}' of {type(model).__name__} "
                               f"(module replaced after attach? call injector.attach(backbone, name) again)")

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @contextlib.contextmanager
    def masked(self, mask: torch.Tensor):
        """Inject with `mask` (B, h, w), 1 = masked, for forwards inside the block."""
        self._mask = mask
        try:
            yield self
        finally:
            self._mask = None

    def _hook(self, module, inputs, output):
        if self._mask is None:
            return None      # plain forward: output unchanged
        return self.inject(output, self._mask)

    def inject(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """f (B, C, h, w), (B, h, w, C) or (B, N=h*w, C); mask (B, h, w) -> f with the token at masked positions."""
        where = f"injection point '{self.module_name}'"
        if not torch.is_tensor(f) or f.ndim not in (3, 4):
            raise TypeError(f"{where}: expected a (B,C,h,w) map or (B,N,C) tokens, got "
                            f"{type(f).__name__}{tuple(f.shape) if torch.is_tensor(f) else ''}")
        if mask.ndim != 3:
            raise ValueError(f"{where}: mask must be (B, h, w), got {tuple(mask.shape)}")
        B, h, w = mask.shape
        if f.ndim == 4 and f.shape[1] != self.channels and f.shape[-1] == self.channels:
            f_shape = (B, h, w, self.channels)                            # NHWC (Swin, dynamic-size ViTs)
            m = mask[..., None].to(f.dtype)                               # (B, h, w, 1)
            view = (1, 1, 1, -1)
        elif f.ndim == 4:
            f_shape = (B, self.channels, h, w)                            # NCHW
            m = mask[:, None].to(f.dtype)                                 # (B, 1, h, w)
            view = (1, -1, 1, 1)
        else:
            f_shape = (B, h * w, self.channels)                           # (B, N, C) tokens
            m = mask.reshape(B, h * w, 1).to(f.dtype)                     # (B, N, 1)
            view = (1, 1, -1)
        if tuple(f.shape) != f_shape:
            raise ValueError(f"{where}: mask {tuple(mask.shape)} and {self.channels}-channel token do not match "
                             f"the feature {tuple(f.shape)} (expected {f_shape}; the mask grid must equal the "
                             f"feature's spatial size: generate it at this stride)")
        tok = self.mask_token.to(f.dtype).reshape(view)
        gamma = None if self.mask_gamma is None else self.mask_gamma.to(f.dtype).reshape(view)
        if self.mode == "replace":
            return torch.lerp(f, tok, m)                                  # f*(1-m) + tok*m
        if gamma is None:
            return torch.addcmul(f, m, tok)                               # f + tok*m
        return torch.lerp(f, torch.addcmul(tok, f, gamma), m)             # f*(1-m) + (gamma*f + tok)*m

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, mode={self.mode}, gamma={self.mask_gamma is not None}, "
                f"at={self.module_name!r}")
