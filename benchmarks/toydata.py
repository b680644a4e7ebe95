"""The built-in toy world, written in the real dataset formats, so the same loaders serve toy and real runs.

    python -m benchmarks.toydata OUT [--size 64] [--dense-size 96] [--seed 0] [--n-train 400] [--n-val 150]
                                     [--n-dense-train 400] [--n-dense-val 200] [--force] [--no-check]

OUT/imagenet/{train,val}/<wnid>/*.JPEG       one dominant shape per image (label = folder), `size` px;
                                             OUT/imagenet/LOC_synset_mapping.txt: "<wnid> <class name>" lines
OUT/coco/{train2017,val2017}/<%012d id>.jpg  several shapes per image, `dense_size` px;
OUT/coco/annotations/instances_{train,val}2017.json
                                             polygons traced from the visible (occlusion-aware) masks, area = visible
                                             pixel count, bbox [x, y, w, h] of the visible mask, iscrowd=1 crowd
                                             clusters as uncompressed RLE (as in COCO 2017); category ids 1, 3, 5, ...
                                             (not contiguous, to catch id-mapping bugs)
OUT/ade/ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_{train,val}_%08d.{jpg,png}
                                             label PNG (uint8): 0 = other/ignore (crowd clusters),
                                             v in 1..9 = ADE_CLASSES[v - 1] ("background", then the 8 shapes).
                                             mmseg: reduce_zero_label=True and, since K != 150, a BaseSegDataset with
                                             metainfo=dict(classes=..., palette=...) from OUT/ade/classes.json
                                             (ADE20KDataset insists on its own 150 names).
OUT/{imagenet,coco,ade,ade/ADEChallengeData2016}/dataset.json
                                             dataset cards {"name": "toy_imagenet" | "toy_coco" | "toy_ade", "toy":
                                             true, "num_classes": K, "classes": [...]}: every entry point labels its
                                             result.json with the dataset it read (transfer.results.result_dataset),
                                             so a toy run is a toy run everywhere; the mmseg pre-flight checks the
                                             heads' num_classes against K (transfer.datacheck)
OUT/toyworld.json                            marker with the parameters: a finished world is not regenerated.

Deterministic: image i of split s is drawn from np.random.default_rng([seed, s, i]) (same seed -> same bytes).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmarks.toyrender import CLASSES, classification_image, dense_scene
from pretrain.fileio import atomic_write_json, atomic_write_text

FORMAT = "a2mim-toyworld/2"
WNIDS = tuple(f"n{90000001 + 1111 * i:08d}" for i in range(len(CLASSES)))  # wnid-like: 'n' + 8 digits
COCO_CAT_IDS = tuple(1 + 2 * i for i in range(len(CLASSES)))              # 1, 3, 5, ... on purpose
ADE_CLASSES = ("background",) + CLASSES                                      # label PNG value v -> ADE_CLASSES[v-1]
ADE_PALETTE = [[120, 120, 120]] + [  # RGB: grey background, then a jet colour per shape
    [int(c) for c in cv2.applyColorMap(np.uint8([[32 * i]]), cv2.COLORMAP_JET)[0, 0, ::-1]] for i in range(len(CLASSES))]
STREAMS = {"imagenet/train": 0, "imagenet/val": 1, "coco/train": 2, "coco/val": 3, "ade/train": 4, "ade/val": 5}
SUBDIRS = ("imagenet", "coco", "ade")
CARDS = {"imagenet": "toy_imagenet", "coco": "toy_coco", "ade": "toy_ade", "ade_data_root": "toy_ade"}
UPSAMPLE = 4  # contour tracing on a 4x nearest-upsampled mask: vertices lie 1/8 px inside the true pixel boundary


def _rng(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[stream], index])


def _save_jpeg(path: Path, img: np.ndarray) -> None:
    Image.fromarray(img).save(path, "JPEG", quality=90)


# ---------------------------------------------------------------- masks -> COCO segmentations
def _bridge(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Join a hole to its outer ring by a zero-width cut at their closest vertices (COCO polygons have no holes;
    the cut's two edges cancel when rasterised). outer (n, 2), hole (m, 2) -> (n + m + 2, 2)."""
    d = ((outer[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(d.argmin()), d.shape)
    return np.concatenate([outer[:i + 1], hole[j:], hole[:j + 1], outer[i:]])


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.5) -> list[list[float]]:
    """(H, W) bool -> COCO polygons [[x1, y1, x2, y2, ...], ...] in continuous pixel coordinates, one polygon per
    connected part (holes cut in), simplified to `tolerance` px. Parts too small for 3 vertices are dropped."""
    up = np.kron(mask.astype(np.uint8), np.ones((UPSAMPLE, UPSAMPLE), np.uint8))
    contours, hier = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hier is None:
        return []
    hier = hier[0]  # (n, 4): next, previous, first child, parent

    def simplify(c: np.ndarray) -> np.ndarray:
        return cv2.approxPolyDP(c, tolerance * UPSAMPLE, True).reshape(-1, 2).astype(np.float64)

    polys = []
    for i, c in enumerate(contours):
        if hier[i][3] != -1:  # a hole: handled with its parent
            continue
        ring, child = simplify(c), hier[i][2]
        while child != -1:
            hole = simplify(contours[child])
            if len(hole) >= 3:
                ring = _bridge(ring, hole)
            child = hier[child][0]
        if len(ring) >= 3:
            polys.append([round(float(v), 3) for v in ((ring + 0.5) / UPSAMPLE).reshape(-1)])
    return polys


def mask_to_rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE: run lengths over the column-major flattened mask, starting with a run of zeros."""
    flat = mask.T.reshape(-1).astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def mask_bbox(mask: np.ndarray) -> list[float]:
    """[x, y, w, h] of the mask's pixels (pixel (r, c) covers [c, c+1) x [r, r+1))."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


# ---------------------------------------------------------------- the three formats
def write_imagenet(root: Path, size: int, seed: int, n_train: int, n_val: int) -> None:
    for split, n in (("train", n_train), ("val", n_val)):
        for c, wnid in enumerate(WNIDS):
            d = root / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                idx = k * len(CLASSES) + c  # interleaved over classes, like ImageNet's val numbering
                name = f"{wnid}_{k}.JPEG" if split == "train" else f"ILSVRC2012_val_{idx + 1:08d}.JPEG"
                _save_jpeg(d / name, classification_image(_rng(seed, f"imagenet/{split}", idx), size, c))
    atomic_write_text(root / "LOC_synset_mapping.txt", "".join(f"{w} {n}\n" for w, n in zip(WNIDS, CLASSES)))


def _coco_annotations(scene, img_id: int) -> list[dict]:
    anns, parts = [], [(lab, m, 0) for lab, m in scene.instances]
    if scene.crowd is not None:
        parts.append((scene.crowd[0], scene.crowd[1], 1))
    for k, (label, mask, crowd) in enumerate(parts):
        seg = mask_to_rle(mask) if crowd else mask_to_polygons(mask)
        if not seg:
            continue
        anns.append({"id": img_id * 100 + k, "image_id": img_id, "category_id": COCO_CAT_IDS[label],
                     "segmentation": seg, "area": float(mask.sum()), "bbox": mask_bbox(mask), "iscrowd": crowd})
    return anns


def write_coco(root: Path, size: int, seed: int, n_train: int, n_val: int) -> None:
    cats = [{"id": i, "name": n, "supercategory": "shape"} for i, n in zip(COCO_CAT_IDS, CLASSES)]
    for split, n, first_id in (("train", n_train, 100), ("val", n_val, 10_000_000)):
        img_dir = root / f"{split}2017"
        img_dir.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img_id = first_id + 7 * i  # not contiguous, like COCO's
            scene = dense_scene(_rng(seed, f"coco/{split}", i), size)
            name = f"{img_id:012d}.jpg"
            _save_jpeg(img_dir / name, scene.image)
            images.append({"id": img_id, "file_name": name, "width": size, "height": size, "license": 1,
                           "date_captured": "2017-01-01 00:00:00"})
            anns += _coco_annotations(scene, img_id)
        ann_file = root / "annotations" / f"instances_{split}2017.json"
        ann_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(ann_file, json.dumps({
            "info": {"description": "a2mim-suite toy world", "version": FORMAT, "year": 2017},
            "licenses": [{"id": 1, "name": "CC0", "url": ""}],
            "images": images, "annotations": anns, "categories": cats}, separators=(",", ":")))


def ade_label(scene) -> np.ndarray:
    """(H, W) uint8: 1 = background, 2 + class index = shapes (visible parts), 0 = crowd clusters (other/ignore)."""
    lab = np.ones(scene.image.shape[:2], np.uint8)
    for label, mask in scene.instances:
        lab[mask] = 2 + label
    if scene.crowd is not None:
        lab[scene.crowd[1]] = 0
    return lab


def write_ade(root: Path, size: int, seed: int, n_train: int, n_val: int) -> None:
    base = root / "ADEChallengeData2016"
    for split, folder, n in (("train", "training", n_train), ("val", "validation", n_val)):
        (base / "images" / folder).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            scene = dense_scene(_rng(seed, f"ade/{split}", i), size)
            stem = f"ADE_{split}_{i + 1:08d}"
            _save_jpeg(base / "images" / folder / f"{stem}.jpg", scene.image)
            Image.fromarray(ade_label(scene)).save(base / "annotations" / folder / f"{stem}.png")
    atomic_write_json(root / "classes.json", {
        "classes": list(ADE_CLASSES), "palette": ADE_PALETTE, "reduce_zero_label": True,
        "label_png": "0 = other/ignore (crowd clusters); v in 1..K = classes[v - 1]",
        "mmseg": {"type": "BaseSegDataset", "img_suffix": ".jpg", "seg_map_suffix": ".png", "reduce_zero_label": True,
                  "why": "ADE20KDataset rejects class names outside its own 150"}})


# ---------------------------------------------------------------- the world
def world_paths(out: Path) -> dict:
    c = out / "coco"
    return {"root": str(out), "marker": str(out / "toyworld.json"), "imagenet": str(out / "imagenet"),
            "imagenet_train": str(out / "imagenet" / "train"), "imagenet_val": str(out / "imagenet" / "val"),
            "coco": str(c), "coco_train_images": str(c / "train2017"), "coco_val_images": str(c / "val2017"),
            "coco_train_ann": str(c / "annotations" / "instances_train2017.json"),
            "coco_val_ann": str(c / "annotations" / "instances_val2017.json"), "ade": str(out / "ade"),
            "ade_data_root": str(out / "ade" / "ADEChallengeData2016"),
            "ade_classes": str(out / "ade" / "classes.json")}


def _prepare(out: Path, params: dict, force: bool) -> bool:
    """True if `out` already holds this finished world. Clears our own partial/old worlds; never touches a folder
    that we did not make."""
    marker, partial = out / "toyworld.json", out / "toyworld.partial.json"
    if marker.exists():
        try:
            old = json.loads(marker.read_text()).get("params")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{marker}: unreadable toy-world marker ({e}); delete it or choose another folder") from e
        if old == params:
            return True
        if not force:
            old = old if isinstance(old, dict) else {}
            diff = {k: f"{old.get(k)!r} there, {v!r} asked" for k, v in params.items() if old.get(k) != v}
            raise ValueError(f"{marker}: this folder holds a toy world made with other parameters ({diff}); "
                             "pass force=True (--force) to rebuild it, or choose another folder")
    elif not partial.exists():
        foreign = [d for d in SUBDIRS if (out / d).exists()]
        if foreign:
            raise ValueError(f"{out}: has {foreign} but no toy-world marker (toyworld.json); refusing to write into "
                             "a folder the toy world did not make - choose an empty folder")
    for d in SUBDIRS:  # ours (marker or partial marker present): start clean so no stale files remain
        shutil.rmtree(out / d, ignore_errors=True)
    marker.unlink(missing_ok=True)
    atomic_write_json(partial, {"format": FORMAT, "params": params})
    return False


def make_toy_world(out: str | Path, size: int = 64, dense_size: int = 96, seed: int = 0, n_train: int = 400,
                   n_val: int = 150, n_dense_train: int = 400, n_dense_val: int = 200, force: bool = False,
                   check: bool = True) -> dict:
    """Generate (or find finished) the toy world under `out`; returns a dict of paths (see world_paths).
    n_train / n_val are per class (ImageNet folder); n_dense_* are images per split for COCO and for ADE each."""
    for k, v in dict(size=size, dense_size=dense_size, n_train=n_train, n_val=n_val, n_dense_train=n_dense_train,
                     n_dense_val=n_dense_val).items():
        if not isinstance(v, int) or v < (32 if "size" in k else 1):
            raise ValueError(f"toy world: {k} must be an int >= {32 if 'size' in k else 1}, got {v!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = {"format": FORMAT, "size": size, "dense_size": dense_size, "seed": seed, "n_train": n_train,
              "n_val": n_val, "n_dense_train": n_dense_train, "n_dense_val": n_dense_val}
    if _prepare(out, params, force):
        return world_paths(out)
    t0, times = time.perf_counter(), {}
    write_imagenet(out / "imagenet", size, seed, n_train, n_val)
    times["imagenet_s"] = round(time.perf_counter() - t0, 2)
    write_coco(out / "coco", dense_size, seed, n_dense_train, n_dense_val)
    times["coco_s"] = round(time.perf_counter() - t0 - sum(times.values()), 2)
    write_ade(out / "ade", dense_size, seed, n_dense_train, n_dense_val)
    times["ade_s"] = round(time.perf_counter() - t0 - sum(times.values()), 2)
    paths = world_paths(out)
    for key, name in CARDS.items():
        atomic_write_json(Path(paths[key]) / "dataset.json", {"name": name, "toy": True, "format": FORMAT,
                                                             "made_by": "python -m benchmarks.toydata",
                                                             **card_classes(key)})
    summary = check_world(paths) if check else {}
    atomic_write_json(out / "toyworld.json", {"format": FORMAT, "params": params, "classes": list(CLASSES),
                                              "wnids": list(WNIDS), "coco_category_ids": list(COCO_CAT_IDS),
                                              "ade_classes": list(ADE_CLASSES), "seconds": times, "check": summary})
    (out / "toyworld.partial.json").unlink(missing_ok=True)
    return paths


def card_classes(key: str) -> dict:
    """The class part of a dataset card (transfer.datacheck checks the models' num_classes against it)."""
    if key == "imagenet":
        return {"num_classes": len(CLASSES), "classes": list(CLASSES), "wnids": list(WNIDS)}
    if key == "coco":
        return {"num_classes": len(CLASSES), "classes": list(CLASSES), "category_ids": list(COCO_CAT_IDS)}
    return {"num_classes": len(ADE_CLASSES), "classes": list(ADE_CLASSES), "reduce_zero_label": True}


def check_world(paths: dict) -> dict:
    """Re-read what was written: every ImageNet class has images, ADE labels lie in 0..K, and (with pycocotools)
    each COCO annotation's decoded mask area matches 'area' and its bbox lies inside the image."""
    bad = [f"{split}/{w}" for split in ("imagenet_train", "imagenet_val") for w in WNIDS
           if not any((Path(paths[split]) / w).glob("*.JPEG"))]
    labels = sorted(Path(paths["ade_data_root"], "annotations").rglob("*.png"))
    top = max((int(np.asarray(Image.open(p)).max()) for p in labels), default=0)
    bad += [f"ADE labels reach {top} > {len(ADE_CLASSES)}"] if top > len(ADE_CLASSES) else []
    summary = {"ade_labels": len(labels)}
    try:
        from pycocotools.coco import COCO
    except ImportError:
        summary["coco"] = "not checked: pycocotools is not installed"
        COCO = None
    for split in ("train", "val") if COCO else ():
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
            coco = COCO(paths[f"coco_{split}_ann"])
        worst = 0.0
        for ann in coco.dataset["annotations"]:
            img = coco.imgs[ann["image_id"]]
            err = abs(float(coco.annToMask(ann).sum()) - ann["area"]) / max(ann["area"], 1.0)
            worst = max(worst, err)
            x, y, w, h = ann["bbox"]
            if err > 0.25 or x < 0 or y < 0 or x + w > img["width"] or y + h > img["height"]:
                bad.append(f"{paths[f'coco_{split}_ann']}: annotation {ann['id']} "
                           f"(area error {err:.2f}, bbox {ann['bbox']})")
        summary[f"coco_{split}"] = {"images": len(coco.imgs), "annotations": len(coco.anns),
                                    "worst_area_rel_error": round(worst, 4)}
    if bad:
        raise ValueError(f"toy world under {paths['root']} failed its check: " + "; ".join(bad[:10]))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.toydata", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=64, help="ImageNet-style image side (px)")
    p.add_argument("--dense-size", type=int, default=96, help="COCO / ADE image side (px)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=400, help="ImageNet train images per class")
    p.add_argument("--n-val", type=int, default=150, help="ImageNet val images per class")
    p.add_argument("--n-dense-train", type=int, default=400, help="COCO and ADE train images (each)")
    p.add_argument("--n-dense-val", type=int, default=200, help="COCO and ADE val images (each)")
    p.add_argument("--force", action="store_true", help="rebuild a toy world made with other parameters")
    p.add_argument("--no-check", action="store_true", help="skip re-reading the output (pycocotools)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        paths = make_toy_world(a.out, a.size, a.dense_size, a.seed, a.n_train, a.n_val, a.n_dense_train,
                               a.n_dense_val, force=a.force, check=not a.no_check)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(paths, indent=2))
    print(f"toy world ready in {time.perf_counter() - t0:.1f} s: {paths['root']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
