"""Dataset checks shared by the pre-flight CLI (pretrain.verify_data) and the transfer entry points.

Each check returns Findings: severity 'error' (the loaders would crash deep inside a framework, or silently train
on wrong data: the run must not start), 'skip' (the loaders drop the item themselves; reported and counted) or
'warn' (valid, used as is, but suspicious: tiny or extremely elongated images; see pretrain.verify_data).
File checks (decoding images, label PNGs) run in parallel over chunks (ProcessPoolExecutor, tqdm progress).

ImageNet folder: <root>/{train,val}/<class>/* (or any folder of images): every image-extension file decodes
  (pretrain.imageio), train and val have the same classes; empty class folders and non-image files are 'skip';
  a split with no decodable image is an error.
COCO instances json (pretrain.datacheck_coco): required keys, unique ids, file_name confined to the image folder,
  bbox [x, y, w, h] inside the image (+- tol px), category ids known, the config's class names present; polygons
  with < 3 points and boxes under 1 px are 'skip' (mmdet drops them); a json with no usable annotation is an error;
  image files present, readable, of the size the json states.
ADE20K (ADEChallengeData2016): every image has a label of the same size; labels are 8-bit single channel (L/P)
  with values in 0..K (reduce_zero_label: 0 = other/ignore, v -> class v-1) or 0..K-1, plus 255 (ignore);
  a split with no image/label pair is an error. Each split is checked on its own.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from pretrain.imageio import IMG_EXTS, DataError, decode_rgb, image_size

_TAGS = {"error": "BAD ", "skip": "SKIP", "warn": "WARN"}


class DatasetError(ValueError):
    """A dataset that fails its pre-flight; the message lists the bad files/keys and what was expected."""


@dataclass
class Finding:
    path: str            # the file concerned (an image, a label, an annotation json)
    reason: str          # what is wrong, and what was expected
    severity: str        # 'error' | 'skip' | 'warn'

    def line(self) -> str:
        return f"{_TAGS.get(self.severity, 'BAD ')} {self.path}: {self.reason}"


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

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warn"]

    def summary(self) -> str:
        n = len(self.warnings)
        return (f"{self.kind} {self.root}: {self.checked} items checked, {len(self.errors)} bad, "
                f"{len(self.skips)} skipped by the loaders" + (f", {n} warning{'s' * (n != 1)}" if n else ""))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "root": self.root, "checked": self.checked, "bad": len(self.errors),
                "skipped": len(self.skips), "warned": len(self.warnings),
                "findings": [asdict(f) for f in self.findings]}

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


def shape_warning(size: tuple[int, int], min_side: int | None, max_aspect: float | None) -> str | None:
    """Why a (w, h) image is suspicious (shorter side < min_side, aspect > max_aspect), or None; 0/None = off."""
    w, h = size
    short, why = min(w, h), []
    if min_side and short < min_side:
        why.append(f"shorter side {short} px < {min_side} (--min-side)")
    if max_aspect and max(w, h) > max_aspect * max(short, 1):
        why.append(f"aspect ratio {max(w, h) / max(short, 1):.1f} > {max_aspect:g} (--max-aspect)")
    return f"{w}x{h} image: {' and '.join(why)}; used as is by the loaders" if why else None


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
def check_image_folder(root: str | os.PathLike, workers: int | None = None, max_pixels: int | None = None,
                       min_side: int | None = None, max_aspect: float | None = None) -> Report:
    """<root>/{train,val}/<class>/* when train/ or val/ exists, else every image file under root (recursive).
    min_side / max_aspect: 'warn' findings for tiny / elongated images (None: not checked)."""
    root = Path(root)
    rep = Report("imagenet", str(root))
    if not root.is_dir():
        rep.add(root, "folder not found; expected <root>/train/<class>/*.JPEG or a folder of images")
        return rep
    splits = [root / s for s in ("train", "val") if (root / s).is_dir()]
    groups: dict[Path, list[Path]] = {}                              # split folder (or root) -> its files
    classes = {}
    for top in splits:
        classes[top.name] = sorted(d.name for d in top.iterdir() if d.is_dir())
        for entry in sorted(top.iterdir()):
            if entry.is_file():
                rep.add(entry, "file outside a class folder; ignored by the loaders", "skip")
            elif not any(entry.iterdir()):
                rep.add(entry, "empty class folder (expected at least one image)", "skip")
        groups[top] = sorted(p for p in top.glob("*/*") if p.is_file())
    if not splits:
        groups[root] = sorted(p for p in root.rglob("*") if p.is_file())
    if len(classes) == 2 and classes["train"] and classes["val"] and classes["train"] != classes["val"]:
        tr, va = set(classes["train"]), set(classes["val"])
        rep.add(root, f"train has {len(tr)} classes, val {len(va)}; only in train: {sorted(tr - va)[:5]}, "
                      f"only in val: {sorted(va - tr)[:5]}; expected the same class folders")
    files = [p for g in groups.values() for p in g]
    images = [p for p in files if p.suffix.lower() in IMG_EXTS]
    for p in files:
        if p.suffix.lower() not in IMG_EXTS:
            rep.add(p, f"not an image extension ({', '.join(IMG_EXTS)}); ignored by the loaders", "skip")
    bad = set()
    for path, size, err in run_tasks(image_tasks, [(str(p), True, max_pixels) for p in images], workers, "decoding"):
        if err:
            rep.add(path, err)
            bad.add(path)
        elif (why := shape_warning(size, min_side, max_aspect)):
            rep.add(path, why, "warn")
    for top, group in groups.items():                                # a split left empty is an error
        imgs = [p for p in group if p.suffix.lower() in IMG_EXTS]
        where = f"split {top.name}/ " if top != root else ""
        if not imgs:
            rep.add(top, f"{where}no images found (extensions {', '.join(IMG_EXTS)}; {len(group)} other files); "
                         f"the split would be empty")
        elif all(str(p) in bad for p in imgs):
            rep.add(top, f"{where}left empty: none of its {len(imgs)} image files decodes; expected at least one "
                         f"usable image")
    rep.checked = len(files)
    return rep


