"""Data pre-flight of the mmdet / mmseg / detectron2 entry points: the annotations a config will read are checked
(pretrain.datacheck) BEFORE the Runner is built, so a malformed COCO json or an out-of-range ADE label ends with one
message naming the file and the key, not a traceback from inside mmdet/mmseg (or a silently wrong run).

What runs here (fast; `python -m pretrain.verify_data` decodes every image):
  mmdet (CocoDataset and subclasses): the json structure (pretrain.datacheck_coco.check_coco_json) against the config's
    class names, then every image's header: present, readable, the size the json states.
  mmseg (BaseSegDataset and subclasses): image/label pairs, label mode and values in range for the dataset's
    classes and reduce_zero_label, label size == image size (image headers only).
  Class counts: every head's num_classes (mmseg decode/auxiliary heads; mmdet roi_head bbox/mask heads, cascade
    lists, single-stage bbox_head) == the dataset's classes (metainfo.classes, else the dataset class's METAINFO;
    mmdet without either: the json's categories) and, mmseg, == the data's own count where its root has a
    dataset.json card with `num_classes` / `classes` (the toy world writes one).
  detectron2 (preflight_coco_root): both splits of a COCO-2017 root, as mmdet, plus the same categories in both.
The result is cached in <work_dir>/data_check.json, keyed by a digest of the size + mtime of every file under the
folders and of the files the check reads (os.scandir; nothing decoded): a resumed run with unchanged data does
not repeat the check, an image damaged in place is checked again.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import stat
import sys
from pathlib import Path

from pretrain.datacheck import Report, check_ade_split
from pretrain.datacheck_coco import check_coco_images, check_coco_json
from pretrain.fileio import atomic_write_json

CARD = "dataset.json"          # transfer.results.DATASET_CARD
STAMP_VERSION = 2


def _dataset_entries(cfg):
    """(split, config key of the dataset, dataset cfg) per dataloader, unwrapping RepeatDataset-style wrappers."""
    for split in ("train", "val", "test"):
        dl = cfg.get(f"{split}_dataloader")
        if not dl:
            continue
        ds, key = dl["dataset"], f"{split}_dataloader.dataset"
        while "dataset" in ds:
            ds, key = ds["dataset"], key + ".dataset"
        yield split, key, ds


def config_datasets(cfg):
    """(split, dataset cfg) for the train/val/test dataloaders, unwrapping RepeatDataset-style wrappers."""
    for split, _, ds in _dataset_entries(cfg):
        yield split, ds


def _digest(paths: list[str]) -> dict:
    """sha256 over the sorted (path, size, mtime_ns) of the given files and every file under the given folders."""
    entries: dict[str, tuple] = {}
    seen, stack = set(), list(dict.fromkeys(paths))
    while stack:
        p = stack.pop()
        try:
            st = os.stat(p)
        except (OSError, ValueError):
            entries[p] = (None, None)
            continue
        if not stat.S_ISDIR(st.st_mode):
            entries[p] = (st.st_size, st.st_mtime_ns)
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(p) as it:
                for e in it:
                    if e.is_dir():
                        stack.append(e.path)
                        continue
                    try:
                        s = e.stat()
                        entries[e.path] = (s.st_size, s.st_mtime_ns)
                    except OSError:
                        entries[e.path] = (None, None)
        except OSError:
            entries[p] = ("unreadable folder", None)
    h = hashlib.sha256()
    for p in sorted(entries):
        h.update(json.dumps([p, *entries[p]]).encode() + b"\n")
    return {"files": len(entries), "sha256": h.hexdigest()}


def _dataset_class(scope: str, ds_type):
    import importlib
    if not isinstance(ds_type, str):
        return ds_type
    registry = importlib.import_module(f"{scope}.registry").DATASETS
    return registry.get(ds_type)


def _default(cls, name: str, fallback):
    p = inspect.signature(cls.__init__).parameters.get(name) if cls is not None else None
    return p.default if p is not None and p.default is not inspect.Parameter.empty else fallback


def _classes(ds: dict, cls, key: str) -> tuple[list[str] | None, str | None]:
    """The dataset's class names and where they came from."""
    names = (ds.get("metainfo") or {}).get("classes")
    if names:
        return list(names), f"{key}.metainfo.classes"
    names = (getattr(cls, "METAINFO", {}) or {}).get("classes")
    return (list(names), f"{cls.__name__}.METAINFO['classes']") if names else (None, None)


