"""Frozen features of an exported backbone over an ImageNet-folder split, computed once and cached.

features(cfg, backbone, split) -> (feats {level: (N, C_level) float32}, labels (N,) int64, info)
Every image: resize shorter side -> centre crop (no augmentation, as every frozen-feature protocol evaluates), one
forward pass of transfer.backbones.FeatureBackbone built with ALL its levels (out_indices = every entry of the timm
model's feature_info), each map global-average-pooled (ViT: the mean of the patch tokens of that block); the
protocols pick their levels from these (so the linear probe and k-NN share one cache).

Cache: <cache_dir>/<weights sha256[:16]>-<split>-<key>.safetensors (+ .json), key = hash of everything that decides
the numbers (the weights, the transform, the list of files with their sizes and mtimes). Tensors only
(safetensors): nothing in a cache folder is unpickled. A cache file that does not match its own record is
recomputed (and rewritten), never trusted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from pretrain.export_format import IMAGENET_MEAN, IMAGENET_STD
from pretrain.fileio import atomic_write, atomic_write_json
from transfer.classification.data import ClassificationDataset, class_folders, collate, eval_transform, labelled_images

log = logging.getLogger("transfer.frozen")
CACHE_FORMAT = "a2mim-features/1"


def _files_stamp(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_key(cfg, meta: dict, split: str, paths: list[str], levels: tuple[int, ...]) -> dict:
    d = cfg.data
    return {"format": CACHE_FORMAT, "weights_sha256": meta.get("sha256"), "split": split, "levels": list(levels),
            "timm_name": meta.get("timm_name"),
            "test_size": d.test_size, "test_resize": d.test_resize, "interpolation": d.interpolation,
            "files": len(paths), "files_sha256": _files_stamp(paths)}


def _cache_paths(cfg, key: dict) -> tuple[Path, Path]:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"{(key['weights_sha256'] or 'nosha')[:16]}-{key['split']}-{digest}"
    folder = Path(cfg.run.cache_dir or Path(cfg.run.out_dir) / "features")
    return folder / f"{stem}.safetensors", folder / f"{stem}.json"


def _read_cache(tensors: Path, record: Path, key: dict, levels) -> dict | None:
    from safetensors.torch import load_file

    if not (tensors.is_file() and record.is_file()):
        return None
    try:
        rec = json.loads(record.read_text())
        data = load_file(str(tensors))
        if rec.get("key") != key or set(data) != {f"l{i}" for i in levels} | {"labels"}:
            raise ValueError("record does not match")
        return data
    except Exception as e:   # safetensors / json raise their own types; a bad cache is recomputed, never trusted
        log.warning("feature cache %s unusable (%s): recomputing", tensors, e)
        return None


@torch.no_grad()
def _extract(cfg, backbone, paths, labels, device) -> dict:
    from tqdm import tqdm

    d = cfg.data
    mean, std = backbone.meta.get("mean", IMAGENET_MEAN), backbone.meta.get("std", IMAGENET_STD)
    ds = ClassificationDataset(paths, labels, eval_transform(d, mean, std), seed=0, skip_budget=d.skip_budget,
                               max_image_pixels=d.max_image_pixels)
    loader = DataLoader(Subset(ds, [(i, 0) for i in range(len(ds))]), batch_size=d.batch, num_workers=d.num_workers,
                        collate_fn=collate, generator=torch.Generator())
    out, ys, skipped = [[] for _ in backbone.out_indices], [], 0
    backbone.eval().to(device)
    for img, y, sk in tqdm(loader, desc="features", leave=False, mininterval=2.0):
        for j, f in enumerate(backbone(img.to(device))):
            out[j].append(f.float().mean(dim=(2, 3)).cpu())           # (B, C_j): global average pool
        ys.append(y)
        skipped += len(sk)
    if skipped:
        log.warning("%d unreadable images replaced while extracting features", skipped)
    return {**{f"l{i}": torch.cat(o) for i, o in zip(backbone.out_indices, out)}, "labels": torch.cat(ys)}


def features(cfg, backbone, split: str, device) -> tuple[dict[int, torch.Tensor], torch.Tensor, dict]:
    """Pooled features of `split` at every level of `backbone` (a loaded transfer.backbones.FeatureBackbone with all
    levels and a `meta` attribute: the export's sidecar), from the cache or computed (then cached)."""
    from safetensors.torch import save

    d = cfg.data
    classes = class_folders(d.root, d.train_split)
    paths, labels = labelled_images(d.root, split, classes)
    levels = backbone.out_indices
    key = _cache_key(cfg, backbone.meta, split, paths, levels)
    tensors, record = _cache_paths(cfg, key)
    data = _read_cache(tensors, record, key, levels)
    hit = data is not None
    if not hit:
        data = _extract(cfg, backbone, paths, labels, device)
        blob = save({k: v.contiguous() for k, v in data.items()})
        atomic_write(tensors, lambda f: f.write(blob))
        atomic_write_json(record, {"key": key, "classes": classes, "root": str(d.root)})
    info = {"images": len(paths), "classes": len(classes), "cache": str(tensors), "cache_hit": hit}
    return {i: data[f"l{i}"] for i in levels}, data["labels"], info
