"""Multi-order interactions between image patches (Deng et al., ICLR 2022, "Discovering and Explaining the
Representation Bottleneck of DNNs"), as the A²MIM paper uses them to compare pre-training methods.

Players: the image is cut into a grid of n = gh*gw patches (pixel (r, c) belongs to patch
(r*gh // H, c*gw // W), i.e. nearest resizing of the grid; equal patches when the grid divides the image).
For a set T of patches, f(T) = the model score on the image with every patch outside T replaced by a baseline:
  baseline 'mean' (default): the image's own per-channel mean colour (mean RGB, over all its pixels, in the
                normalised space the model sees; the fill A²MIM itself uses);
  baseline 'zero': 0 after normalisation = the dataset's (ImageNet) mean colour, as Deng et al.'s public code
                does (it multiplies the normalised image by the 0/1 mask).
The score used by the CLI is Deng et al.'s: v = log p_y/(1 - p_y) of the ground-truth class y.

For a pair (i, j) and a context S ⊆ N \\ {i, j} with |S| = m:
  Δf(i, j, S) = f(S ∪ {i, j}) - f(S ∪ {i}) - f(S ∪ {j}) + f(S)
  I^(m)(i, j | x) = E_{S, |S|=m} [Δf(i, j, S)]           (Monte-Carlo over `contexts` random S; signed mean)
  strength(m)     = E_x E_{(i,j)} |I^(m)(i, j | x)|      (over images and sampled pairs)
  J^(m)           = strength(m) / mean_{m'} strength(m')  (norm='mean': Deng et al.'s Eq. and their code,
                                                           `Jm = Im / Im.mean()`; the curve averages to 1)
                  = strength(m) / sum_{m'} strength(m')   (norm='sum': the curve sums to 1; same shape)
Orders are given as ratios r in [0, 1]: m = floor(r * (n - 2)) (r = 1: S = every other patch).
Pairs: `pair_radius` R >= 1 draws unordered pairs of distinct patches at Chebyshev distance <= R (R = 1: the 8
neighbours; Deng et al.'s code draws j near i), R = 0 any two patches; drawn without repetition per image.

Sampling is seeded per image: pairs from default_rng([seed, image, 0]); the contexts of order m from
default_rng([seed, image, 1, m]), so an order's samples do not depend on which other orders are asked for.
Batching: the 4 masked variants of every (order, pair, context) of an image are rows of one list, evaluated
`batch` rows per forward call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (b,C,H,W), (b,) -> (b,)
BASELINES = ("mean", "zero")
NORMS = ("mean", "sum")


def _grid(grid) -> tuple[int, int]:
    gh, gw = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if gh < 1 or gw < 1 or gh * gw < 2:
        raise ValueError(f"grid must have at least 2 patches, got {grid!r}")
    return int(gh), int(gw)


def context_size(ratio: float, n: int) -> int:
    """m = floor(ratio * (n - 2)); rounding first keeps 0.3 * 10 = 3.0000000000000004 at 3."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"order ratio must lie in [0, 1], got {ratio!r}")
    return int(math.floor(round(ratio * (n - 2), 9)))


def patch_index_map(height: int, width: int, grid) -> torch.Tensor:
    """(H*W,) long: the patch id (row-major in the grid) of every pixel (row-major in the image)."""
    gh, gw = _grid(grid)
    if height < gh or width < gw:
        raise ValueError(f"a {gh}x{gw} patch grid needs an image of at least {gh}x{gw} pixels, got {height}x{width}")
    rows = torch.arange(height) * gh // height
    cols = torch.arange(width) * gw // width
    return (rows[:, None] * gw + cols[None, :]).reshape(-1)


