"""COCO instances json + image checks (see pretrain.datacheck; import the names from there).

file_name confinement: an image's file_name must be a relative path that stays inside the split's image folder
(no absolute path, no '..' component, no symbolic link leading out of it); anything else is an error and the
file is never opened. Link the image folder itself, not each file, to keep images elsewhere.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

from pretrain.datacheck import Report, image_tasks, run_tasks, shape_warning

_COCO_IMAGE_KEYS = ("id", "file_name", "width", "height")
_COCO_ANN_KEYS = ("id", "image_id", "category_id", "bbox", "area", "segmentation")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ident(v) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def confined_file(img_dir: Path, file_name, real_dir: str | None = None) -> tuple[str | None, str | None]:
    """(path of file_name inside img_dir, None), or (None, why it leaves / is not a file name). Opens nothing."""
    if not isinstance(file_name, str) or not file_name:
        return None, "expected a non-empty string, a path relative to the image folder"
    if "\x00" in file_name:
        return None, "contains a NUL byte"
    if os.path.isabs(file_name):
        return None, "is an absolute path; expected a path relative to the image folder"
    if ".." in Path(file_name).parts:
        return None, "has a '..' component; expected a path inside the image folder"
    path = os.path.join(img_dir, file_name)
    real_dir = real_dir or os.path.realpath(img_dir)
    if os.sep in file_name or os.path.islink(path):                  # only then can it resolve elsewhere
        real = os.path.realpath(path)
        if not real.startswith(real_dir.rstrip(os.sep) + os.sep):
            return None, f"resolves to {real}, outside the image folder (a symbolic link?)"
    return path, None


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


def _load(ann_file: str, rep: Report) -> dict | None:
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except FileNotFoundError:
        rep.add(ann_file, "annotation file not found")
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        rep.add(ann_file, f"not valid JSON ({e}); expected a COCO instances json")
        return None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict)
               or not isinstance(data.get(k), list)]
    if missing:
        rep.add(ann_file, f"missing top-level key(s) {missing}; expected lists 'images', 'annotations', 'categories'")
        return None
    return data


def _images(data: dict, ann_file: str, img_dir: Path, rep: Report) -> tuple[dict, set, list]:
    """images by id, ids whose file_name is refused, [(path, w, h)] of the confined files."""
    images, refused, files = {}, set(), []
    real_dir = os.path.realpath(img_dir)
    for i, im in enumerate(data["images"]):
        lacking = [k for k in _COCO_IMAGE_KEYS if not isinstance(im, dict) or k not in im]
        if lacking:
            rep.add(ann_file, f"images[{i}] (id {im.get('id') if isinstance(im, dict) else '?'}): missing key(s) "
                              f"{lacking}; expected {list(_COCO_IMAGE_KEYS)}")
        elif not (isinstance(im["width"], int) and isinstance(im["height"], int) and im["width"] > 0 < im["height"]):
            rep.add(ann_file, f"images[{i}] (id {im['id']}): width/height {im['width']}x{im['height']}; "
                              f"expected positive integers")
        elif not _ident(im["id"]):
            rep.add(ann_file, f"images[{i}]: id {im['id']!r}; expected an integer")
        elif im["id"] in images:
            rep.add(ann_file, f"images[{i}]: duplicate image id {im['id']}")
        else:
            images[im["id"]] = im
            path, why = confined_file(img_dir, im["file_name"], real_dir)
            if why:
                refused.add(im["id"])
                rep.add(ann_file, f"images[{i}] (id {im['id']}): file_name {im['file_name']!r} {why} ({img_dir}); "
                                  f"the file is not read")
            else:
                files.append((path, im["width"], im["height"]))
    return images, refused, files


def check_coco_json(ann_file: str | os.PathLike, img_dir: str | os.PathLike, classes: Sequence[str] | None = None,
                    bbox_tol: float = 1.0, rep: Report | None = None,
                    meta: dict | None = None) -> tuple[Report, list[tuple[str, int, int]]]:
    """Structure of one instances json -> (report, [(image path, width, height)] for the file checks).
    meta (optional, filled in): 'categories' {id: name}, 'usable' (annotations a loader would train on)."""
    ann_file, img_dir = str(ann_file), Path(img_dir)
    rep = rep if rep is not None else Report("coco", ann_file)
    data = _load(ann_file, rep)
    if data is None:
        return rep, []
    cats = {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or "name" not in c:
            rep.add(ann_file, f"categories[{i}]: expected {{'id': int, 'name': str}}, got {str(c)[:80]}")
        else:
            cats[c["id"]] = c["name"]
    if meta is not None:
        meta["categories"] = dict(cats)
    if classes is not None:
        absent = [n for n in classes if n not in set(cats.values())]
        if absent:
            rep.add(ann_file, f"{len(absent)} of the config's {len(classes)} class names are not among the json's "
                              f"{len(cats)} categories: {absent[:10]} (mmdet would shift every label); expected the "
                              f"names {sorted(cats.values())[:10]}...")
    images, refused, files = _images(data, ann_file, img_dir, rep)
    seen_ids, names = set(), set(classes) if classes is not None else None
    unused = usable = crowd = 0
    for i, a in enumerate(data["annotations"]):
        before = len(rep.findings)
        _check_annotation(i, a, images, cats, seen_ids, bbox_tol, rep, ann_file)
        if len(rep.findings) > before or not isinstance(a, dict) or a.get("image_id") in refused:
            continue
        if names is not None and cats[a["category_id"]] not in names:
            unused += 1
        elif a.get("iscrowd"):
            crowd += 1
        else:
            usable += 1
    if unused:
        rep.add(ann_file, f"{unused} annotations of categories outside the config's classes; mmdet ignores them",
                "skip")
    n = len(data["annotations"])
    if not images:
        rep.add(ann_file, f"no usable image (of {len(data['images'])} in 'images'); the split would be empty")
    elif not usable:
        rep.add(ann_file, f"no usable annotation: {n} annotations, {crowd} crowd, {unused} outside the config's "
                          f"classes, {n - crowd - unused} with errors, skipped or of refused images; the split "
                          f"would be empty (mmdet/detectron2 stop later with 'No valid data found' or similar)")
    if meta is not None:
        meta["usable"] = usable
    rep.checked += n + len(data["images"])
    return rep, files


def _check_annotation(i: int, a, images: dict, cats: dict, seen_ids: set, bbox_tol: float, rep: Report,
                      ann_file: str) -> None:
    lacking = [k for k in _COCO_ANN_KEYS if not isinstance(a, dict) or k not in a]
    where = f"annotations[{i}] (id {a.get('id') if isinstance(a, dict) else '?'})"
    if lacking:
        rep.add(ann_file, f"{where}: missing key(s) {lacking}; expected {list(_COCO_ANN_KEYS)}")
        return
    odd = [k for k in ("id", "image_id", "category_id") if not _ident(a[k])]
    if odd:
        rep.add(ann_file, f"{where}: {', '.join(f'{k} {a[k]!r}' for k in odd)}; expected integers")
        return
    if a["id"] in seen_ids:
        rep.add(ann_file, f"{where}: duplicate annotation id (mmdet requires unique ids)")
    seen_ids.add(a["id"])
    img = images.get(a["image_id"])
    if img is None:
        rep.add(ann_file, f"{where}: image_id {a['image_id']} is not in 'images'; the annotation is unused", "skip")
        return
    if a["category_id"] not in cats:
        rep.add(ann_file, f"{where}: category_id {a['category_id']} unknown; expected one of "
                          f"{sorted(cats)[:20]}{' ...' if len(cats) > 20 else ''}")
        return
    box = a["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(map(_num, box))):
        rep.add(ann_file, f"{where}: bbox {str(box)[:60]}; expected [x, y, w, h] (4 finite numbers)")
        return
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


def check_coco_images(files: list[tuple[str, int, int]], rep: Report, full: bool = True,
                      workers: int | None = None, max_pixels: int | None = None,
                      min_side: int | None = None, max_aspect: float | None = None) -> Report:
    """Every image of the json exists, decodes (full) or has a readable header, and has the size the json states.
    min_side / max_aspect: 'warn' findings for tiny / elongated images (None: not checked)."""
    tasks = [(p, full, max_pixels) for p, _, _ in files]
    want = {p: (w, h) for p, w, h in files}
    for path, size, err in run_tasks(image_tasks, tasks, workers, "images"):
        if err:
            rep.add(path, err)
        elif size != want[path]:
            rep.add(path, f"image is {size[0]}x{size[1]} but the json says {want[path][0]}x{want[path][1]}; "
                          f"expected the same (width x height)")
        elif (why := shape_warning(size, min_side, max_aspect)):
            rep.add(path, why, "warn")
    rep.checked += len(files)
    return rep
