"""A²MIM losses (spec §2), always evaluated in float32 (autocast off), with no host synchronisation.

Shapes: x_rec, x (B, 3, H, W) ImageNet-normalised; mask_pix (B, 1, H, W), 1 = masked.
Because fft2 is linear, spectra differences are taken as the spectrum of a difference:
mean_B(fft2(x_t)) - mean_B(fft2(x)) == fft2(mean_B(x_t - x)), so the focal form needs ONE (1, 3, H, W)
FFT per step and the non-focal form one (B, 3, H, W) FFT (the target spectrum is never computed separately).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from pretrain.models.presets import LossPreset

_EPS = 1e-5


def _fp32_region(t: torch.Tensor):
    """Disable autocast for the tensor's device type (losses stay in float32 under bf16/fp16 autocast)."""
    dev = t.device.type
    if dev in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type=dev, enabled=False)
    return contextlib.nullcontext()


def _f32(t: torch.Tensor) -> torch.Tensor:
    # complex tensors are kept (complex64); .float() would drop their imaginary part
    if t.is_complex():
        return t.to(torch.complex64) if t.dtype != torch.complex128 else t
    return t.float()


def _focal(d: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """d * (2*sigmoid(alpha*d) - 1)**gamma for d >= 0 (elementwise); 2*sigmoid(z) - 1 == tanh(z/2), one kernel."""
    w = torch.tanh(d * (alpha / 2))
    return d * w if gamma == 1.0 else d * w.pow(gamma)


def focal_l1(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.2, gamma: float = 1.0) -> torch.Tensor:
    """Elementwise focal-L1: d*(2*sigmoid(alpha*d)-1)**gamma, d = |pred - target| (complex: the modulus)."""
    with _fp32_region(pred):
        return _focal((_f32(pred) - _f32(target)).abs(), alpha, gamma)


# The two terms are computed from ONE fp32 difference d = x_rec - x (B, 3, H, W) that they share; every
# full-size elementwise pass costs as much as the decoder on a GPU, so the passes are kept few.
def _spatial(d: torch.Tensor, m: torch.Tensor, kind: str) -> torch.Tensor:
    if kind not in ("focal_l1", "l1"):
        raise ValueError(f"spatial loss kind must be 'focal_l1' or 'l1', got {kind!r}")
    a = d.abs()
    l = a if kind == "l1" else _focal(a, 0.2, 1.0)
    return (l * m).sum() / (m.sum() + _EPS) / d.shape[1]


def _frequency(d: torch.Tensor, m: torch.Tensor, unmask_weight: float, focal: bool, kind: str = "focal_l1"
               ) -> torch.Tensor:
    # x_t - x = m_f*(x_rec - x) + (1-m_f)*(0.5*x_rec.detach() + 0.5*x - x) = m_f*d + (1-m_f)*0.5*d.detach()
    m_f = m if unmask_weight == 0 else m + (1 - m) * unmask_weight     # (B, 1, H, W)
    e = torch.addcmul(d * m_f, d.detach(), (1 - m_f) * 0.5)           # x_t - x
    if focal:
        diff = torch.fft.fft2(e.mean(0, keepdim=True), norm="ortho")   # (1, 3, H, W) complex
        d2 = diff.real.square() + diff.imag.square()                   # D^2
        with torch.no_grad():                                          # W is detached (no gradient through it)
            w = torch.log1p(d2.sqrt())
            w = (w / w.max()).nan_to_num_(0.0).clamp_(0.0, 1.0)
        return (w * d2).mean()
    a = torch.fft.fft2(e, norm="ortho").abs()                         # (B, 3, H, W) spectra, complex modulus
    return (a if kind == "l1" else _focal(a, 0.2, 1.0)).mean()        # the spatial loss's own mode (official head)


def spatial_loss(x_rec: torch.Tensor, x: torch.Tensor, mask_pix: torch.Tensor, kind: str = "focal_l1") -> torch.Tensor:
    """sum(l * m) / (sum(m) + 1e-5) / 3 — mean of the elementwise loss over masked pixels and the 3 channels."""
    with _fp32_region(x_rec):
        return _spatial(x_rec.float() - x.float(), mask_pix.float(), kind)


def frequency_loss(x_rec: torch.Tensor, x: torch.Tensor, mask_pix: torch.Tensor, unmask_weight: float = 0.0,
                   focal: bool = True, kind: str = "focal_l1") -> torch.Tensor:
    """Frequency term of spec §2.

    m_f = m + (1-m)*w_u ;  x_t = x_rec*m_f + (0.5*x_rec.detach() + 0.5*x)*(1-m_f)
    focal=True : D = |mean_B fft2(x_t) - mean_B fft2(x)| (1,3,H,W); W = log(D+1)/max, NaN->0, clamp [0,1],
                 detached; L = mean(W * D^2).
    focal=False: L = mean(l(fft2(x_t), fft2(x))) per sample (no batch averaging), l = the spatial loss's
                 elementwise mode `kind` (openmixup A2MIMHead: fft_loss = the spatial loss config): focal-L1 for
                 CNNs, plain L1 for ViTs.
    All FFTs are 2-D over (H, W), norm='ortho'; by linearity only the difference x_t - x is transformed.
    """
    with _fp32_region(x_rec):
        return _frequency(x_rec.float() - x.float(), mask_pix.float(), unmask_weight, focal, kind)


class A2MIMLoss(nn.Module):
    """L = L_spatial + lambda_f * L_freq for one LossPreset; returns (total, detached parts for logging)."""

    def __init__(self, preset: LossPreset):
        super().__init__()
        self.preset = preset

    def forward(self, x_rec: torch.Tensor, x: torch.Tensor, mask_pix: torch.Tensor):
        p = self.preset
        if x_rec.shape != x.shape:
            raise ValueError(f"reconstruction shape {tuple(x_rec.shape)} != target shape {tuple(x.shape)}")
        with _fp32_region(x_rec):
            d, m = x_rec.float() - x.float(), mask_pix.float()          # shared by both terms
            l_spa = _spatial(d, m, p.spatial)
            if p.freq_weight > 0:
                l_freq = _frequency(d, m, p.unmask_weight, p.freq_focal, p.spatial)
                total = l_spa + p.freq_weight * l_freq
            else:
                l_freq = l_spa.new_zeros(())
                total = l_spa
        return total, {"loss_spatial": l_spa.detach(), "loss_freq": l_freq.detach()}

    def extra_repr(self) -> str:
        return repr(self.preset)