def candidate_pairs(grid, radius: int = 1) -> np.ndarray:
    """(Q, 2) all unordered pairs i < j of patches at Chebyshev distance <= radius (radius 0: all pairs)."""
    gh, gw = _grid(grid)
    r, c = np.divmod(np.arange(gh * gw), gw)
    i, j = np.triu_indices(gh * gw, k=1)
    if radius > 0:
        keep = np.maximum(np.abs(r[i] - r[j]), np.abs(c[i] - c[j])) <= radius
        i, j = i[keep], j[keep]
    return np.stack([i, j], axis=1)


def sample_pairs(rng: np.random.Generator, grid, count: int, radius: int = 1) -> np.ndarray:
    """(count, 2) distinct unordered pairs drawn uniformly from candidate_pairs(grid, radius)."""
    cand = candidate_pairs(grid, radius)
    if count > len(cand):
        raise ValueError(f"asked for {count} distinct pairs but a {_grid(grid)} grid has only {len(cand)} pairs "
                         f"within radius {radius}")
    return cand[np.sort(rng.choice(len(cand), size=count, replace=False))]


def sample_contexts(rng: np.random.Generator, n: int, pairs: np.ndarray, m: int, count: int) -> np.ndarray:
    """(P, count, m) contexts: for each pair, `count` uniform random m-subsets of the n patches minus the pair."""
    if not 0 <= m <= n - 2:
        raise ValueError(f"context size m={m} must lie in [0, n-2={n - 2}]")
    keys = rng.random((len(pairs), count, n))
    keys[np.arange(len(pairs)), :, pairs[:, 0]] = 2.0       # the pair's patches sort last: never in S
    keys[np.arange(len(pairs)), :, pairs[:, 1]] = 2.0
    return np.argsort(keys, axis=-1, kind="stable")[..., :m]


def variant_masks(n: int, pairs: np.ndarray, contexts: np.ndarray) -> torch.Tensor:
    """(P, C, 4, n) bool keep-masks [S∪{i,j}, S∪{i}, S∪{j}, S] (True = patch kept, False = baseline)."""
    P, C, _ = contexts.shape
    s = np.zeros((P, C, n), dtype=bool)
    np.put_along_axis(s, contexts, True, axis=-1)                       # S
    keep = np.repeat(s[:, :, None, :], 4, axis=2)
    p, i, j = np.arange(P), pairs[:, 0], pairs[:, 1]
    keep[p, :, 0, i] = keep[p, :, 0, j] = True                          # S ∪ {i, j}
    keep[p, :, 1, i] = True                                             # S ∪ {i}
    keep[p, :, 2, j] = True                                             # S ∪ {j}
    return torch.from_numpy(keep)


def normalise(strength: np.ndarray, how: str = "mean") -> np.ndarray:
    """J = strength / mean (Deng et al.) or / sum over orders; all-NaN when there is no interaction at all."""
    if how not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {how!r}")
    denom = strength.mean() if how == "mean" else strength.sum()
    if not np.isfinite(denom) or denom <= 0:
        return np.full_like(strength, np.nan, dtype=np.float64)
    return strength / denom


@dataclass
class InteractionResult:
    orders: np.ndarray      # (K,) order ratios as given
    m: np.ndarray           # (K,) context sizes
    pairs: np.ndarray       # (B, P, 2) patch ids of the pairs of each image
    I: np.ndarray           # (B, K, P) I^(m)(i, j | x): mean over contexts of Δf (float64)
    strength: np.ndarray    # (K,) E_x E_ij |I^(m)|
    J: np.ndarray           # (K,) normalised strength
    forwards: int           # masked images scored


def _baseline(img: torch.Tensor, how) -> torch.Tensor:
    """(C,1,1) fill value for one image (C,H,W)."""
    if isinstance(how, torch.Tensor):
        return how.to(img).reshape(-1, 1, 1)
    if how == "mean":
        return img.mean(dim=(1, 2), keepdim=True)
    if how == "zero":
        return img.new_zeros(img.shape[0], 1, 1)
    raise ValueError(f"baseline must be one of {BASELINES} or a (C,) tensor, got {how!r}")


