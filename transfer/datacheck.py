"""Data pre-flight of the mmdet / mmseg entry points: the annotations a config will read are checked
(pretrain.datacheck) BEFORE the Runner is built, so a malformed COCO json or an out-of-range ADE label ends with one
message naming the file and the key, not a traceback from inside mmdet/mmseg (or a silently wrong run).

What runs here (fast; `python -m pretrain.verify_data` decodes every image):
  mmdet (CocoDataset and subclasses): the json structure (pretrain.datacheck.check_coco_json) against the config's
    class names, then every image's header: present, readable, the size the json states.
  mmseg (BaseSegDataset and subclasses): image/label pairs, label mode and values in range for the dataset's
    classes and reduce_zero_label, label size == image size (image headers only).
The result is cached in <work_dir>/data_check.json, keyed by the annotation files' and folders' size/mtime: a
resumed run with unchanged data does not repeat the check.
"""
from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path

from pretrain.datacheck import Report, check_ade_split, check_coco_images, check_coco_json
from pretrain.fileio import atomic_write_json


def config_datasets(cfg):
    """(split, dataset cfg) for the train/val/test dataloaders, unwrapping RepeatDataset-style wrappers."""
    for split in ("train", "val", "test"):
        dl = cfg.get(f"{split}_dataloader")
        if not dl:
            continue
        ds = dl["dataset"]
        while "dataset" in ds:
            ds = ds["dataset"]
        yield split, ds


def _stamp(paths: list[Path]) -> list:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(p), None, None])
    return out


def _dataset_class(scope: str, ds_type):
    import importlib
    if not isinstance(ds_type, str):
        return ds_type
    registry = importlib.import_module(f"{scope}.registry").DATASETS
    return registry.get(ds_type)


def _default(cls, name: str, fallback):
    p = inspect.signature(cls.__init__).parameters.get(name) if cls is not None else None
    return p.default if p is not None and p.default is not inspect.Parameter.empty else fallback


def _classes(ds: dict, cls) -> list[str] | None:
    meta = ds.get("metainfo") or {}
    names = meta.get("classes") or (getattr(cls, "METAINFO", {}) or {}).get("classes")
    return list(names) if names else None


def plan(cfg, scope: str) -> list[dict]:
    """The distinct (dataset files, settings) the config's train/val/test dataloaders read."""
    jobs: dict[str, dict] = {}
    for split, ds in config_datasets(cfg):
        root, prefix = ds.get("data_root") or "", ds.get("data_prefix") or {}
        cls = _dataset_class(scope, ds.get("type"))
        if scope == "mmdet":
            job = {"kind": "coco", "ann_file": os.path.join(root, ds.get("ann_file", "")),
                   "img_dir": os.path.join(root, prefix.get("img", "")), "classes": _classes(ds, cls)}
        else:
            names, head = _classes(ds, cls), cfg.model.get("decode_head")
            k = len(names) if names else head.get("num_classes") if isinstance(head, dict) else None
            job = {"kind": "ade", "img_dir": os.path.join(root, prefix.get("img_path", "")),
                   "ann_dir": os.path.join(root, prefix.get("seg_map_path", "")), "num_classes": k,
                   "reduce_zero_label": ds.get("reduce_zero_label", _default(cls, "reduce_zero_label", False)),
                   "img_suffix": ds.get("img_suffix", _default(cls, "img_suffix", ".jpg")),
                   "seg_suffix": ds.get("seg_map_suffix", _default(cls, "seg_map_suffix", ".png"))}
        jobs.setdefault(json.dumps(job, sort_keys=True), {**job, "splits": []})["splits"].append(split)
    return list(jobs.values())


def _check(job: dict, rep: Report, workers: int | None) -> None:
    if job["kind"] == "coco":
        _, files = check_coco_json(job["ann_file"], job["img_dir"], classes=job["classes"], rep=rep)
        check_coco_images(files, rep, full=False, workers=workers)
    elif job["num_classes"] is None:
        rep.add(job["ann_dir"], "neither the dataset (metainfo.classes) nor model.decode_head.num_classes gives the "
                                "number of classes; cannot check the label values")
    else:
        check_ade_split(job["img_dir"], job["ann_dir"], job["num_classes"], job["reduce_zero_label"],
                        job["img_suffix"], job["seg_suffix"], full=False, workers=workers, rep=rep)


def preflight(cfg, scope: str, work_dir: str | os.PathLike | None = None, workers: int | None = None) -> Report:
    """Check what the config's datasets read; DatasetError (naming files and keys) if anything is bad."""
    jobs = plan(cfg, scope)
    paths = [Path(j[k]) for j in jobs for k in ("ann_file", "img_dir", "ann_dir") if k in j]
    stamp = {"jobs": jobs, "files": _stamp(paths)}
    cache = Path(work_dir) / "data_check.json" if work_dir else None
    if cache is not None and cache.is_file():
        try:
            old = json.loads(cache.read_text())
            if old.get("stamp") == stamp and old.get("report", {}).get("bad") == 0:
                return Report(scope, "cached", old["report"]["checked"])
        except (json.JSONDecodeError, AttributeError, KeyError):
            pass
    rep = Report(f"{scope} data", os.path.commonpath([str(p) for p in paths]) if paths else "?")
    for job in jobs:
        _check(job, rep, workers)
    if rep.skips:
        print(f"data pre-flight: {len(rep.skips)} items the loaders will skip, e.g. {rep.skips[0].line()}",
              file=sys.stderr)
    if cache is not None:
        atomic_write_json(cache, {"stamp": stamp, "report": rep.to_dict()})
    rep.raise_if_bad(where=cache)
    return rep
