"""WebDataset tar shards of an image folder: writing, the index, and the per-rank resumable reader.

Layout (the standard WebDataset one, readable by the `webdataset` library): OUT/shard-000000.tar, ... each a plain
tar of samples, every sample three members with one key (the sample's position in the folder's sorted listing,
%09d): <key>.jpg (the original file's bytes, never re-encoded; a non-JPEG keeps its own extension, e.g. <key>.png),
<key>.cls (the class index as ASCII text) and <key>.json ({"path": path relative to the split, "index": key as int,
"cls": class index, "wnid": class folder}). Samples are dealt to shards in a seeded permutation (`--seed`), so every
shard mixes the classes.
OUT/index.json (written last: a folder without it is unfinished) names the shards with their sample counts and
byte sizes, the classes and the source; OUT/index.npz holds per sample (in folder order): shard, byte offset and
size of the image member, label - found by reading the tars back (index_shards), so foreign shards of the same
layout can be indexed too.

Reading (ShardSampler + ShardImageDataset / ShardEncodedDataset): samples are keyed by their folder index, so a
sharded run draws every sample's crop, flip and mask from the same SeedSequence([seed, epoch, index]) as a folder
run. Epoch order: shards in a permutation seeded by (run.seed + epoch), the samples of each shard in a permutation
from the same generator, concatenated; the sequence's tail of total % world samples is dropped and rank r takes the
r-th contiguous block of total // world samples. So every rank reads its own run of shards (a shard at a block
boundary is split between two neighbours), every rank takes the same number of samples and so of steps (DDP), and
over the ranks an epoch sees every sample at most once. Resume: the loop's offset (samples of this rank already
consumed) skips into the block; no tar is read to get there (the index gives every member's offset).
Bad input: a missing or resized shard fails at start-up naming it; an unreadable member is a counted skip (naming
shard and key), replaced by another sample of the same shard from the sample's own generator.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pretrain.data import MaskedImageDataset, ResumableDistributedSampler, list_images
from pretrain.fileio import atomic_write_json
from pretrain.gpu_data import EncodedImageDataset, NamedBytes
from pretrain.imageio import DataError, decode_rgb

FORMAT = "a2mim-wds/1"
INDEX, ARRAYS = "index.json", "index.npz"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")
HINT = "make it with `python -m pretrain.shard ROOT OUT` (data.kind=shards, data.root=OUT)"


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "", ""
    tar.addfile(info, io.BytesIO(data))


def _ext(path: str, data: bytes) -> str:
    """.jpg for JPEG bytes (whatever the file was called), else the file's own extension."""
    return ".jpg" if data.startswith(b"\xff\xd8\xff") else (Path(path).suffix.lower() or ".bin")


