"""Dataset checks shared by the pre-flight CLI (pretrain.verify_data) and the transfer entry points.

Each check returns Findings: severity 'error' (the loaders would crash deep inside a framework, or silently train
on wrong data: the run must not start) or 'skip' (the loaders drop the item themselves; reported and counted).
File checks (decoding images, label PNGs) run in parallel over chunks (ProcessPoolExecutor, tqdm progress).

ImageNet folder: <root>/{train,val}/<class>/* (or any folder of images): every image-extension file decodes
  (pretrain.imageio), train and val have the same classes; empty class folders and non-image files are 'skip'.
COCO instances json: required keys, unique ids, bbox [x, y, w, h] inside the image (+- tol px), category ids
  known, the config's class names present; polygons with < 3 points and boxes under 1 px are 'skip' (mmdet drops
  them); image files present, readable, of the size the json states.
ADE20K (ADEChallengeData2016): every image has a label of the same size; labels are 8-bit single channel (L/P)
  with values in 0..K (reduce_zero_label: 0 = other/ignore, v -> class v-1) or 0..K-1, plus 255 (ignore).
"""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from pretrain.imageio import IMG_EXTS, DataError, decode_rgb, image_size

_COCO_IMAGE_KEYS = ("id", "file_name", "width", "height")
_COCO_ANN_KEYS = ("id", "image_id", "category_id", "bbox", "area", "segmentation")


class DatasetError(ValueError):
    """A dataset that fails its pre-flight; the message lists the bad files/keys and what was expected."""


@dataclass
class Finding:
    path: str            # the file concerned (an image, a label, an annotation json)
    reason: str          # what is wrong, and what was expected
    severity: str        # 'error' | 'skip'

    def line(self) -> str:
        return f"{'BAD ' if self.severity == 'error' else 'SKIP'} {self.path}: {self.reason}"


@dataclass
class Report:
    kind: str
    root: str
    checked: int = 0                                   # files decoded/inspected + annotations checked
    findings: list[Finding] = field(default_factory=list)

    def add(self, path, reason: str, severity: str = "error") -> None:
        self.findings.append(Finding(str(path), reason, severity))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def skips(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "skip"]

    def summary(self) -> str:
        return (f"{self.kind} {self.root}: {self.checked} items checked, {len(self.errors)} bad, "
                f"{len(self.skips)} skipped by the loaders")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "root": self.root, "checked": self.checked, "bad": len(self.errors),
                "skipped": len(self.skips), "findings": [asdict(f) for f in self.findings]}

    def raise_if_bad(self, limit: int = 20, where: str | os.PathLike | None = None) -> None:
        errs = self.errors
        if errs:
            more = f"\n  ... and {len(errs) - limit} more" if len(errs) > limit else ""
            raise DatasetError(f"dataset check failed: {self.summary()}\n  "
                               + "\n  ".join(f.line() for f in errs[:limit]) + more
                               + (f"\nfull report: {where}" if where else ""))


# ---------------------------------------------------------------- parallel file checks
def run_tasks(fn: Callable[[list], list], tasks: Sequence, workers: int | None = None, desc: str = "checking",
              chunk: int = 64) -> list:
    """fn(list of tasks) -> list of results, over chunks, in a process pool (serial when small or workers <= 1)."""
    from tqdm import tqdm

    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    chunks = [list(tasks[i:i + chunk]) for i in range(0, len(tasks), chunk)]
    out: list = []
    with tqdm(total=len(tasks), desc=desc, unit="file", disable=None, mininterval=1.0) as bar:
        if workers <= 1 or len(chunks) <= 1:
            for c in chunks:
                out += fn(c)
                bar.update(len(c))
            return out
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks))) as ex:
            for c, res in zip(chunks, ex.map(fn, chunks)):
                out += res
                bar.update(len(c))
    return out


def image_tasks(tasks: list) -> list:
    """[(path, full_decode, max_pixels)] -> [(path, (w, h) | None, error message | None)]."""
    out = []
    for path, full, max_pixels in tasks:
        try:
            size = decode_rgb(path, max_pixels).size if full else image_size(path, max_pixels)
            out.append((path, size, None))
        except DataError as e:
            out.append((path, None, str(e).removeprefix(f"{path}: ")))
    return out


