"""Pre-training data: image lists, the masked-image dataset, and a resumable distributed sampler.

Determinism (exact resume, workers never share RNG): the sampler yields (index, epoch) keys; each sample draws
its crop/flip, its mask and any replacement of an unreadable image from generators seeded by
SeedSequence([seed, epoch, index]) - independent of worker id, worker count and of the global RNGs.
Images decode to 8-bit RGB via pretrain.imageio (16-bit, CMYK, palette/alpha conventions there).
Unreadable images (truncated, zero-byte, not an image, decompression bombs) are skipped (warning naming the path),
replaced by another index drawn from that sample's generator, and reported with the batch, so the trainer counts
them and fails past data.skip_budget.
Pixels through the workers: the pre-training transform ends at uint8 (3,S,S) (build_transform(output="uint8"));
normalize_batch turns a uint8 batch (B,3,S,S) into the ImageNet-normalised float32 batch on the device, with the
very ops (and so the very values) of the float transform. Other data sources (WebDataset shards: pretrain.shards;
encoded bytes for on-device decoding: pretrain.gpu_data) subclass MaskedImageDataset through load / replacement /
augment.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from pretrain.imageio import IMG_EXTS, DataError, decode_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---- image lists
def list_images(root: str | os.PathLike, kind: str, split: str = "train") -> list[str]:
    """Sorted image paths. imagenet_folder: root/<split>/<wnid>/*; image_folder: recursive; file_list: a text file
    with one path per line (relative paths are relative to the list's folder; '#' comments and blanks ignored)."""
    root = Path(root)
    if kind == "file_list":
        if not root.is_file():
            raise DataError(f"data.root={root}: file list not found (data.kind=file_list expects a text file)")
        base, paths = root.parent, []
        for line in root.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                paths.append(str(p if p.is_absolute() else base / p))
    elif kind in ("imagenet_folder", "image_folder"):
        top = root / split if kind == "imagenet_folder" else root
        if not top.is_dir():
            hint = f" (expected {root}/{split}/<wnid>/*.JPEG)" if kind == "imagenet_folder" else ""
            raise DataError(f"data.root={root}: folder {top} not found{hint}")
        walk = (top.glob("*/*") if kind == "imagenet_folder" else top.rglob("*"))
        paths = sorted(str(p) for p in walk if p.suffix.lower() in IMG_EXTS and p.is_file())
    else:
        raise DataError(f"data.kind={kind!r}: expected imagenet_folder | image_folder | file_list")
    if not paths:
        raise DataError(f"data.root={root} (data.kind={kind}): no images found (extensions {', '.join(IMG_EXTS)})")
    return paths


def build_transform(size: int, scale: Sequence[float], ratio: Sequence[float], hflip: float,
                    interpolation: str = "bilinear", output: str = "float"):
    """RandomResizedCrop + flip (torchvision v2), PIL in. output="float": + ToTensor + ImageNet normalise ->
    float32 (3,size,size); output="uint8": stops at the uint8 (3,size,size) image (normalize_batch on the device)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2

    interp = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[interpolation]
    steps = [v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio), interpolation=interp, antialias=True),
             v2.RandomHorizontalFlip(hflip), v2.ToImage()]
    if output == "float":
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    elif output != "uint8":
        raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
    return v2.Compose(steps)


def normalize_batch(img: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 (B,3,H,W) on any device -> float32 normalised, bit-identical to build_transform(output="float")
    (the same v2 kernels: x / 255 as ToDtype(scale=True) computes it, then (x - mean) / std). Keeps the memory
    format (channels_last stays channels_last). A float batch is returned as it is (already normalised)."""
    from torchvision.transforms.v2 import functional as F

    if img.is_floating_point():
        return img
    if img.dtype != torch.uint8:
        raise TypeError(f"normalize_batch expects a uint8 or an already normalised float batch, got {img.dtype}")
    return F.normalize(F.to_dtype(img, torch.float32, scale=True), list(mean), list(std), inplace=True)


def sample_seeds(seed: int, epoch: int, index: int) -> tuple[int, np.random.Generator, np.random.Generator]:
    """(torch seed for the augmentation, mask generator, replacement generator) of one sample."""
    aug, mask, repl = np.random.SeedSequence([seed, epoch, index]).spawn(3)
    return (int(aug.generate_state(1, np.uint64)[0] >> np.uint64(1)),
            np.random.default_rng(mask), np.random.default_rng(repl))