def write_shards(root: str | os.PathLike, out: str | os.PathLike, shard_size: int = 1000, split: str = "train",
                 seed: int = 0, progress=None) -> dict:
    """ImageNet folder root/<split>/<wnid>/* -> WebDataset shards + index in `out`; returns the index record."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    root, out = Path(root), Path(out)
    paths = list_images(root, "imagenet_folder", split)
    top = root / split
    classes = sorted({Path(p).parent.name for p in paths})
    label = {c: i for i, c in enumerate(classes)}
    out.mkdir(parents=True, exist_ok=True)
    (out / INDEX).unlink(missing_ok=True)            # unfinished until the new index is written
    for old in out.glob("shard-*.tar"):
        old.unlink()
    order = np.random.default_rng(seed).permutation(len(paths))
    names = []
    for s, start in enumerate(range(0, len(paths), shard_size)):
        name = f"shard-{s:06d}.tar"
        tmp = out / f".{name}.partial"
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in order[start:start + shard_size].tolist():
                p, key = paths[i], f"{i:09d}"
                wnid = Path(p).parent.name
                with open(p, "rb") as f:
                    data = f.read()
                _member(tar, key + _ext(p, data), data)
                _member(tar, key + ".cls", str(label[wnid]).encode())
                _member(tar, key + ".json", json.dumps({"path": str(Path(p).relative_to(top)), "index": i,
                                                        "cls": label[wnid], "wnid": wnid}).encode())
        os.replace(tmp, out / name)
        names.append(name)
        if progress:
            progress(s + 1, -(-len(paths) // shard_size))
    return index_shards(out, names, classes=classes, source=str(root), split=split, seed=seed)


def index_shards(out: str | os.PathLike, names: Sequence[str] | None = None, classes: Sequence[str] | None = None,
                 **source) -> dict:
    """Read the tars' headers (and the small .cls / .json members) back; write index.npz + index.json."""
    out = Path(out)
    names = list(names) if names is not None else sorted(p.name for p in out.glob("shard-*.tar"))
    if not names:
        raise DataError(f"{out}: no shard-*.tar files to index")
    rows, shards = [], []
    for s, name in enumerate(names):
        path = out / name
        samples: dict[str, dict] = {}
        try:
            with tarfile.open(path, "r:") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    key, _, ext = m.name.rpartition("/")[2].partition(".")
                    ext = "." + ext.lower()
                    rec = samples.setdefault(key, {})
                    if ext in IMAGE_EXTS:
                        rec["offset"], rec["size"] = m.offset_data, m.size
                    elif ext in (".cls", ".json"):
                        rec[ext] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"{path}: not a readable tar shard ({type(e).__name__}: {e})") from None
        count = 0
        for key, rec in samples.items():
            if "offset" not in rec:
                raise DataError(f"{path}: sample {key!r} has no image member (expected {key}.jpg)")
            try:
                meta = json.loads(rec[".json"]) if ".json" in rec else {}
                index = int(meta["index"]) if "index" in meta else int(key)
            except (ValueError, TypeError, KeyError) as e:
                raise DataError(f"{path}: sample {key!r}: no sample index (a numeric key or a .json with 'index'; "
                                f"{type(e).__name__}: {e})") from None
            cls = int(rec[".cls"]) if ".cls" in rec else int(meta.get("cls", -1))
            rows.append((index, s, rec["offset"], rec["size"], cls))
            count += 1
        shards.append({"name": name, "count": count, "bytes": path.stat().st_size})
    rows.sort()
    idx = np.array(rows, dtype=np.int64).reshape(-1, 5)
    if not np.array_equal(idx[:, 0], np.arange(len(idx))):
        dup = len(idx) - len(np.unique(idx[:, 0]))
        raise DataError(f"{out}: sample indices are not 0..{len(idx) - 1} ({dup} duplicated); the shards are not "
                        f"one complete data set")
    np.savez(out / ARRAYS, shard=idx[:, 1].astype(np.int32), offset=idx[:, 2], size=idx[:, 3],
             label=idx[:, 4].astype(np.int32))
    rec = {"format": FORMAT, "total": int(len(idx)), "shards": shards,
           "classes": list(classes) if classes is not None else None, **source}
    atomic_write_json(out / INDEX, rec)
    return rec