def label_tasks(tasks: list) -> list:
    """[(label, image, allowed values (sorted list), full image decode)] -> [(label, error message | None)]."""
    out = []
    for label, image, allowed, full in tasks:
        try:
            with Image.open(label) as im:
                if im.mode not in ("L", "P"):
                    raise ValueError(f"label PNG mode {im.mode}; expected an 8-bit single-channel PNG (mode L or P)")
                arr = np.asarray(im)                                 # (H, W) uint8 class indices
            present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
            bad = np.setdiff1d(present, allowed)
            if bad.size:
                raise ValueError(f"label values {bad.tolist()[:10]} out of range; expected {_ranges(allowed)}")
            w, h = decode_rgb(image).size if full else image_size(image)
            if (arr.shape[1], arr.shape[0]) != (w, h):
                raise ValueError(f"label is {arr.shape[1]}x{arr.shape[0]} but its image {Path(image).name} is "
                                 f"{w}x{h}; expected the same size")
            out.append((label, None))
        except DataError as e:
            out.append((label, f"its image: {e}"))
        except Exception as e:  # PIL: unreadable / truncated label, our ValueErrors
            out.append((label, str(e) if isinstance(e, ValueError) else f"unreadable label ({type(e).__name__}: {e})"))
    return out


def _ranges(values: Sequence[int]) -> str:
    """[0, 1, 2, 3, 255] -> '0..3 or 255'."""
    parts, start = [], None
    vals = list(values)
    for i, v in enumerate(vals):
        start = v if start is None else start
        if i + 1 == len(vals) or vals[i + 1] != v + 1:
            parts.append(f"{start}..{v}" if v > start else str(v))
            start = None
    return " or ".join(parts)


def allowed_labels(num_classes: int, reduce_zero_label: bool) -> list[int]:
    top = num_classes if reduce_zero_label else num_classes - 1
    return sorted(set(range(0, top + 1)) | {255})


# ---------------------------------------------------------------- ImageNet-style folders
def check_image_folder(root: str | os.PathLike, workers: int | None = None, max_pixels: int | None = None) -> Report:
    """<root>/{train,val}/<class>/* when train/ or val/ exists, else every image file under root (recursive)."""
    root = Path(root)
    rep = Report("imagenet", str(root))
    if not root.is_dir():
        rep.add(root, "folder not found; expected <root>/train/<class>/*.JPEG or a folder of images")
        return rep
    splits = [root / s for s in ("train", "val") if (root / s).is_dir()]
    files: list[Path] = []
    classes = {}
    for top in splits:
        classes[top.name] = sorted(d.name for d in top.iterdir() if d.is_dir())
        for entry in sorted(top.iterdir()):
            if entry.is_file():
                rep.add(entry, "file outside a class folder; ignored by the loaders", "skip")
            elif not any(entry.iterdir()):
                rep.add(entry, "empty class folder (expected at least one image)", "skip")
        files += sorted(p for p in top.glob("*/*") if p.is_file())
    if not splits:
        files = sorted(p for p in root.rglob("*") if p.is_file())
    if len(classes) == 2 and classes["train"] and classes["val"] and classes["train"] != classes["val"]:
        tr, va = set(classes["train"]), set(classes["val"])
        rep.add(root, f"train has {len(tr)} classes, val {len(va)}; only in train: {sorted(tr - va)[:5]}, "
                      f"only in val: {sorted(va - tr)[:5]}; expected the same class folders")
    images = [p for p in files if p.suffix.lower() in IMG_EXTS]
    for p in files:
        if p.suffix.lower() not in IMG_EXTS:
            rep.add(p, f"not an image extension ({', '.join(IMG_EXTS)}); ignored by the loaders", "skip")
    if not images:
        rep.add(root, f"no images found (extensions {', '.join(IMG_EXTS)})")
    for path, _, err in run_tasks(image_tasks, [(str(p), True, max_pixels) for p in images], workers, "decoding"):
        if err:
            rep.add(path, err)
    rep.checked = len(files)
    return rep


