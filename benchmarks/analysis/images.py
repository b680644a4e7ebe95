"""Image folders for the analysis tools: deterministic eval preprocessing, ImageNet-style class folders.

Preprocessing (no randomness): resize the short side to `size` (bilinear, antialiased), centre crop size x size,
to [0, 1], normalise with the backbone's mean/std -> (3, size, size) float32. Unreadable files are skipped with a
warning naming them and counted; a set in which nothing is readable is an error.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2 as T

from pretrain.data import IMAGENET_MEAN, IMAGENET_STD, list_images


class AnalysisDataError(ValueError):
    """A data folder that does not have the expected layout; the message names the path."""


def eval_transform(size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    return T.Compose([T.ToImage(), T.Resize(size, antialias=True), T.CenterCrop(size),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))])


def load_images(paths: Sequence[str], size: int, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> tuple[torch.Tensor, list[int], list[str]]:
    """-> (images (N,3,size,size) normalised, indices of `paths` that were read, skipped paths)."""
    tf = eval_transform(size, mean, std)
    out, kept, skipped = [], [], []
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                out.append(tf(im.convert("RGB")))
            kept.append(i)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            warnings.warn(f"skipping unreadable image {p}: {e}", stacklevel=2)
            skipped.append(str(p))
    if not out:
        raise AnalysisDataError(f"none of the {len(paths)} images could be read (first: {paths[0] if paths else '-'})")
    return torch.stack(out), kept, skipped


def imagenet_root(root: str | Path) -> Path:
    """The folder holding train/ and/or val/ class folders: `root` itself, or `root`/imagenet (the toy world)."""
    root = Path(root)
    for cand in (root, root / "imagenet"):
        if (cand / "train").is_dir() or (cand / "val").is_dir():
            return cand
    raise AnalysisDataError(f"--data {root}: expected an ImageNet-style folder with train/<class>/* and/or "
                            f"val/<class>/* (or the toy world's imagenet/ inside it)")


def class_names(root: Path) -> list[str]:
    """Class folders in sorted order (torchvision ImageFolder convention), taken from train/ if present."""
    top = root / "train" if (root / "train").is_dir() else root / "val"
    names = sorted(d.name for d in top.iterdir() if d.is_dir())
    if len(names) < 2:
        raise AnalysisDataError(f"{top}: found {len(names)} class folder(s); a classifier needs at least 2")
    return names


def split_items(root: Path, split: str, classes: Sequence[str]) -> tuple[list[str], list[int]]:
    """Sorted (paths, labels) of root/<split>/<class>/*; a class folder unknown to `classes` is an error."""
    top = root / split
    if not top.is_dir():
        raise AnalysisDataError(f"{top}: split folder not found (expected {top}/<class>/*.JPEG)")
    index = {c: i for i, c in enumerate(classes)}
    paths = list_images(root, "imagenet_folder", split)
    unknown = sorted({Path(p).parent.name for p in paths} - set(index))
    if unknown:
        raise AnalysisDataError(f"{top}: class folders {unknown[:5]} are not among the {len(classes)} classes of "
                                f"{root}/train")
    return paths, [index[Path(p).parent.name] for p in paths]


def balanced_subset(labels: Sequence[int], n: int | None) -> list[int]:
    """Up to n indices taken round-robin over classes (k-th image of every class, then the (k+1)-th ...)."""
    per_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        per_class.setdefault(y, []).append(i)
    order, k = [], 0
    while len(order) < len(labels):
        order += [idx[k] for _, idx in sorted(per_class.items()) if k < len(idx)]
        k += 1
    return order if n is None else order[:n]