def _score_rows(f: ScoreFn, img, label, base, pmap, keep: torch.Tensor, batch: int) -> torch.Tensor:
    """keep (R, n) bool -> f on the R masked copies of img, `batch` rows per call -> (R,) float64."""
    C, H, W = img.shape
    out = []
    for s in range(0, len(keep), batch):
        rows = keep[s:s + batch].to(img.device)
        kp = rows[:, pmap].view(-1, 1, H, W)                           # (r, 1, H, W) pixel keep-mask
        x = torch.where(kp, img[None], base[None])                      # (r, C, H, W)
        v = f(x, label.expand(len(rows)))
        if v.shape != (len(rows),):
            raise ValueError(f"score function returned shape {tuple(v.shape)} for a batch of {len(rows)}; "
                             f"expected ({len(rows)},)")
        out.append(v.detach().to("cpu", torch.float64))
    return torch.cat(out)


def interaction_strengths(f: ScoreFn, images: torch.Tensor, labels: torch.Tensor, grid=7,
                          orders: Sequence[float] = tuple(np.linspace(0, 1, 21)), pairs=8, contexts: int = 16,
                          seed: int = 0, batch: int = 256, baseline="mean", norm: str = "mean",
                          pair_radius: int = 1) -> InteractionResult:
    """Multi-order interaction strength of score function f on images (B,C,H,W) with labels (B,).

    pairs: int (drawn per image, see module docstring) or a fixed (P, 2) array of patch ids for every image.
    f gets tensors on images.device and returns (b,) scores. Pure: no global RNG is used or changed.
    """
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError(f"images must be (B,C,H,W) with labels (B,), got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}")
    if contexts < 1 or batch < 1:
        raise ValueError(f"contexts and batch must be >= 1, got contexts={contexts} batch={batch}")
    gh, gw = _grid(grid)
    n = gh * gw
    B, _, H, W = images.shape
    pmap = patch_index_map(H, W, (gh, gw)).to(images.device)
    ms = np.array([context_size(float(r), n) for r in orders], dtype=np.int64)
    if len(ms) == 0:
        raise ValueError("no orders given")
    fixed = None
    if not isinstance(pairs, (int, np.integer)):
        fixed = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if fixed.size == 0 or fixed.min() < 0 or fixed.max() >= n or (fixed[:, 0] == fixed[:, 1]).any():
            raise ValueError(f"fixed pairs must be distinct patch ids in [0, {n}), got {fixed.tolist()}")
    elif pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    all_pairs, all_I = [], []
    for b in range(B):
        pr = fixed if fixed is not None else sample_pairs(np.random.default_rng([seed, b, 0]), (gh, gw),
                                                          int(pairs), pair_radius)
        keep = torch.stack([variant_masks(n, pr, sample_contexts(np.random.default_rng([seed, b, 1, int(m)]),
                                                                 n, pr, int(m), contexts)) for m in ms])
        img, label = images[b], labels[b:b + 1].to(images.device)
        v = _score_rows(f, img, label, _baseline(img, baseline), pmap, keep.view(-1, n), batch)
        if not torch.isfinite(v).all():
            raise FloatingPointError(f"score function returned non-finite values on masked copies of image {b}")
        v = v.view(len(ms), len(pr), contexts, 4)                       # (K, P, C, 4)
        delta = v[..., 0] - v[..., 1] - v[..., 2] + v[..., 3]           # Δf(i, j, S)
        all_I.append(delta.mean(dim=-1).numpy())                        # (K, P)
        all_pairs.append(pr)
    I = np.stack(all_I)                                                 # (B, K, P)
    strength = np.abs(I).mean(axis=(0, 2))
    return InteractionResult(np.asarray(orders, dtype=np.float64), ms, np.stack(all_pairs), I, strength,
                             normalise(strength, norm), B * len(ms) * I.shape[2] * contexts * 4)