# ---------------------------------------------------------------- COCO
def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_segmentation(seg, img: dict, where: str, rep: Report, ann_file: str) -> None:
    if isinstance(seg, dict):                                        # RLE: {'counts', 'size': [h, w]}
        if "counts" not in seg or list(seg.get("size", [])) != [img["height"], img["width"]]:
            rep.add(ann_file, f"{where}: RLE segmentation needs 'counts' and size == [height, width] = "
                              f"{[img['height'], img['width']]} (got size {seg.get('size')})")
    elif isinstance(seg, list):
        bad = [p for p in seg if not (isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(map(_num, p)))]
        if bad or not seg:
            n = min((len(p) for p in bad if isinstance(p, list)), default=0)
            rep.add(ann_file, f"{where}: {len(bad)} of {len(seg)} polygons invalid (e.g. {n} numbers); expected "
                              f">= 3 points (6 numbers, even count) each; mmdet ignores them", "skip")
    else:
        rep.add(ann_file, f"{where}: segmentation is {type(seg).__name__}; expected polygons (list) or RLE (dict)")


def check_coco_json(ann_file: str | os.PathLike, img_dir: str | os.PathLike, classes: Sequence[str] | None = None,
                    bbox_tol: float = 1.0, rep: Report | None = None) -> tuple[Report, list[tuple[str, int, int]]]:
    """Structure of one instances json -> (report, [(image path, width, height)] for the file checks)."""
    ann_file, img_dir = str(ann_file), Path(img_dir)
    rep = rep if rep is not None else Report("coco", ann_file)
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except FileNotFoundError:
        rep.add(ann_file, "annotation file not found")
        return rep, []
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        rep.add(ann_file, f"not valid JSON ({e}); expected a COCO instances json")
        return rep, []
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict)
               or not isinstance(data.get(k), list)]
    if missing:
        rep.add(ann_file, f"missing top-level key(s) {missing}; expected lists 'images', 'annotations', 'categories'")
        return rep, []
    cats = {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or "name" not in c:
            rep.add(ann_file, f"categories[{i}]: expected {{'id': int, 'name': str}}, got {str(c)[:80]}")
        else:
            cats[c["id"]] = c["name"]
    if classes is not None:
        absent = [n for n in classes if n not in set(cats.values())]
        if absent:
            rep.add(ann_file, f"class names of the config not among the json's categories: {absent[:10]} "
                              f"(mmdet would shift every label); expected the names {sorted(cats.values())[:10]}...")
    images, files = {}, []
    for i, im in enumerate(data["images"]):
        lacking = [k for k in _COCO_IMAGE_KEYS if not isinstance(im, dict) or k not in im]
        if lacking:
            rep.add(ann_file, f"images[{i}] (id {im.get('id') if isinstance(im, dict) else '?'}): missing key(s) "
                              f"{lacking}; expected {list(_COCO_IMAGE_KEYS)}")
        elif not (isinstance(im["width"], int) and isinstance(im["height"], int) and im["width"] > 0 < im["height"]):
            rep.add(ann_file, f"images[{i}] (id {im['id']}): width/height {im['width']}x{im['height']}; "
                              f"expected positive integers")
        elif im["id"] in images:
            rep.add(ann_file, f"images[{i}]: duplicate image id {im['id']}")
        else:
            images[im["id"]] = im
            files.append((str(img_dir / im["file_name"]), im["width"], im["height"]))
    seen_ids, names = set(), set(classes) if classes is not None else None
    unused = 0
    for i, a in enumerate(data["annotations"]):
        lacking = [k for k in _COCO_ANN_KEYS if not isinstance(a, dict) or k not in a]
        where = f"annotations[{i}] (id {a.get('id') if isinstance(a, dict) else '?'})"
        if lacking:
            rep.add(ann_file, f"{where}: missing key(s) {lacking}; expected {list(_COCO_ANN_KEYS)}")
            continue
        if a["id"] in seen_ids:
            rep.add(ann_file, f"{where}: duplicate annotation id (mmdet requires unique ids)")
        seen_ids.add(a["id"])
        img = images.get(a["image_id"])
        if img is None:
            rep.add(ann_file, f"{where}: image_id {a['image_id']} is not in 'images'; the annotation is unused", "skip")
            continue
        if a["category_id"] not in cats:
            rep.add(ann_file, f"{where}: category_id {a['category_id']} unknown; expected one of "
                              f"{sorted(cats)[:20]}{' ...' if len(cats) > 20 else ''}")
            continue
        if names is not None and cats[a["category_id"]] not in names:
            unused += 1
        box = a["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(map(_num, box))):
            rep.add(ann_file, f"{where}: bbox {str(box)[:60]}; expected [x, y, w, h] (4 finite numbers)")
            continue
        x, y, w, h = box
        W, H = img["width"], img["height"]
        if x < -bbox_tol or y < -bbox_tol or x + w > W + bbox_tol or y + h > H + bbox_tol:
            rep.add(ann_file, f"{where}: bbox [x, y, w, h] = {box} leaves the {W}x{H} image (image id "
                              f"{a['image_id']}); expected 0 <= x, x + w <= {W}, 0 <= y, y + h <= {H} "
                              f"(tolerance {bbox_tol} px; [x1, y1, x2, y2] boxes must be converted)")
        elif w < 1 or h < 1 or not _num(a["area"]) or a["area"] <= 0:
            rep.add(ann_file, f"{where}: degenerate box {box} / area {a['area']} (w, h >= 1 and area > 0 "
                              f"expected); mmdet skips it", "skip")
        _check_segmentation(a["segmentation"], img, where, rep, ann_file)
    if unused:
        rep.add(ann_file, f"{unused} annotations of categories outside the config's classes; mmdet ignores them",
                "skip")
    rep.checked += len(data["annotations"]) + len(data["images"])
    return rep, files


def check_coco_images(files: list[tuple[str, int, int]], rep: Report, full: bool = True,
                      workers: int | None = None, max_pixels: int | None = None) -> Report:
    """Every image of the json exists, decodes (full) or has a readable header, and has the size the json states."""
    tasks = [(p, full, max_pixels) for p, _, _ in files]
    want = {p: (w, h) for p, w, h in files}
    for path, size, err in run_tasks(image_tasks, tasks, workers, "images"):
        if err:
            rep.add(path, err)
        elif size != want[path]:
            rep.add(path, f"image is {size[0]}x{size[1]} but the json says {want[path][0]}x{want[path][1]}; "
                          f"expected the same (width x height)")
    rep.checked += len(files)
    return rep


# ---------------------------------------------------------------- ADE20K
def check_ade_split(img_dir: str | os.PathLike, ann_dir: str | os.PathLike, num_classes: int,
                    reduce_zero_label: bool = True, img_suffix: str = ".jpg", seg_suffix: str = ".png",
                    full: bool = True, workers: int | None = None, rep: Report | None = None) -> Report:
    """Image/label pairs by stem: every image has its label; labels decode, are in range, match the image size."""
    img_dir, ann_dir = Path(img_dir), Path(ann_dir)
    rep = rep if rep is not None else Report("ade", str(img_dir.parent.parent))
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            rep.add(d, "folder not found; expected ADEChallengeData2016/{images,annotations}/{training,validation}")
    if rep.errors:
        return rep
    imgs = {p.name[:-len(img_suffix)]: p for p in ann_or_img(img_dir, img_suffix)}
    labels = {p.name[:-len(seg_suffix)]: p for p in ann_or_img(ann_dir, seg_suffix)}
    for stem in sorted(imgs.keys() - labels.keys()):
        rep.add(imgs[stem], f"no label {ann_dir / (stem + seg_suffix)}; expected one label PNG per image")
    for stem in sorted(labels.keys() - imgs.keys()):
        rep.add(labels[stem], f"label without an image {stem}{img_suffix}; unused", "skip")
    if not imgs:
        rep.add(img_dir, f"no *{img_suffix} images")
    allowed = allowed_labels(num_classes, reduce_zero_label)
    tasks = [(str(labels[s]), str(imgs[s]), allowed, full) for s in sorted(imgs.keys() & labels.keys())]
    for label, err in run_tasks(label_tasks, tasks, workers, "labels"):
        if err:
            rep.add(label, err)
    rep.checked += len(imgs) + len(labels)
    return rep


def ann_or_img(folder: Path, suffix: str) -> list[Path]:
    """Files of `folder` (recursive, as mmseg lists them) ending in `suffix`."""
    return sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file())
