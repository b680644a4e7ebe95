"""The pre-flight cache (<work_dir>/data_check.json) is keyed on the size + mtime of every file the check reads:
unchanged data is not checked again, an image or label damaged in place (folders unchanged) is."""
from __future__ import annotations

import json
import os
import re
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
    return preflight(corpus.openmmlab_config(config, root), scope, work_dir=work)


def _later(path: Path) -> None:
    """A write a moment later: the file's mtime moves on (coarse filesystem clocks may not tick otherwise)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def test_coco_image_damaged_in_place_is_checked_again(tmp_path, coco80, tally):
    root = corpus.coco(tmp_path / "coco", coco80, "train2017")
    corpus.coco(root, coco80, "val2017")
    work = tmp_path / "w"
    assert _preflight(MMDET_CFG, "mmdet", root, work).root != "cached"
    card = json.loads((work / "data_check.json").read_text())
    assert set(card["stamp"]["data"]) == {"files", "sha256"} and re.fullmatch(r"[0-9a-f]{64}",
                                                                              card["stamp"]["data"]["sha256"])
    assert card["stamp"]["data"]["files"] == 6                    # 2 jsons + 4 images; no per-file list stored
    assert _preflight(MMDET_CFG, "mmdet", root, work).root == "cached"
    folders = {p: p.stat().st_mtime_ns for p in (root / "train2017", root / "annotations")}
    img = root / "val2017" / "000000000002.jpg"
    img.write_bytes(b"\0" * img.stat().st_size)                 # same name, same size: only the contents die
    _later(img)
    assert {p: p.stat().st_mtime_ns for p in folders} == folders
    with pytest.raises(DatasetError, match=r"000000000002.jpg: unreadable image \(UnidentifiedImageError"):
        _preflight(MMDET_CFG, "mmdet", root, work)
    tally.error("coco_image_damaged_in_place_after_a_cached_pass")


def test_ade_label_damaged_in_place_is_checked_again(tmp_path, tally):
    base = corpus.ade(tmp_path / "ade")
    work = tmp_path / "w"
    _preflight(MMSEG_CFG, "mmseg", base, work)
    assert _preflight(MMSEG_CFG, "mmseg", base, work).root == "cached"
    lab = corpus.ade_label(base, "validation", 2)
    Image.fromarray(np.full((30, 40), 222, np.uint8), mode="L").save(lab)     # rewritten in place
    _later(lab)
    with pytest.raises(DatasetError, match=r"ADE_valid_00000002.png: label values \[222\] out of range"):
        _preflight(MMSEG_CFG, "mmseg", base, work)
    Image.fromarray(np.full((30, 40), 3, np.uint8), mode="L").save(lab)       # repaired: checked, passes, cached
    _later(lab)
    assert _preflight(MMSEG_CFG, "mmseg", base, work).root != "cached"
    assert _preflight(MMSEG_CFG, "mmseg", base, work).root == "cached"
    tally.error("ade_label_damaged_in_place_after_a_cached_pass")


def test_an_old_format_cache_is_not_trusted(tmp_path, coco80, tally):
    """A cache written by the folder-keyed version (stamp: 'files' list) never matches: the data is checked."""
    root = corpus.coco(tmp_path / "coco", coco80, "train2017", lambda d: d["annotations"][0].update(category_id=0))
    corpus.coco(root, coco80, "val2017")
    work = tmp_path / "w"
    with pytest.raises(DatasetError):
        _preflight(MMDET_CFG, "mmdet", root, work)
    cache = work / "data_check.json"
    old = json.loads(cache.read_text())
    old["stamp"] = {"jobs": old["stamp"]["jobs"], "files": [[str(root), 1, 2]]}
    old["report"].update(bad=0)
    cache.write_text(json.dumps(old))
    with pytest.raises(DatasetError, match=r"annotations\[0\] \(id 11\): category_id 0 unknown"):
        _preflight(MMDET_CFG, "mmdet", root, work)
    tally.error("stale_cache_format")