class ShardIndex:
    """index.json + index.npz of a shard folder, checked against the tars on disk."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        path = self.root / INDEX
        if not path.is_file():
            raise DataError(f"data.root={self.root}: no {INDEX} (data.kind=shards expects a shard folder; {HINT})")
        try:
            rec = json.loads(path.read_text())
            assert rec.get("format") == FORMAT, f"format {rec.get('format')!r}, expected {FORMAT!r}"
            arr = np.load(self.root / ARRAYS)
            self.shard, self.offset, self.size = arr["shard"], arr["offset"], arr["size"]
            self.label = arr["label"]
        except (OSError, ValueError, KeyError, AssertionError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a shard index ({type(e).__name__}: {e}); {HINT}") from None
        self.names = [s["name"] for s in rec["shards"]]
        self.counts = np.array([s["count"] for s in rec["shards"]], dtype=np.int64)
        self.total, self.record = int(rec["total"]), rec
        if len(self.shard) != self.total or int(self.counts.sum()) != self.total:
            raise DataError(f"{path}: {self.total} samples listed but {len(self.shard)} indexed; {HINT}")
        for s in rec["shards"]:
            p = self.root / s["name"]
            if not p.is_file():
                raise DataError(f"data.root={self.root}: shard {s['name']} is missing ({INDEX} lists "
                                f"{len(self.names)} shards)")
            if p.stat().st_size != s["bytes"]:
                raise DataError(f"{p}: {p.stat().st_size} bytes, {INDEX} says {s['bytes']} (truncated or rewritten "
                                f"since it was indexed; re-run `python -m pretrain.shard`)")
        order = np.lexsort((self.offset, self.shard))           # samples grouped by shard, in tar order
        self.members = np.split(order, np.cumsum(self.counts)[:-1])   # shard -> folder indices

    def __len__(self) -> int:
        return self.total


class ShardSource:
    """The MaskedImageDataset source hooks over a ShardIndex (mixed in before the dataset class)."""
    index: ShardIndex

    def __len__(self) -> int:
        return self.index.total

    def name(self, j: int) -> str:
        return f"{self.index.root / self.index.names[self.index.shard[j]]}:{j:09d}"

    def read_bytes(self, j: int) -> bytes:
        s = int(self.index.shard[j])
        off, size = int(self.index.offset[j]), int(self.index.size[j])
        try:
            fd = self._fd(s)
            data = os.pread(fd, size, off)
        except OSError as e:
            raise DataError(f"{self.name(j)}: cannot read ({type(e).__name__}: {e})") from None
        if len(data) != size:
            raise DataError(f"{self.name(j)}: {len(data)} of {size} bytes at offset {off} (truncated shard)")
        return data

    def replacement(self, j: int, rng: np.random.Generator) -> int:
        """Another sample of the same shard (the one this rank is reading anyway)."""
        members = self.index.members[int(self.index.shard[j])]
        return int(members[int(rng.integers(len(members)))])

    def _fd(self, s: int) -> int:
        """One descriptor per shard and process (pread: no shared file position across forked workers)."""
        fds = self.__dict__.setdefault("_fds", {})
        if self.__dict__.get("_pid") != os.getpid():
            fds.clear()
            self._pid = os.getpid()
        if s not in fds:
            if len(fds) >= 64:
                os.close(fds.pop(next(iter(fds))))
            fds[s] = os.open(self.index.root / self.index.names[s], os.O_RDONLY)
        return fds[s]

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_fds", None)
        state.pop("_pid", None)
        return state


class ShardImageDataset(ShardSource, MaskedImageDataset):
    """MaskedImageDataset (PIL path) over shards: dataset[(index, epoch)] as for an image folder."""

    def __init__(self, index: ShardIndex, transform, mask_gen, **kw):
        super().__init__([], transform, mask_gen, **kw)
        self.index = index

    def load(self, j: int):
        return decode_rgb(NamedBytes(self.read_bytes(j), self.name(j)), self.max_image_pixels)


class ShardEncodedDataset(ShardSource, EncodedImageDataset):
    """EncodedImageDataset (on-device decoding, pretrain.gpu_data) over shards."""

    def __init__(self, index: ShardIndex, *args, **kw):
        super().__init__([], *args, **kw)
        self.index = index


class ShardSampler(ResumableDistributedSampler):
    """Epoch order over shards (module docstring): rank r's contiguous block of total // world samples."""

    def __init__(self, index: ShardIndex, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        super().__init__(len(index), num_replicas, rank, seed=seed, shuffle=shuffle)
        self.index = index

    def epoch_sequence(self) -> np.ndarray:
        """Folder indices of the whole epoch, in shard order (before the tail is dropped and ranks split it)."""
        members = self.index.members
        if not self.shuffle:
            return np.concatenate(members)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        parts = []
        for s in torch.randperm(len(members), generator=g).tolist():
            m = members[s]
            parts.append(m[torch.randperm(len(m), generator=g).numpy()])
        return np.concatenate(parts)

    def indices(self) -> list[int]:
        n = self.num_samples
        return self.epoch_sequence()[self.rank * n:(self.rank + 1) * n].tolist()

    def shards_of_rank(self) -> list[int]:
        """Shards this rank reads this epoch (in reading order)."""
        seen: dict[int, None] = {}
        for i in self.indices():
            seen.setdefault(int(self.index.shard[i]), None)
        return list(seen)


__all__ = ["FORMAT", "ShardEncodedDataset", "ShardImageDataset", "ShardIndex", "ShardSampler", "index_shards",
           "write_shards"]