def head_classes(cfg, scope: str) -> list[tuple[str, int]]:
    """[('model.decode_head.num_classes', 150), ...]: every head of the model that states num_classes."""
    model = cfg.get("model") or {}
    if scope == "mmseg":
        spots = [("model.decode_head", model.get("decode_head")), ("model.auxiliary_head", model.get("auxiliary_head"))]
    else:
        roi = model.get("roi_head") or {}
        spots = [("model.roi_head.bbox_head", roi.get("bbox_head")), ("model.roi_head.mask_head", roi.get("mask_head")),
                 ("model.bbox_head", model.get("bbox_head"))]
    out = []
    for key, head in spots:
        many = isinstance(head, (list, tuple))
        for i, h in enumerate(head if many else [head]):
            n = h.get("num_classes") if isinstance(h, dict) else None
            if isinstance(n, int) and not isinstance(n, bool):
                out.append((f"{key}{f'[{i}]' if many else ''}.num_classes", n))
    return out


def plan(cfg, scope: str) -> list[dict]:
    """The distinct (dataset files, settings) the config's train/val/test dataloaders read."""
    jobs: dict[str, dict] = {}
    for split, key, ds in _dataset_entries(cfg):
        root, prefix = ds.get("data_root") or "", ds.get("data_prefix") or {}
        cls = _dataset_class(scope, ds.get("type"))
        names, src = _classes(ds, cls, key)
        if scope == "mmdet":
            job = {"kind": "coco", "ann_file": os.path.join(root, ds.get("ann_file", "")),
                   "img_dir": os.path.join(root, prefix.get("img", "")), "classes": names}
        else:
            head = cfg.model.get("decode_head")
            head = head[-1] if isinstance(head, (list, tuple)) and head else head
            k = len(names) if names else head.get("num_classes") if isinstance(head, dict) else None
            job = {"kind": "ade", "img_dir": os.path.join(root, prefix.get("img_path", "")),
                   "ann_dir": os.path.join(root, prefix.get("seg_map_path", "")), "num_classes": k,
                   "n_classes": len(names) if names else None, "data_root": root,
                   "reduce_zero_label": ds.get("reduce_zero_label", _default(cls, "reduce_zero_label", False)),
                   "img_suffix": ds.get("img_suffix", _default(cls, "img_suffix", ".jpg")),
                   "seg_suffix": ds.get("seg_map_suffix", _default(cls, "seg_map_suffix", ".png"))}
        entry = jobs.setdefault(json.dumps(job, sort_keys=True), {**job, "classes_src": src, "splits": []})
        entry["splits"].append(split)
    return list(jobs.values())


