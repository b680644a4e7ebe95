"""Fourier amplitude of images: what A²MIM's frequency loss compares (spec §2: fft2(x, norm='ortho') of the
normalised prediction and target, per channel).

amplitude(x)       (B,C,H,W) -> (B,H,W): |fft2(x, norm='ortho')| averaged over channels (unshifted, DC at [0, 0]).
radial_bands(...)  ring index of every coefficient: radial frequency rho = sqrt(fy^2 + fx^2) in cycles/pixel
                   (fy, fx from torch.fft.fftfreq); rings of equal width 0.5 / bands over [0, 0.5) (Nyquist), the
                   last ring also takes the corners (rho >= 0.5). With bands = min(H, W) // 2 on a square image,
                   ring k holds the frequencies of k (to k+1) cycles per image.
radial_profile     mean of a (H,W) map over each ring -> (bands,).
centred_log(a)     log(1 + a) with DC moved to the centre (fftshift), for display.
"""
from __future__ import annotations

import torch


def amplitude(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(f"amplitude expects (B,C,H,W) images, got shape {tuple(x.shape)}")
    return torch.fft.fft2(x.double(), norm="ortho").abs().mean(dim=1)


def radial_bands(height: int, width: int, bands: int) -> torch.Tensor:
    """(H, W) long ring index in [0, bands) of every (unshifted) frequency coefficient."""
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(width, dtype=torch.float64)[None, :]
    rho = torch.sqrt(fy ** 2 + fx ** 2)
    return torch.floor(rho / (0.5 / bands) + 1e-9).long().clamp(max=bands - 1)


def band_edges(bands: int) -> list[tuple[float, float]]:
    """(lo, hi) cycles/pixel of each ring; the last one is open-ended (corners beyond Nyquist)."""
    w = 0.5 / bands
    return [(k * w, (k + 1) * w if k < bands - 1 else float("inf")) for k in range(bands)]


def radial_profile(amp: torch.Tensor, bands: int) -> tuple[torch.Tensor, torch.Tensor]:
    """amp (H, W) -> (mean per ring (bands,), coefficient count per ring (bands,)); empty rings give NaN."""
    idx = radial_bands(amp.shape[-2], amp.shape[-1], bands).reshape(-1)
    counts = torch.bincount(idx, minlength=bands)
    sums = torch.bincount(idx, weights=amp.reshape(-1).double(), minlength=bands)
    mean = sums / counts.clamp_min(1).double()
    mean[counts == 0] = float("nan")
    return mean, counts


def centred_log(amp: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.log1p(amp), dim=(-2, -1))
