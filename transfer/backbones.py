"""The one downstream backbone contract: an exported backbone as multi-scale features.

FeatureBackbone(timm_name, timm_kwargs, kind, out_indices, ...) builds the timm model an export's sidecar names
(`pretrain.export_format`: timm_name, timm_kwargs, kind, input_size) and returns the feature maps of the chosen
stages / blocks, through timm's own `forward_intermediates`:
  forward(x (B, 3, H, W)) -> tuple of (B, C_i, H / s_i, W / s_i), one per out_index
  feature_info            -> [{'num_chs': C_i, 'reduction': s_i, 'module': name}] of those outputs
CNNs (ResNet, ConvNeXt, any timm CNN): indices into the timm model's feature_info (ResNet: 0 = stem act1 s2,
1..4 = layer1..4 s4..s32; ConvNeXt: 0..3 = stages s4..s32). Plain ViTs (timm Beit / VisionTransformer): block
indices, every map at the patch stride (cls token dropped). Negative indices count from the end; None = all.
The timm model sits at `body`: its tensors are the export's keys under `body.` (one mapping for every family).

out_norms=True: a new LayerNorm over the channels of every output (the ConvNeXt detection / segmentation backbones'
per-stage norm_i; new parameters outside `body`, not pre-trained).
frozen=True: eval mode always, no gradients (frozen-feature protocols). cache=True (with frozen): outputs are
remembered per input sample (keyed by the sample's bytes), so a protocol that feeds the same images every epoch
(no augmentation) pays one forward pass per image.
Parameters the chosen outputs never use (a ViT's final norm unless final_norm, stages after the last out_index, a
classifier head) keep their exported values but get requires_grad=False (`unused`), so DDP sees no unused
parameter and the gate still accounts for every exported tensor.
A ViT is built for one square `img_size` (its position tables): smaller inputs (any H, W <= img_size, as detection
batches are) are zero-padded bottom/right to it and every output is cropped back to ceil(H/16) x ceil(W/16).
"""
from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from transfer.timm_body import build_timm_body  # noqa: F401  (re-exported: the one way to build a sidecar's model)

if TYPE_CHECKING:
    from transfer.weights import LoadReport

BODY = "body."