def card_classes(root: str | os.PathLike, rep: Report) -> int | None:
    """The class count a dataset root's dataset.json card states (num_classes and/or classes), else None."""
    card = Path(root) / CARD
    if not card.is_file():
        return None
    try:
        spec = json.loads(card.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        rep.add(card, f"unreadable dataset card ({type(e).__name__}: {e}); expected a JSON object")
        return None
    if not isinstance(spec, dict):
        rep.add(card, f"dataset card is a {type(spec).__name__}; expected a JSON object")
        return None
    n, names = spec.get("num_classes"), spec.get("classes")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        rep.add(card, f"num_classes {n!r}; expected a positive integer")
        return None
    if names is not None and not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
        rep.add(card, f"classes {str(names)[:60]}; expected a list of class names")
        return None
    if n is not None and names is not None and n != len(names):
        rep.add(card, f"num_classes {n} but {len(names)} names in 'classes'; expected the same number")
        return None
    return n if n is not None else len(names) if names is not None else None


def check_class_counts(cfg, scope: str, jobs: list[dict], rep: Report) -> list[tuple[str, int]]:
    """Each head's num_classes vs the datasets' classes and (mmseg) the data's card; returns the heads."""
    heads = head_classes(cfg, scope)
    where = getattr(cfg, "filename", None) or "the config"
    done = set()
    for job in jobs:
        n = len(job["classes"]) if job.get("classes") else job.get("n_classes")
        if n is not None and job["classes_src"] not in done:
            done.add(job["classes_src"])
            for key, k in heads:
                if k != n:
                    rep.add(where, f"{key} = {k} but {job['classes_src']} lists {n} classes; expected the same")
        root = job.get("data_root")
        if scope == "mmseg" and root is not None and ("card", root) not in done:
            done.add(("card", root))
            n = card_classes(root, rep)
            for key, k in heads if n is not None else ():
                if k != n:
                    rep.add(Path(root) / CARD, f"{key} = {k} but the dataset at {root} has {n} classes ({CARD})")
    return heads


def _check(job: dict, rep: Report, workers: int | None, heads: list[tuple[str, int]]) -> None:
    if job["kind"] == "coco":
        meta: dict = {}
        _, files = check_coco_json(job["ann_file"], job["img_dir"], classes=job["classes"], rep=rep, meta=meta)
        check_coco_images(files, rep, full=False, workers=workers)
        cats = meta.get("categories")
        for key, k in heads if job["classes"] is None and cats is not None else ():
            if k != len(cats):
                rep.add(job["ann_file"], f"{key} = {k} but the json has {len(cats)} categories (the config "
                                         f"gives no classes); expected the same")
    elif job["num_classes"] is None:
        rep.add(job["ann_dir"], "neither the dataset (metainfo.classes) nor model.decode_head.num_classes gives the "
                                "number of classes; cannot check the label values")
    else:
        check_ade_split(job["img_dir"], job["ann_dir"], job["num_classes"], job["reduce_zero_label"],
                        job["img_suffix"], job["seg_suffix"], full=False, workers=workers, rep=rep)


def print_skips(rep: Report) -> None:
    if rep.skips:
        print(f"data pre-flight: {len(rep.skips)} items the loaders will skip, e.g. {rep.skips[0].line()}",
              file=sys.stderr)


def preflight(cfg, scope: str, work_dir: str | os.PathLike | None = None, workers: int | None = None) -> Report:
    """Check what the config's datasets read; DatasetError (naming files and keys) if anything is bad."""
    jobs = plan(cfg, scope)
    paths = [j[k] for j in jobs for k in ("ann_file", "img_dir", "ann_dir") if k in j]
    cards = [os.path.join(j["data_root"], CARD) for j in jobs if "data_root" in j]
    stamp = {"version": STAMP_VERSION, "jobs": jobs, "heads": head_classes(cfg, scope),
             "data": _digest(paths + cards)}
    stamp = json.loads(json.dumps(stamp))                      # tuples -> lists, as read back from the cache
    cache = Path(work_dir) / "data_check.json" if work_dir else None
    if cache is not None and cache.is_file():
        try:
            old = json.loads(cache.read_text())
            if old.get("stamp") == stamp and old.get("report", {}).get("bad") == 0:
                return Report(scope, "cached", old["report"]["checked"])
        except (json.JSONDecodeError, AttributeError, KeyError):
            pass
    rep = Report(f"{scope} data", os.path.commonpath(paths) if paths else "?")
    heads = check_class_counts(cfg, scope, jobs, rep)
    for job in jobs:
        _check(job, rep, workers, heads)
    print_skips(rep)
    if cache is not None:
        atomic_write_json(cache, {"stamp": stamp, "report": rep.to_dict()})
    rep.raise_if_bad(where=cache)
    return rep


def preflight_coco_root(root: str | os.PathLike, workers: int | None = None) -> Report:
    """A COCO-2017 root (annotations/instances_{train,val}2017.json + {train,val}2017/), both splits: the json
    checks, every image's header, the same categories in both; skips printed, DatasetError on errors."""
    root = Path(root)
    rep = Report("detectron2 data", str(root))
    splits = {s: (root / "annotations" / f"instances_{s}2017.json", root / f"{s}2017") for s in ("train", "val")}
    missing = [str(p) for pair in splits.values() for p in pair if not p.exists()]
    if missing:
        rep.add(root, f"not a COCO 2017 layout, missing {missing}; expected annotations/instances_{{train,val}}"
                      f"2017.json and image folders {{train,val}}2017/")
    else:
        cats = {}
        for s, (ann, images) in splits.items():
            meta: dict = {}
            _, files = check_coco_json(ann, images, rep=rep, meta=meta)
            check_coco_images(files, rep, full=False, workers=workers)
            cats[s] = meta.get("categories")
        tr, va = cats["train"], cats["val"]
        if tr is not None and va is not None and tr != va:
            diff = sorted(set(tr.items()) ^ set(va.items()))[:5]
            rep.add(splits["val"][0], f"categories differ from those of {splits['train'][0].name} ({len(va)} vs "
                                      f"{len(tr)}; e.g. (id, name) {diff}); detectron2 maps each json's ids on its "
                                      f"own, so the classes would not correspond; expected the same categories")
    print_skips(rep)
    rep.raise_if_bad()
    return rep