class MaskedImageDataset(Dataset):
    """dataset[(index, epoch)] -> (img (3,S,S): what `transform` returns, mask (S/p, S/p) uint8, skipped: list of str).

    mask_gen(rng: np.random.Generator) -> uint8 tensor (e.g. pretrain.masking.BlockMaskGenerator).
    Subclass hooks: name(j) / read_bytes(j) / load(j) -> what messages call source index j / its encoded bytes /
    its decoded image (DataError when unreadable), replacement(j, rng) -> the index tried after j failed,
    augment(img, aug_seed) -> the sample's pixels.
    """

    def __init__(self, paths: Sequence[str], transform: Callable, mask_gen: Callable, seed: int = 0,
                 skip_budget: int = 100, max_image_pixels: int | None = None):
        self.paths = list(paths)
        self.transform = transform
        self.mask_gen = mask_gen
        self.seed = seed
        self.skip_budget = skip_budget
        self.max_image_pixels = max_image_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, path: str) -> Image.Image:
        """Open and fully decode as 8-bit RGB (pretrain.imageio conventions); DataError naming the path otherwise."""
        return decode_rgb(path, self.max_image_pixels)

    def name(self, j: int) -> str:
        """What messages call source index j (its path)."""
        return self.paths[j]

    def read_bytes(self, j: int) -> bytes:
        """The encoded file of source index j (on-device decoding: pretrain.gpu_data); DataError if unreadable."""
        try:
            with open(self.paths[j], "rb") as f:
                return f.read()
        except OSError as e:
            raise DataError(f"{self.paths[j]}: cannot read ({type(e).__name__}: {e})") from None

    def load(self, j: int):
        return self.decode(self.paths[j])

    def replacement(self, j: int, rng: np.random.Generator) -> int:
        return int(rng.integers(len(self)))

    def augment(self, img, aug_seed: int):
        with torch.random.fork_rng(devices=[]):        # the transform draws from the CPU generator only
            torch.default_generator.manual_seed(aug_seed)
            return self.transform(img).as_subclass(torch.Tensor)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        return self.sample(index, epoch)

    def sample(self, index: int, epoch: int, rejected: dict[int, str] | None = None):
        """The sample of key (index, epoch). rejected {j: message}: source indices to treat as unreadable although
        load(j) succeeds (an on-device decoder refused them: pretrain.gpu_data) - the same deterministic chain of
        replacements then continues past them."""
        aug_seed, mask_rng, repl_rng = sample_seeds(self.seed, epoch, index)
        skipped, j = [], index
        while True:
            try:
                if rejected and j in rejected:
                    raise DataError(rejected[j])
                img = self.load(j)
                break
            except DataError as e:
                warnings.warn(f"skipping image: {e}", stacklevel=3)
                skipped.append(str(e))
                if len(skipped) > self.skip_budget:
                    raise DataError(f"{len(skipped)} unreadable images in a row while loading sample {index}, "
                                    f"more than the skip budget data.skip_budget={self.skip_budget}; "
                                    f"last: {skipped[-1]}") from None
                j = self.replacement(j, repl_rng)
        return self.augment(img, aug_seed), self.mask_gen(mask_rng), skipped


def collate(batch):
    """-> img (B,3,S,S), mask (B,h,w) uint8, skipped: list of messages (usually empty)."""
    imgs, masks, skipped = zip(*batch)
    return torch.stack(imgs), torch.stack(masks), [s for lst in skipped for s in lst]


class ResumableDistributedSampler(Sampler):
    """Deterministic per-epoch permutation (seed + epoch), sharded per rank, startable at an offset.

    Every rank gets num_samples = len // world indices (the tail of the permutation is dropped so ranks stay in
    step): rank r takes perm[r::world]. set_epoch(epoch, offset) skips the first `offset` of this rank's indices
    (the samples already consumed this epoch), so a resumed run continues on the very next sample.
    Yields (index, epoch) keys for MaskedImageDataset.
    """

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        if length < num_replicas:
            raise DataError(f"dataset of {length} images is smaller than the number of processes ({num_replicas})")
        self.length, self.num_replicas, self.rank = length, num_replicas, rank
        self.seed, self.shuffle = seed, shuffle
        self.num_samples = length // num_replicas
        self.epoch, self.offset = 0, 0

    def set_epoch(self, epoch: int, offset: int = 0) -> None:
        if not 0 <= offset <= self.num_samples:
            raise ValueError(f"sampler offset {offset} outside [0, {self.num_samples}]")
        self.epoch, self.offset = epoch, offset

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.length, generator=g).tolist()
        else:
            perm = list(range(self.length))
        return perm[:self.num_samples * self.num_replicas][self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.epoch) for i in self.indices()[self.offset:]])

    def __len__(self) -> int:
        return self.num_samples - self.offset
