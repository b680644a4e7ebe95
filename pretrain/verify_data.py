"""Dataset pre-flight: python -m pretrain.verify_data ROOT [--kind auto|imagenet|coco|ade] [--workers N] [--json OUT]
[--min-side PX] [--max-aspect R]

Decodes every image (and ADE label) in parallel, checks the annotations (pretrain.datacheck), prints one line per
bad file ('BAD  path: reason'), per item the loaders would skip ('SKIP path: reason') and per suspicious image
('WARN path: reason'), then a summary.
Exit status: 0 = nothing bad (skips and warnings allowed), 1 = bad files/annotations found, 2 = usage error.

Suspicious shapes (ImageNet folders, COCO images): a shorter side below --min-side (16 px) or an aspect ratio
above --max-aspect (20) is a WARNING, not an error: such images decode and the loaders resize/crop them without
failing (they are usually thumbnails, tracking pixels or banners), so they are listed and counted for a person to
judge rather than blocking the dataset. 0 turns either check off.

Layouts (--kind auto picks by what ROOT holds):
  imagenet  ROOT/{train,val}/<class>/*.JPEG, or any folder of images (recursive)
  coco      ROOT/annotations/instances_{train,val}2017.json + ROOT/{train,val}2017/
  ade       ROOT = ADEChallengeData2016 (or its parent): images/{training,validation}/*.jpg,
            annotations/{training,validation}/*.png; --num-classes K (150), labels 0..K with --reduce-zero-label
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pretrain.datacheck import Report, check_ade_split, check_image_folder
from pretrain.datacheck_coco import check_coco_images, check_coco_json
from pretrain.fileio import atomic_write_json

COCO_SPLITS = ("train2017", "val2017")
ADE_SPLITS = ("training", "validation")


def detect_kind(root: Path) -> str:
    if (root / "annotations").is_dir() and any((root / "annotations").glob("instances_*.json")):
        return "coco"
    if (root / "ADEChallengeData2016").is_dir() or ((root / "images").is_dir() and (root / "annotations").is_dir()):
        return "ade"
    return "imagenet"


def verify_coco(root: Path, workers: int | None, bbox_tol: float, max_pixels: int | None,
                min_side: int | None = None, max_aspect: float | None = None) -> Report:
    rep = Report("coco", str(root))
    found = False
    for split in COCO_SPLITS:
        ann = root / "annotations" / f"instances_{split}.json"
        if not ann.is_file():
            continue
        found = True
        _, files = check_coco_json(ann, root / split, bbox_tol=bbox_tol, rep=rep)
        check_coco_images(files, rep, full=True, workers=workers, max_pixels=max_pixels, min_side=min_side,
                          max_aspect=max_aspect)
    if not found:
        rep.add(root, f"no annotations/instances_{{{','.join(COCO_SPLITS)}}}.json; expected the COCO 2017 layout")
    return rep


def verify_ade(root: Path, workers: int | None, num_classes: int, reduce_zero_label: bool) -> Report:
    if (root / "ADEChallengeData2016").is_dir() and not (root / "images").is_dir():
        root = root / "ADEChallengeData2016"
    rep = Report("ade", str(root))
    splits = [s for s in ADE_SPLITS if (root / "images" / s).is_dir() or (root / "annotations" / s).is_dir()]
    if not splits:
        rep.add(root, "no images/{training,validation} folders; expected the ADEChallengeData2016 layout")
    for s in splits:
        check_ade_split(root / "images" / s, root / "annotations" / s, num_classes, reduce_zero_label,
                        workers=workers, rep=rep)
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pretrain.verify_data", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("root", type=Path)
    ap.add_argument("--kind", choices=["auto", "imagenet", "coco", "ade"], default="auto")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: every CPU this process may use)")
    ap.add_argument("--json", type=Path, help="write the full report here")
    ap.add_argument("--max-image-pixels", type=int, default=None, help="decompression-bomb limit (default PIL's)")
    ap.add_argument("--min-side", type=int, default=16, help="warn on images whose shorter side is below this "
                    "(px; 0: off)")
    ap.add_argument("--max-aspect", type=float, default=20.0, help="warn on images whose long/short side ratio "
                    "exceeds this (0: off)")
    ap.add_argument("--bbox-tolerance", type=float, default=1.0, help="COCO: px a box may leave the image")
    ap.add_argument("--num-classes", type=int, default=150, help="ADE: number of classes K")
    ap.add_argument("--no-reduce-zero-label", dest="reduce_zero_label", action="store_false",
                    help="ADE: labels are 0..K-1 (default: 0 = ignore, 1..K = classes)")
    a = ap.parse_args(argv)
    if a.min_side < 0 or not (a.max_aspect == 0 or a.max_aspect >= 1):
        ap.error(f"--min-side must be >= 0 and --max-aspect 0 or >= 1 (got {a.min_side}, {a.max_aspect:g})")
    if not a.root.is_dir():
        print(f"error: {a.root}: not a folder", file=sys.stderr)
        return 2
    kind = detect_kind(a.root) if a.kind == "auto" else a.kind
    a.workers = a.workers or len(os.sched_getaffinity(0))
    if kind == "coco":
        rep = verify_coco(a.root, a.workers, a.bbox_tolerance, a.max_image_pixels, a.min_side, a.max_aspect)
    elif kind == "ade":
        rep = verify_ade(a.root, a.workers, a.num_classes, a.reduce_zero_label)
    else:
        rep = check_image_folder(a.root, a.workers, a.max_image_pixels, a.min_side, a.max_aspect)
    for f in rep.findings:
        print(f.line())
    print(f"verify_data: {rep.summary()}")
    if a.json:
        atomic_write_json(a.json, rep.to_dict())
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
