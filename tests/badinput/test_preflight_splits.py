"""Splits checked on their own, and a split left empty (after skips) is an error before launch: a COCO json with
no usable annotation, an ADE split with no image/label pair, an ImageNet split with no usable image."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import corpus
from pretrain.datacheck import DatasetError, check_ade_split, check_image_folder
from pretrain.datacheck_coco import check_coco_json
from pretrain.imageio import IMG_EXTS
from pretrain.verify_data import verify_ade

REPO = Path(__file__).resolve().parents[2]
MMDET_CFG = REPO / "transfer/mmdet/configs/mask_rcnn_r50_fpn_1x.py"
MMSEG_CFG = REPO / "transfer/mmseg/configs/upernet_r50_160k.py"


def _preflight(config: Path, scope: str, root: Path, work: Path):
    from transfer.datacheck import preflight
    return preflight(corpus.openmmlab_config(config, root), scope, work_dir=work)


def _bad_label(base: Path, split: str, value: int = 200) -> Path:
    p = corpus.ade_label(base, split)
    Image.fromarray(np.full((30, 40), value, np.uint8), mode="L").save(p)
    return p


# ---------------------------------------------------------------- ADE: each split on its own
def test_ade_error_in_training_does_not_hide_validation(tmp_path, tally):
    base = corpus.ade(tmp_path / "ade")
    tr, va = _bad_label(base, "training"), _bad_label(base, "validation")
    with pytest.raises(DatasetError) as e:
        _preflight(MMSEG_CFG, "mmseg", base, tmp_path / "w")
    for p in (tr, va):
        assert f"BAD  {p}: label values [200] out of range; expected 0..150 or 255" in str(e.value), str(e.value)
    tally.error("ade_errors_in_both_splits")


def test_ade_missing_training_folder_still_checks_validation(tmp_path, tally):
    base = corpus.ade(tmp_path / "ade")
    for p in (base / "annotations" / "training").iterdir():
        p.unlink()
    (base / "annotations" / "training").rmdir()
    va = _bad_label(base, "validation", 151)
    rep = verify_ade(tmp_path / "ade", workers=1, num_classes=150, reduce_zero_label=True)
    lines = [f.line() for f in rep.errors]
    assert lines == [f"BAD  {base}/annotations/training: folder not found; expected "
                     "ADEChallengeData2016/{images,annotations}/{training,validation}",
                     f"BAD  {va}: label values [151] out of range; expected 0..150 or 255"], lines
    tally.error("ade_missing_folder_other_split_checked")


# ---------------------------------------------------------------- ADE: a split with no pairs
def test_ade_split_without_pairs_is_an_error(tmp_path, tally):
    base = corpus.ade(tmp_path / "ade")
    for p in (base / "annotations" / "validation").iterdir():            # labels renamed: no stem matches
        p.rename(p.with_name("x_" + p.name))
    rep = check_ade_split(base / "images/validation", base / "annotations/validation", 150, workers=1)
    assert len(rep.skips) == 2 and all("label without an image" in f.reason for f in rep.skips)
    empty = [f for f in rep.errors if "is empty" in f.reason]
    assert [f.line() for f in empty] == [
        f"BAD  {base}/images/validation: split validation is empty: no image/label pairs (2 *.jpg images here, "
        f"2 *.png labels in {base}/annotations/validation); expected X.jpg images with X.png labels of the same "
        f"name"], rep.findings
    tally.error("ade_split_without_pairs")


def test_ade_split_with_labels_only_through_the_mmseg_preflight(tmp_path, tally):
    base = corpus.ade(tmp_path / "ade")
    for p in (base / "images" / "training").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"images/training: split training is empty: no image/label pairs "
                                           r"\(0 \*.jpg images here, 2 \*.png labels"):
        _preflight(MMSEG_CFG, "mmseg", base, tmp_path / "w")
    tally.error("ade_split_labels_only")


# ---------------------------------------------------------------- COCO: no usable annotation
def _all(key, value):
    def mutate(data):
        for a in data["annotations"]:
            a[key] = value
    return mutate


def test_coco_json_whose_annotations_are_all_skipped(tmp_path, coco80, tally):
    root = corpus.coco(tmp_path / "coco", coco80, "train2017", _all("bbox", [3, 3, 0.5, 8]))   # degenerate boxes
    corpus.coco(root, coco80, "val2017")
    with pytest.raises(DatasetError) as e:
        _preflight(MMDET_CFG, "mmdet", root, tmp_path / "w")
    assert re.search(r"BAD  \S*instances_train2017.json: no usable annotation: 2 annotations, 0 crowd, 0 outside the "
                     r"config's classes, 2 with errors, skipped or of refused images; the split would be empty "
                     r"\(mmdet/detectron2 stop later with 'No valid data found'", str(e.value)), str(e.value)
    assert "instances_val2017.json: no usable" not in str(e.value)
    tally.error("coco_all_annotations_skipped")


CATS = ({"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, {"id": 3, "name": "car"})
EMPTY = {  # case -> (mutate the json, the config's classes, how the message starts)
    "crowd_only": (_all("iscrowd", 1), None, "no usable annotation: 2 annotations, 2 crowd, 0 outside"),
    "outside_classes": (_all("category_id", 3), ["bicycle", "person"],       # every object a car
                        "no usable annotation: 2 annotations, 0 crowd, 2 outside the config's classes"),
    "no_images": (lambda d: (d["images"].clear(), d["annotations"].clear()), None,
                  "no usable image (of 0 in 'images'); the split would be empty"),
}


@pytest.mark.parametrize("case", sorted(EMPTY))
def test_coco_json_left_empty(tmp_path, case, tally):
    mutate, classes, want = EMPTY[case]
    root = corpus.coco(tmp_path / "coco", CATS, "val2017", mutate)
    ann = root / "annotations/instances_val2017.json"
    rep, _ = check_coco_json(ann, root / "val2017", classes=classes)
    (err,) = rep.errors
    assert err.path == str(ann) and err.reason.startswith(want), err.reason
    tally.error(f"coco_json_{case}")


# ---------------------------------------------------------------- ImageNet: a split with no usable image
def test_imagenet_val_with_only_empty_class_folders(tmp_path, tally):
    root = tmp_path / "inet"
    corpus.good(root / "train" / "n01")
    (root / "val" / "n01").mkdir(parents=True)
    rep = check_image_folder(root, workers=1)
    assert [f.line() for f in rep.errors] == [
        f"BAD  {root}/val: split val/ no images found (extensions {', '.join(IMG_EXTS)}; 0 other files); the "
        f"split would be empty"], rep.findings
    assert [f.reason for f in rep.skips] == ["empty class folder (expected at least one image)"]
    tally.error("imagenet_val_only_empty_class_folders")


def test_imagenet_train_whose_images_all_fail(tmp_path, tally):
    root = tmp_path / "inet"
    corpus.truncated_jpeg(root / "train" / "n01")
    corpus.zero_byte(root / "train" / "n01")
    corpus.good(root / "val" / "n01")
    rep = check_image_folder(root, workers=1)
    assert rep.errors[-1].line() == (f"BAD  {root}/train: split train/ left empty: none of its 2 image files "
                                     f"decodes; expected at least one usable image"), rep.findings
    assert len(rep.errors) == 3                          # the two files, then the split
    tally.error("imagenet_split_all_unreadable")

