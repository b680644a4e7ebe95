"""transfer.datacheck.preflight_coco_root: the detectron2 pre-flight of a COCO-2017 root (both splits: the json
checks, every image's header, the same categories in both), skips printed to stderr, DatasetError on errors."""
from __future__ import annotations

import re

import pytest

import corpus
from pretrain.datacheck import DatasetError
from transfer.datacheck import preflight_coco_root


def test_not_a_coco_layout(tmp_path, tally):
    corpus.coco(tmp_path / "coco", split="train2017")                   # val2017 missing
    with pytest.raises(DatasetError) as e:
        preflight_coco_root(tmp_path / "coco")
    msg = str(e.value)
    assert (f"BAD  {tmp_path}/coco: not a COCO 2017 layout, missing ['{tmp_path}/coco/annotations/"
            f"instances_val2017.json', '{tmp_path}/coco/val2017']; expected annotations/instances_{{train,val}}"
            f"2017.json and image folders {{train,val}}2017/") in msg, msg
    tally.error("coco_root_layout_missing")


def test_clean_root_with_a_skip_prints_it(tmp_path, capsys, tally):
    root = corpus.coco(tmp_path / "coco", split="train2017",
                       mutate=lambda d: d["annotations"][1].update(bbox=[3, 3, 0.5, 8]))
    corpus.coco(root, split="val2017")
    rep = preflight_coco_root(root)
    assert rep.errors == [] and rep.checked == 12 and len(rep.skips) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"data pre-flight: 1 items the loaders will skip, e.g. SKIP \S*instances_train2017.json: "
                        r"annotations\[1\] \(id 12\): degenerate box \[3, 3, 0.5, 8\].*\n", err), err
    tally.skip("coco_root_degenerate_box")


def test_a_bad_val_json_is_named(tmp_path, tally):
    root = corpus.coco(tmp_path / "coco", split="train2017")
    corpus.coco(root, split="val2017", mutate=lambda d: d["annotations"][0].update(category_id=999))
    with pytest.raises(DatasetError, match=r"dataset check failed: detectron2 data .*\n  BAD  \S*instances_val2017"
                                           r".json: annotations\[0\] \(id 11\): category_id 999 unknown"):
        preflight_coco_root(root)
    tally.error("coco_root_val_unknown_category")


def test_train_and_val_categories_differ(tmp_path, tally):
    root = corpus.coco(tmp_path / "coco", split="train2017")             # person (1), car (3)
    corpus.coco(root, ({"id": 1, "name": "person"}, {"id": 3, "name": "truck"}), "val2017")
    with pytest.raises(DatasetError) as e:
        preflight_coco_root(root)
    assert re.search(r"instances_val2017.json: categories differ from those of instances_train2017.json \(2 vs 2; "
                     r"e.g. \(id, name\) \[\(3, 'car'\), \(3, 'truck'\)\]\); detectron2 maps each json's ids on its "
                     r"own", str(e.value)), str(e.value)
    tally.error("coco_root_categories_differ")


def test_the_detectron2_entry_point_uses_it(tmp_path, monkeypatch):
    pytest.importorskip("detectron2")
    import transfer.datacheck
    from transfer.detectron2.train import preflight_coco
    seen = []
    monkeypatch.setattr(transfer.datacheck, "preflight_coco_root", lambda root: seen.append(root))
    preflight_coco(tmp_path)
    assert seen == [tmp_path]