class FeatureBackbone(nn.Module):
    def __init__(self, timm_name: str, timm_kwargs: dict | None = None, kind: str = "cnn",
                 out_indices: Sequence[int] | None = (-4, -3, -2, -1), img_size: int | None = None,
                 drop_path: float | None = None, final_norm: bool = False, frozen: bool = False,
                 cache: bool = False, out_norms: bool = False):
        super().__init__()
        if kind not in ("cnn", "vit"):
            raise ValueError(f"FeatureBackbone: kind must be 'cnn' or 'vit', got {kind!r}")
        if cache and not frozen:
            raise ValueError("FeatureBackbone: cache=True needs frozen=True (a trained backbone's features change)")
        self.kind, self.timm_name = kind, timm_name
        self.body = build_timm_body(timm_name, timm_kwargs or {}, kind, img_size, drop_path)
        info = list(self.body.feature_info)
        n = len(info)
        idx = list(range(n)) if out_indices is None else [i if i >= 0 else n + i for i in out_indices]
        if not idx or any(not 0 <= i < n for i in idx):
            raise ValueError(f"FeatureBackbone: out_indices {tuple(out_indices)} outside 0..{n - 1} for "
                             f"{timm_name} ({[d['module'] for d in info]})")
        self.out_indices = tuple(idx)
        self.feature_info = [{k: info[i][k] for k in ("num_chs", "reduction", "module")} for i in idx]
        self.final_norm, self.frozen, self.cache = bool(final_norm), bool(frozen), bool(cache)
        self.img_size = int(img_size) if (kind == "vit" and img_size) else None
        self._memo: dict[bytes, tuple[torch.Tensor, ...]] = {}
        # a new LayerNorm on every output (the ConvNeXt detection/segmentation backbone's norm_i; not pre-trained)
        self.out_norms = nn.ModuleList(_layer_norm_2d(c) for c in self.channels) if out_norms else None
        self.unused = self._unused_parameters()
        for name, p in self.body.named_parameters():
            if frozen or name in self.unused:
                p.requires_grad_(False)

    @property
    def channels(self) -> list[int]:
        return [d["num_chs"] for d in self.feature_info]

    @property
    def strides(self) -> list[int]:
        return [d["reduction"] for d in self.feature_info]

    def train(self, mode: bool = True) -> "FeatureBackbone":
        super().train(mode)
        if self.frozen:
            self.body.eval()      # BN statistics and drop paths of a frozen backbone never change
        return self

    def _unused_parameters(self) -> set[str]:
        """Body parameter names the chosen outputs do not depend on (timm's own pruning rule, on a copy)."""
        import copy
        with torch.device("meta"):
            probe = copy.deepcopy(self.body).to("meta")
        before = {n for n, _ in probe.named_parameters()}
        probe.prune_intermediate_layers(list(self.out_indices), prune_norm=not self.final_norm, prune_head=True)
        return before - {n for n, _ in probe.named_parameters()}

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        H, W = x.shape[-2:]
        S = self.img_size
        if S is not None and (H, W) != (S, S):
            if H > S or W > S:
                raise ValueError(f"FeatureBackbone: input {H}x{W} is larger than the ViT's img_size {S}; build it "
                                 f"for a larger img_size or resize the inputs to at most {S}")
            x = F.pad(x, (0, S - W, 0, S - H))                           # (B, 3, S, S)
        outs = self.body.forward_intermediates(x, indices=list(self.out_indices), norm=self.final_norm,
                                               intermediates_only=True)
        if S is not None and (H, W) != (S, S):
            outs = [o[..., :math.ceil(H / (S / o.shape[-2])), :math.ceil(W / (S / o.shape[-1]))] for o in outs]
        if self.out_norms is not None:
            outs = [norm(o) for norm, o in zip(self.out_norms, outs)]
        return outs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.frozen:
            return tuple(self._features(x))
        with torch.no_grad():
            if not self.cache:
                return tuple(self._features(x))
            keys = [hashlib.blake2b(s.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()
                    for s in x]
            todo = [i for i, k in enumerate(keys) if k not in self._memo]
            if todo:
                outs = self._features(x[todo])
                for j, i in enumerate(todo):
                    self._memo[keys[i]] = tuple(o[j].clone() for o in outs)
            return tuple(torch.stack([self._memo[k][lvl] for k in keys]) for lvl in range(len(self.out_indices)))

    def extra_repr(self) -> str:
        return (f"{self.timm_name}, kind={self.kind}, out_indices={self.out_indices}, strides={self.strides}, "
                f"channels={self.channels}, frozen={self.frozen}, cache={self.cache}")


def _layer_norm_2d(channels: int) -> nn.Module:
    from timm.layers import LayerNorm2d
    return LayerNorm2d(channels, eps=1e-6)


def from_sidecar(meta: dict, **kw) -> FeatureBackbone:
    """FeatureBackbone of an export's sidecar (timm_name, timm_kwargs, kind; a ViT at the sidecar's input_size
    unless img_size is given)."""
    missing = [k for k in ("timm_name", "kind") if not meta.get(k)]
    if missing:
        raise ValueError(f"backbone metadata lacks {missing} (an export's .json sidecar names the architecture)")
    if meta["kind"] == "vit":
        kw.setdefault("img_size", meta.get("input_size"))
    return FeatureBackbone(meta["timm_name"], meta.get("timm_kwargs") or {}, meta["kind"], **kw)


def adapt_state_dict(body: nn.Module, sd: dict, kind: str) -> tuple[dict, list[str]]:
    """An export's timm-named tensors for `body` (the timm model they go into): ViT position tables resized to
    its grid (timm's beit/vit checkpoint_filter_fn: abs pos embed + relative position tables), recomputed index
    buffers dropped. The one place position tables are resized. Returns (state dict, notes)."""
    notes: list[str] = []
    if kind != "vit":
        return dict(sd), notes
    import importlib
    mod = importlib.import_module(type(body).__module__)
    before = {k: tuple(v.shape) for k, v in sd.items()}
    sd = mod.checkpoint_filter_fn(dict(sd), body)
    notes += [f"resized {k} {before[k]} -> {tuple(v.shape)}" for k, v in sd.items()
              if k in before and before[k] != tuple(v.shape)]
    notes += [f"dropped {k} (recomputed buffer)" for k in before if k not in sd]
    return sd, notes


def load_exported(model: nn.Module, loaded: tuple, report_path=None, source: str = "", prefix: str = "",
                  allow_missing=()) -> "LoadReport":
    """Load an export (`loaded` = transfer.weights.read_backbone_weights(path)) through the gate into the
    FeatureBackbone at `prefix` of `model` ('' = model is the FeatureBackbone; 'backbone.' in a detector or a
    segmentor): every tensor of its timm body matched (BN step counters may be absent), nothing of the export
    left over. Returns the LoadReport (also written to report_path)."""
    from transfer.weights import COUNTER_KEYS, load_with_report

    backbone = model.get_submodule(prefix.rstrip(".")) if prefix else model
    if not isinstance(backbone, FeatureBackbone):
        raise TypeError(f"{type(model).__name__}.{prefix or '<self>'} is a {type(backbone).__name__}, not a "
                        f"FeatureBackbone")
    sd, _meta, notes = loaded
    sd, more = adapt_state_dict(backbone.body, sd, backbone.kind)
    mapped = {f"{prefix}{BODY}{k}": v for k, v in sd.items()}
    return load_with_report(model, mapped, allow_missing=(*COUNTER_KEYS, *allow_missing), report_path=report_path,
                            prefixes=[f"{prefix}{BODY}"], source=source, notes=[*notes, *more])
