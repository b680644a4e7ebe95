"""Block masks of A²MIM/SimMIM (spec §1) and the pixel-level helpers built on them.

Conventions: 1 = masked. A mask "grid" is (h, w) at the injection stride (`model_patch`); a pixel mask is
(B, 1, H, W). Masks are made in DataLoader workers from an explicit numpy Generator (no global RNG).
"""
from __future__ import annotations

import math

import numpy as np
import torch


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return int(v[0]), int(v[1])
    raise TypeError(f"{what} must be an int or an (h, w) pair of ints, got {v!r}")


class BlockMaskGenerator:
    """Exactly ceil(ratio * cells) of the (H/mask_patch) x (W/mask_patch) cells masked, uniformly at random.

    `__call__(rng)` -> uint8 tensor (H/model_patch, W/model_patch); each cell is repeated
    mask_patch/model_patch times along both axes (nearest upsampling). 224/32/16/0.6 -> 14x14, 30 of 49 cells.
    """

    def __init__(self, input_size=224, mask_patch: int = 32, model_patch: int = 16, ratio: float = 0.6):
        self.input_size = _pair(input_size, "input_size")
        for name, v in (("mask_patch", mask_patch), ("model_patch", model_patch)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if min(self.input_size) <= 0:
            raise ValueError(f"input_size must be positive, got {input_size!r}")
        if any(s % mask_patch for s in self.input_size):
            raise ValueError(f"input_size {self.input_size} is not divisible by mask_patch {mask_patch}")
        if mask_patch % model_patch:
            raise ValueError(f"mask_patch {mask_patch} is not divisible by model_patch {model_patch} "
                             f"(the injection stride)")
        if not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"mask ratio must lie in [0, 1], got {ratio!r}")
        self.mask_patch, self.model_patch, self.ratio = mask_patch, model_patch, float(ratio)
        self.grid = (self.input_size[0] // mask_patch, self.input_size[1] // mask_patch)
        self.cells = self.grid[0] * self.grid[1]
        # the official rule, float noise included: int(np.ceil(token_count * mask_ratio)) (openmixup
        # BlockwiseMaskGenerator) - 0.3 * 10 = 3.0000000000000004 masks 4 cells there, so it does here
        self.count = math.ceil(self.ratio * self.cells)
        self.scale = mask_patch // model_patch
        self.out_shape = (self.grid[0] * self.scale, self.grid[1] * self.scale)

    def __call__(self, rng: np.random.Generator) -> torch.Tensor:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"BlockMaskGenerator needs a numpy.random.Generator (per-worker seeded), got {type(rng)}")
        cells = np.zeros(self.cells, dtype=np.uint8)
        cells[rng.permutation(self.cells)[: self.count]] = 1
        grid = cells.reshape(self.grid)                                   # (H/mp, W/mp)
        grid = grid.repeat(self.scale, axis=0).repeat(self.scale, axis=1)  # (H/model_patch, W/model_patch)
        return torch.from_numpy(np.ascontiguousarray(grid))

    def __repr__(self) -> str:
        return (f"BlockMaskGenerator(input_size={self.input_size}, mask_patch={self.mask_patch}, "
                f"model_patch={self.model_patch}, ratio={self.ratio}: {self.count}/{self.cells} cells)")


def repeat_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """(B, h, w) -> (B, 1, H, W) by nearest repeat, same dtype (one copy: expand + reshape)."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be (B, h, w), got shape {tuple(mask.shape)}")
    H, W = _pair(tuple(size), "size")
    B, h, w = mask.shape
    if H % h or W % w:
        raise ValueError(f"mask grid {h}x{w} does not divide the target size {H}x{W}")
    sh, sw = H // h, W // w
    return mask[:, None, :, None, :, None].expand(B, 1, h, sh, w, sw).reshape(B, 1, H, W)


def upsample_mask(mask: torch.Tensor, size, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, h, w) mask -> (B, 1, H, W) float mask (nearest upsampling; 1 = masked)."""
    return repeat_mask(mask, size).to(dtype)


def fill_masked(img: torch.Tensor, mask_pix: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Replace masked pixels of img (B, C, H, W) where mask_pix (B, 1, H, W) is nonzero.

    how='mean': that image's own per-channel mean over ALL its pixels (A²MIM); 'zero': 0; 'none': the image as
    it is (SimMIM: openmixup's mask_color='zero' leaves a tensor image untouched, the token does the masking).
    """
    if how == "none":
        return img
    if how == "mean":
        fill = img.mean(dim=(2, 3), keepdim=True)     # (B, C, 1, 1)
    elif how == "zero":
        fill = img.new_zeros(())
    else:
        raise ValueError(f"fill must be 'mean', 'zero' or 'none', got {how!r}")
    return torch.where(mask_pix.bool(), fill, img)
