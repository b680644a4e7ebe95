"""Malformed COCO / ADE20K datasets through the transfer pre-flight (the mmdet / mmseg entry points run it before
the Runner exists) and through `python -m pretrain.verify_data`: a clear error naming the file and the key, or a
counted skip where mmdet/mmseg drop the item themselves."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import corpus
from pretrain.datacheck import DatasetError

REPO = Path(__file__).resolve().parents[2]
MMDET_CFG = REPO / "transfer/mmdet/configs/mask_rcnn_r50_fpn_1x.py"
MMSEG_CFG = REPO / "transfer/mmseg/configs/upernet_r50_160k.py"


def _preflight(config: Path, scope: str, root: Path, work: Path):
    from transfer.datacheck import preflight
    return preflight(corpus.openmmlab_config(config, root), scope, work_dir=work)   # coco80: conftest.py


def _set(path: str, value):
    """mutate(data): data[...] = value along 'annotations.0.bbox'-style paths (value None: delete the key)."""
    def mutate(data):
        *head, last = path.split(".")
        node = data
        for k in head:
            node = node[int(k) if k.isdigit() else k]
        last = int(last) if last.isdigit() else last
        if value is None:
            del node[last]
        else:
            node[last] = value
    return mutate


COCO_ERRORS = {  # case -> (mutate the json, the message, as a regex)
    "coco_missing_top_level_key": (_set("categories", None), r"instances_\w+.json: missing top-level key\(s\) "
                                   r"\['categories'\]; expected lists 'images', 'annotations', 'categories'"),
    "coco_annotation_missing_bbox": (_set("annotations.0.bbox", None), r"instances_\w+.json: annotations\[0\] "
                                     r"\(id 11\): missing key\(s\) \['bbox'\]; expected \['id', 'image_id'"),
    "coco_image_missing_width": (_set("images.1.width", None), r"images\[1\] \(id 2\): missing key\(s\) "
                                 r"\['width'\]; expected \['id', 'file_name', 'width', 'height'\]"),
    "coco_bbox_outside_image": (_set("annotations.1.bbox", [10, 12, 40, 25]), r"annotations\[1\] \(id 12\): bbox "
                                r"\[x, y, w, h\] = \[10, 12, 40, 25\] leaves the 40x30 image \(image id 2\); expected "
                                r"0 <= x, x \+ w <= 40, 0 <= y, y \+ h <= 30 \(tolerance 1.0 px"),
    "coco_unknown_category_id": (_set("annotations.0.category_id", 99), r"annotations\[0\] \(id 11\): category_id "
                                 r"99 unknown; expected one of \[1, 2, 3,"),
    "coco_bbox_not_four_numbers": (_set("annotations.0.bbox", [1, 2, 3]), r"annotations\[0\] \(id 11\): bbox "
                                   r"\[1, 2, 3\]; expected \[x, y, w, h\] \(4 finite numbers\)"),
    "coco_duplicate_annotation_id": (_set("annotations.1.id", 11), r"annotations\[1\] \(id 11\): duplicate "
                                     r"annotation id"),
    "coco_image_size_differs": (_set("images.0.height", 31), r"000000000001.jpg: image is 40x30 but the json says "
                                r"40x31; expected the same"),
    "coco_image_file_missing": (_set("images.0.file_name", "gone.jpg"), r"gone.jpg: file not found"),
    "coco_rle_wrong_size": (_set("annotations.0.segmentation", {"counts": "x", "size": [5, 5]}),
                            r"annotations\[0\] \(id 11\): RLE segmentation needs 'counts' and size == "
                            r"\[height, width\] = \[30, 40\] \(got size \[5, 5\]\)"),
}
COCO_SKIPS = {
    "coco_polygon_two_points": (_set("annotations.0.segmentation", [[4, 5, 24, 5]]), r"annotations\[0\] \(id 11\): "
                                r"1 of 1 polygons invalid \(e.g. 4 numbers\); expected >= 3 points"),
    "coco_degenerate_box": (_set("annotations.1.bbox", [3, 3, 0.5, 8]), r"annotations\[1\] \(id 12\): degenerate "
                            r"box \[3, 3, 0.5, 8\]"),
    "coco_annotation_of_unknown_image": (_set("annotations.1.image_id", 77), r"annotations\[1\] \(id 12\): "
                                         r"image_id 77 is not in 'images'; the annotation is unused"),
}


@pytest.mark.parametrize("case", sorted(COCO_ERRORS) + sorted(COCO_SKIPS))
def test_coco_case_through_the_mmdet_preflight(tmp_path, case, coco80, tally):
    mutate, message = {**COCO_ERRORS, **COCO_SKIPS}[case]
    root = corpus.coco(tmp_path / "coco", coco80, "train2017", mutate)
    corpus.coco(root, coco80, "val2017")
    if case in COCO_ERRORS:
        with pytest.raises(DatasetError) as e:
            _preflight(MMDET_CFG, "mmdet", root, tmp_path / "work")
        assert re.search(message, str(e.value)), str(e.value)
        assert str(e.value).startswith("dataset check failed: ") and str(root) in str(e.value)
        assert json.loads((tmp_path / "work" / "data_check.json").read_text())["report"]["bad"] >= 1
        tally.error(case)
    else:
        rep = _preflight(MMDET_CFG, "mmdet", root, tmp_path / "work")
        assert not rep.errors and len(rep.skips) == 1 and re.search(message, rep.skips[0].reason), rep.findings
        tally.skip(case)


def test_coco_json_damage_and_class_names(tmp_path, coco80, tally):
    root = corpus.coco(tmp_path / "coco", coco80, "train2017")
    corpus.coco(root, coco80, "val2017")
    assert _preflight(MMDET_CFG, "mmdet", root, tmp_path / "w").errors == []          # the clean corpus passes
    (root / "annotations" / "instances_val2017.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"instances_val2017.json: not valid JSON \(Expecting value: line 1"):
        _preflight(MMDET_CFG, "mmdet", root, tmp_path / "w")
    corpus.coco(root, split="val2017")                                     # categories: person, car only
    with pytest.raises(DatasetError, match=r"instances_val2017.json: 78 of the config's 80 class names are not among "
                                           r"the json's 2 categories: \['bicycle', 'motorcycle'"):
        _preflight(MMDET_CFG, "mmdet", root, tmp_path / "w")
    tally.error("coco_invalid_json", "coco_config_classes_absent")


def test_mmdet_cli_ends_with_one_message(tmp_path, coco80, capsys, tally):
    from transfer.mmdet.train import MMDET
    from transfer.openmmlab_common import cli
    root = corpus.coco(tmp_path / "coco", coco80, "train2017", _set("annotations.0.category_id", 0))
    corpus.coco(root, coco80, "val2017")
    args = [str(MMDET_CFG), "--data-root", str(root), "--work-dir", str(tmp_path / "w")]
    assert cli(MMDET, [*args, "--weights", str(tmp_path / "unused.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: DatasetError: dataset check failed: ") and "category_id 0 unknown" in err
    assert "Traceback" not in err and f"full report: {tmp_path / 'w' / 'data_check.json'}" in err
    # a clean dataset, and weights that are a pickle running code: refused by the safe loader, one message
    corpus.coco(root, coco80, "train2017")
    marker = tmp_path / "PWNED"
    evil = corpus.evil_checkpoint(tmp_path / "evil.pth", marker)
    assert cli(MMDET, [*args, "--weights", str(evil)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: .*evil.pth: refused to load: .*no unsafe fallback.*GLOBAL io.open", err), err
    assert not marker.exists() and "Traceback" not in err
    tally.error("mmdet_cli_bad_category", "malicious_pickle_as_transfer_weights")


# ---------------------------------------------------------------- ADE20K
def _save_label(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    Image.fromarray(arr, mode=mode).save(path)


ADE_ERRORS = {  # case -> (damage the corpus, the message)
    "ade_label_out_of_range": (lambda b: _save_label(corpus.ade_label(b), np.full((30, 40), 200, np.uint8)),
                               r"ADE_train_00000001.png: label values \[200\] out of range; expected 0..150 or 255"),
    "ade_label_rgb": (lambda b: Image.new("RGB", (40, 30), (3, 3, 3)).save(corpus.ade_label(b)),
                      r"ADE_train_00000001.png: label PNG mode RGB; expected an 8-bit single-channel PNG"),
    "ade_label_16bit": (lambda b: _save_label(corpus.ade_label(b), np.full((30, 40), 3, np.uint16)),
                        r"ADE_train_00000001.png: label PNG mode I;16; expected an 8-bit single-channel"),
    "ade_label_size_differs": (lambda b: _save_label(corpus.ade_label(b), np.full((20, 40), 3, np.uint8)),
                               r"ADE_train_00000001.png: label is 40x20 but its image ADE_train_00000001.jpg is "
                               r"40x30; expected the same size"),
    "ade_label_missing": (lambda b: corpus.ade_label(b, "validation", 2).unlink(),
                          r"ADE_valid_00000002.jpg: no label .*ADE_valid_00000002.png; expected one label PNG"),
    "ade_label_truncated": (lambda b: corpus.ade_label(b).write_bytes(corpus.ade_label(b).read_bytes()[:60]),
                            r"ADE_train_00000001.png: unreadable label"),
}


@pytest.mark.parametrize("case", sorted(ADE_ERRORS))
def test_ade_case_through_the_mmseg_preflight(tmp_path, case, tally):
    damage, message = ADE_ERRORS[case]
    base = corpus.ade(tmp_path / "ade")
    damage(base)
    with pytest.raises(DatasetError) as e:
        _preflight(MMSEG_CFG, "mmseg", base, tmp_path / "work")
    assert re.search(message, str(e.value)), str(e.value)
    tally.error(case)


def test_ade_valid_palette_labels_and_orphans(tmp_path, capsys, tally):
    base = corpus.ade(tmp_path / "ade")
    lab = Image.fromarray(np.full((30, 40), 150, np.uint8), mode="L").convert("P")   # palette indices 0..150
    lab.save(corpus.ade_label(base))
    _save_label(base / "annotations" / "training" / "ADE_extra.png", np.zeros((30, 40), np.uint8))
    rep = _preflight(MMSEG_CFG, "mmseg", base, tmp_path / "work")
    assert rep.errors == [] and [f.reason for f in rep.skips] == ["label without an image ADE_extra.jpg; unused"]
    assert "data pre-flight: 1 items the loaders will skip" in capsys.readouterr().err
    tally.skip("ade_label_without_image")
    tally.decoded("ade_palette_label")


# ---------------------------------------------------------------- the same through the CLI (full decode)
def test_verify_data_cli_on_coco_and_ade(tmp_path, tally):
    root = corpus.coco(tmp_path / "coco", split="train2017", mutate=_set("annotations.0.category_id", 5))
    corpus.coco(root, split="val2017", mutate=_set("annotations.1.segmentation", [[1, 2, 3, 4, 5, 6, 7]]))
    corpus.truncated_jpeg(root / "val2017", "000000000002.jpg")         # header fine, data cut: only a decode sees it
    p = subprocess.run([sys.executable, "-m", "pretrain.verify_data", str(root), "--workers", "1"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    lines = p.stdout.splitlines()
    assert any(re.fullmatch(r"BAD  .*instances_train2017.json: annotations\[0\] \(id 11\): category_id 5 unknown.*", x)
               for x in lines), lines
    assert any(re.fullmatch(r"SKIP .*instances_val2017.json: annotations\[1\] \(id 12\): 1 of 1 polygons invalid "
                            r"\(e.g. 7 numbers\).*", x) for x in lines), lines
    assert f"BAD  {root}/val2017/000000000002.jpg: unreadable image (OSError: image file is truncated" in p.stdout
    assert lines[-1] == f"verify_data: coco {root}: 12 items checked, 2 bad, 1 skipped by the loaders"
    base = corpus.ade(tmp_path / "ade")
    _save_label(corpus.ade_label(base, "validation", 1), np.full((30, 40), 10, np.uint8))
    args = [sys.executable, "-m", "pretrain.verify_data", str(tmp_path / "ade"), "--num-classes", "9"]
    p = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert (f"BAD  {base}/annotations/validation/ADE_valid_00000001.png: label values [10] out of range; "
            f"expected 0..9 or 255") in p.stdout
    p = subprocess.run([*args[:-1], "10"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.splitlines()[-1] == f"verify_data: ade {base}: 8 items checked, 0 bad, " \
                                                                "0 skipped by the loaders"
    tally.error("coco_truncated_image", "verify_data_cli_coco", "verify_data_cli_ade")