# ---------------------------------------------------------------- ADE20K
def check_ade_split(img_dir: str | os.PathLike, ann_dir: str | os.PathLike, num_classes: int,
                    reduce_zero_label: bool = True, img_suffix: str = ".jpg", seg_suffix: str = ".png",
                    full: bool = True, workers: int | None = None, rep: Report | None = None) -> Report:
    """Image/label pairs by stem: every image has its label; labels decode, are in range, match the image size.
    Only this split's own missing folders stop its checks (rep may hold other splits' findings)."""
    img_dir, ann_dir = Path(img_dir), Path(ann_dir)
    rep = rep if rep is not None else Report("ade", str(img_dir.parent.parent))
    missing = [d for d in (img_dir, ann_dir) if not d.is_dir()]
    for d in missing:
        rep.add(d, "folder not found; expected ADEChallengeData2016/{images,annotations}/{training,validation}")
    if missing:
        return rep
    imgs = {p.name[:-len(img_suffix)]: p for p in ann_or_img(img_dir, img_suffix)}
    labels = {p.name[:-len(seg_suffix)]: p for p in ann_or_img(ann_dir, seg_suffix)}
    for stem in sorted(imgs.keys() - labels.keys()):
        rep.add(imgs[stem], f"no label {ann_dir / (stem + seg_suffix)}; expected one label PNG per image")
    for stem in sorted(labels.keys() - imgs.keys()):
        rep.add(labels[stem], f"label without an image {stem}{img_suffix}; unused", "skip")
    pairs = sorted(imgs.keys() & labels.keys())
    if not pairs:
        rep.add(img_dir, f"split {img_dir.name} is empty: no image/label pairs ({len(imgs)} *{img_suffix} images "
                         f"here, {len(labels)} *{seg_suffix} labels in {ann_dir}); expected X{img_suffix} images "
                         f"with X{seg_suffix} labels of the same name")
    allowed = allowed_labels(num_classes, reduce_zero_label)
    tasks = [(str(labels[s]), str(imgs[s]), allowed, full) for s in pairs]
    for label, err in run_tasks(label_tasks, tasks, workers, "labels"):
        if err:
            rep.add(label, err)
    rep.checked += len(imgs) + len(labels)
    return rep


def ann_or_img(folder: Path, suffix: str) -> list[Path]:
    """Files of `folder` (recursive, as mmseg lists them) ending in `suffix`."""
    return sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file())
