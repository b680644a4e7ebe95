"""The A²MIM/SimMIM decoder (1x1 conv + PixelShuffle) and the map it reads from a timm backbone."""
from __future__ import annotations

import torch
import torch.nn as nn


class PixelShuffleDecoder(nn.Module):
    """(B, C, h, w) -> Conv2d(C, stride^2*3, 1) -> PixelShuffle(stride) -> (B, 3, h*stride, w*stride).

    Kept as a real 1x1 conv: as a GEMM (F.linear on the channels-last view) it was ~10% faster in fp32 on
    CPU but 6x slower under CPU bf16 autocast (aten::mm has no fast bf16 path without AVX512-BF16/AMX).
    """

    def __init__(self, in_channels: int, stride: int, out_channels: int = 3):
        super().__init__()
        self.in_channels, self.stride, self.out_channels = in_channels, stride, out_channels
        self.conv = nn.Conv2d(in_channels, stride ** 2 * out_channels, kernel_size=1)   # weight (3s^2, C, 1, 1)
        self.shuffle = nn.PixelShuffle(stride)
        nn.init.trunc_normal_(self.conv.weight, std=0.02)
        nn.init.zeros_(self.conv.bias)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        if feat.ndim != 4 or feat.shape[1] != self.in_channels:
            raise ValueError(f"decoder expects (B, {self.in_channels}, h, w), got {tuple(feat.shape)}")
        return self.shuffle(self.conv(feat))


def _is_identity(m) -> bool:
    return m is None or isinstance(m, nn.Identity)


def decoder_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last feature map of a timm model as (B, C, h, w), with the model's final norm applied.

    CNN (ResNet): forward_features. ConvNeXt: forward_features, then the head's LayerNorm2d (`head.norm`).
    ViT (timm Beit/VisionTransformer, tokens (B, P+N, C)): forward_features (final `norm` applied when
    global_pool='token'; otherwise `fc_norm`), prefix (cls) tokens dropped, reshaped to (B, C, H/p, W/p).
    """
    out = model.forward_features(x)
    if out.ndim == 4:
        head_norm = getattr(getattr(model, "head", None), "norm", None)
        return out if _is_identity(head_norm) else head_norm(out)
    if out.ndim != 3:
        raise ValueError(f"{type(model).__name__}.forward_features returned {tuple(out.shape)}; expected a "
                         f"(B,C,h,w) map or (B,N,C) tokens")
    if _is_identity(getattr(model, "norm", None)) and not _is_identity(getattr(model, "fc_norm", None)):
        out = model.fc_norm(out)
    ph, pw = model.patch_embed.patch_size
    h, w = x.shape[-2] // ph, x.shape[-1] // pw
    prefix = out.shape[1] - h * w
    if prefix < 0 or prefix != getattr(model, "num_prefix_tokens", prefix):
        raise ValueError(f"{type(model).__name__}: {out.shape[1]} tokens for a {h}x{w} patch grid "
                         f"(num_prefix_tokens={getattr(model, 'num_prefix_tokens', '?')})")
    tokens = out[:, prefix:]                                   # (B, N, C)
    return tokens.transpose(1, 2).unflatten(2, (h, w))         # (B, C, h, w) view, channels-last in memory
