"""ImageNet-folder classification data: labelled image lists, seeded timm augmentation, repeated augmentation.

Layout: <root>/<split>/<wnid>/<image>; classes = the sorted class folders of the TRAIN split (label = position);
the val split's folders must be among them. Determinism (exact resume): samples are keyed (index, round) and
pretrain.data.MaskedImageDataset seeds the torch CPU generator per key; SeededTransform derives python `random` and
numpy from it, because timm's RandomResizedCrop / RandAugment / RandomErasing draw from `random`. So each sample's
augmentation depends on (run.seed, round, index) only - not on workers, their number, or the global RNGs.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pretrain.data import DataError, MaskedImageDataset, ResumableDistributedSampler, list_images


def class_folders(root: str | Path, split: str) -> list[str]:
    top = Path(root) / split
    if not top.is_dir():
        raise DataError(f"data.root={root}: folder {top} not found (expected {root}/{split}/<wnid>/*.JPEG)")
    names = sorted(p.name for p in top.iterdir() if p.is_dir())
    if not names:
        raise DataError(f"{top}: no class folders (expected {top}/<wnid>/*.JPEG)")
    return names


def labelled_images(root: str | Path, split: str, classes: Sequence[str]) -> tuple[list[str], list[int]]:
    """(sorted paths, labels) of <root>/<split>/<class>/*; a class folder not in `classes` is an error."""
    index = {c: i for i, c in enumerate(classes)}
    paths = list_images(root, "imagenet_folder", split)
    unknown = sorted({Path(p).parent.name for p in paths} - index.keys())
    if unknown:
        raise DataError(f"{Path(root) / split}: class folders {unknown[:5]} are not among the {len(classes)} "
                        f"training classes of {Path(root)} (the val split must use the train split's wnids)")
    return paths, [index[Path(p).parent.name] for p in paths]


class SeededTransform:
    """Run `transform` with python `random` and numpy seeded from the torch CPU generator; both restored after."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        seed = int(torch.randint(0, 2**62, (1,)).item())
        py, npy = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            return self.transform(img)
        finally:
            random.setstate(py)
            np.random.set_state(npy)

    def __repr__(self) -> str:
        return f"SeededTransform({self.transform!r})"


def _no_mask(rng) -> None:
    return None


class ClassificationDataset(MaskedImageDataset):
    """dataset[(index, round)] -> (img (3,S,S) normalised, label, skipped messages).

    Reuses MaskedImageDataset's decoding, per-key seeding and skip-and-replace of unreadable images (no mask);
    the label follows the image actually decoded (a replacement brings its own label).
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform, seed: int = 0,
                 skip_budget: int = 100, max_image_pixels: int | None = None):
        super().__init__(paths, SeededTransform(transform), _no_mask, seed=seed, skip_budget=skip_budget,
                         max_image_pixels=max_image_pixels)
        self.labels = list(labels)
        self._label_of = dict(zip(self.paths, self.labels))
        self._decoded = None

    def decode(self, path: str):
        img = super().decode(path)
        self._decoded = path
        return img

    def __getitem__(self, key):
        img, _, skipped = super().__getitem__(key)
        return img, self._label_of[self._decoded], skipped


def collate(batch):
    """-> img (B,3,S,S), label (B,) int64, skipped: list of messages."""
    imgs, labels, skipped = zip(*batch)
    return torch.stack(imgs), torch.tensor(labels, dtype=torch.long), [s for lst in skipped for s in lst]


class RepeatAugSampler(ResumableDistributedSampler):
    """Repeated augmentation (DeiT / timm RepeatAugSampler), resumable.

    Each epoch's permutation lists every index `repeats` times in a row and is dealt round-robin to the ranks
    (so with >= `repeats` processes the copies of an image land on different GPUs); every rank keeps the first
    len // world of its share, so an epoch is as long as without repetition (timm's selected_round=256 rounding
    is not applied). Keys are (index, epoch * repeats + copy): each copy gets its own augmentation.
    """

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, repeats: int = 3):
        super().__init__(length, num_replicas, rank, seed=seed, shuffle=True)
        self.repeats = repeats

    def keys(self) -> list[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.length, generator=g).tolist()
        rep = [(i, self.epoch * self.repeats + c) for i in perm for c in range(self.repeats)]
        return rep[self.rank::self.num_replicas][:self.num_samples]

    def indices(self) -> list[int]:
        return [i for i, _ in self.keys()]

    def __iter__(self):
        return iter(self.keys()[self.offset:])


def train_transform(d, mean: Sequence[float], std: Sequence[float]):
    """timm create_transform: RandomResizedCrop + flip [+ RandAugment | colour jitter] + normalise [+ RandomErasing]."""
    from timm.data import create_transform

    return create_transform(d.train_size, is_training=True, scale=tuple(d.rrc_scale), ratio=tuple(d.rrc_ratio),
                            hflip=d.hflip, color_jitter=d.color_jitter, auto_augment=d.auto_augment,
                            interpolation=d.interpolation, mean=tuple(mean), std=tuple(std), re_prob=d.re_prob,
                            re_mode=d.re_mode, re_count=1)


def eval_transform(d, mean: Sequence[float], std: Sequence[float]):
    """Resize the shorter side to test_resize, centre-crop test_size (RSB A2: 236 -> 224), normalise."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2

    interp = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[d.interpolation]
    return v2.Compose([v2.Resize(d.test_resize, interpolation=interp, antialias=True), v2.CenterCrop(d.test_size),
                       v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
