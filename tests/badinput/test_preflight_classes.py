"""num_classes pre-flight: a config whose heads' class count differs from the dataset's is refused before the
Runner exists, naming both numbers and where each came from (the config key, the dataset's metainfo / METAINFO,
the data's dataset.json card, the COCO json's categories)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import corpus
from pretrain.datacheck import DatasetError

REPO = Path(__file__).resolve().parents[2]
MMDET_CFG = REPO / "transfer/mmdet/configs/mask_rcnn_r50_fpn_1x.py"
MMSEG_CFG = REPO / "transfer/mmseg/configs/upernet_r50_160k.py"
TOY_SEG_CFG = REPO / "transfer/mmseg/configs/toy_linear_seg.py"


def _refused(cfg, scope: str, work: Path) -> str:
    from transfer.datacheck import preflight
    with pytest.raises(DatasetError) as e:
        preflight(cfg, scope, work_dir=work)
    return str(e.value)


# ---------------------------------------------------------------- mmseg
def test_the_150_class_ade_config_on_the_9_class_toy_ade_is_refused(tmp_path, tally):
    root = Path(corpus.toy_world(tmp_path / "toy")["ade_data_root"])
    msg = _refused(corpus.openmmlab_config(MMSEG_CFG, root), "mmseg", tmp_path / "w")
    for head in ("decode_head", "auxiliary_head"):
        assert (f"BAD  {root}/dataset.json: model.{head}.num_classes = 150 but the dataset at {root} has 9 classes "
                f"(dataset.json)") in msg, msg
    assert "out of range" not in msg                    # toy labels 0..9 fit 150 classes: only the count tells
    tally.error("mmseg_150_class_config_on_toy_ade")


def test_the_toy_config_on_the_toy_ade_passes(tmp_path, tally):
    from transfer.datacheck import preflight
    root = Path(corpus.toy_world(tmp_path / "toy")["ade_data_root"])
    rep = preflight(corpus.openmmlab_config(TOY_SEG_CFG, root), "mmseg", work_dir=tmp_path / "w")
    assert rep.errors == [] and rep.checked == 6
    tally.decoded("mmseg_toy_config_on_toy_ade")


def test_real_ade_without_a_card_head_vs_metainfo(tmp_path, tally):
    base = corpus.ade(tmp_path / "ade")
    cfg = corpus.openmmlab_config(MMSEG_CFG, base)
    cfg.model.decode_head.num_classes = 100
    msg = _refused(cfg, "mmseg", tmp_path / "w")
    assert re.search(r"BAD  \S*upernet_r50_160k.py: model.decode_head.num_classes = 100 but ADE20KDataset."
                     r"METAINFO\['classes'\] lists 150 classes; expected the same", msg), msg
    assert "auxiliary_head" not in msg and "dataset.json" not in msg
    tally.error("mmseg_head_vs_dataset_metainfo")


def test_config_metainfo_classes_vs_auxiliary_head(tmp_path, tally):
    base = corpus.ade(tmp_path / "ade", label_value=1)
    cfg = corpus.openmmlab_config(MMSEG_CFG, base)
    names = ["wall", "floor", "sky"]
    for split in ("train", "val", "test"):
        cfg[f"{split}_dataloader"].dataset.metainfo = dict(classes=names)
    cfg.model.decode_head.num_classes = 3
    msg = _refused(cfg, "mmseg", tmp_path / "w")
    assert ("model.auxiliary_head.num_classes = 150 but train_dataloader.dataset.metainfo.classes lists 3 "
            "classes") in msg and "decode_head" not in msg, msg
    tally.error("mmseg_auxiliary_head_vs_config_metainfo")


@pytest.mark.parametrize("card,why", [({"name": "x", "num_classes": "nine"}, "num_classes 'nine'; expected a "
                                       "positive integer"),
                                      ({"name": "x", "num_classes": 9, "classes": ["a", "b"]},
                                       "num_classes 9 but 2 names in 'classes'; expected the same number")])
def test_a_bad_card_is_named(tmp_path, card, why, tally):
    base = corpus.ade(tmp_path / "ade")
    (base / "dataset.json").write_text(json.dumps(card))
    msg = _refused(corpus.openmmlab_config(MMSEG_CFG, base), "mmseg", tmp_path / "w")
    assert f"BAD  {base}/dataset.json: {why}" in msg, msg
    tally.error(f"dataset_card_{'not_int' if isinstance(card['num_classes'], str) else 'count_mismatch'}")


# ---------------------------------------------------------------- mmdet
def _coco(tmp_path: Path, coco80) -> Path:
    root = corpus.coco(tmp_path / "coco", coco80, "train2017")
    corpus.coco(root, coco80, "val2017")
    return root


def test_mmdet_bbox_and_mask_heads_vs_config_classes(tmp_path, coco80, tally):
    cfg = corpus.openmmlab_config(MMDET_CFG, _coco(tmp_path, coco80))
    cfg.model.roi_head.bbox_head.num_classes = 81
    cfg.model.roi_head.mask_head.num_classes = 81
    msg = _refused(cfg, "mmdet", tmp_path / "w")
    for head in ("bbox_head", "mask_head"):
        assert re.search(rf"mask_rcnn_r50_fpn_1x.py: model.roi_head.{head}.num_classes = 81 but CocoDataset."
                         r"METAINFO\['classes'\] lists 80 classes", msg), msg
    tally.error("mmdet_heads_vs_classes")


def test_mmdet_cascade_bbox_head_list(tmp_path, coco80, tally):
    cfg = corpus.openmmlab_config(MMDET_CFG, _coco(tmp_path, coco80))
    stage = dict(cfg.model.roi_head.bbox_head)
    cfg.model.roi_head.bbox_head = [stage, stage, dict(stage, num_classes=7)]
    msg = _refused(cfg, "mmdet", tmp_path / "w")
    assert "model.roi_head.bbox_head[2].num_classes = 7 but CocoDataset.METAINFO['classes'] lists 80" in msg, msg
    assert "bbox_head[0]" not in msg and "bbox_head[1]" not in msg
    tally.error("mmdet_cascade_stage_classes")


class NoClassesDataset:
    """A dataset class that names no classes (mmdet then takes every json category)."""
    METAINFO: dict = {}


def test_mmdet_without_classes_vs_json_categories(tmp_path, tally):
    root = corpus.coco(tmp_path / "coco", split="train2017")                  # 2 categories: person, car
    corpus.coco(root, split="val2017")
    cfg = corpus.openmmlab_config(MMDET_CFG, root)
    for split in ("train", "val", "test"):
        cfg[f"{split}_dataloader"].dataset.type = NoClassesDataset
    msg = _refused(cfg, "mmdet", tmp_path / "w")
    assert re.search(r"BAD  \S*instances_train2017.json: model.roi_head.bbox_head.num_classes = 80 but the json "
                     r"has 2 categories \(the config gives no classes\)", msg), msg
    tally.error("mmdet_heads_vs_json_categories")


# ---------------------------------------------------------------- the toy world's cards
def test_toy_cards_state_their_classes(tmp_path):
    from benchmarks.toydata import ADE_CLASSES, CLASSES, COCO_CAT_IDS
    world = corpus.toy_world(tmp_path / "toy")
    cards = {k: json.loads((Path(world[k]) / "dataset.json").read_text())
             for k in ("imagenet", "coco", "ade", "ade_data_root")}
    assert cards["ade"]["num_classes"] == cards["ade_data_root"]["num_classes"] == 9
    assert cards["ade"]["classes"] == list(ADE_CLASSES) and cards["ade"]["reduce_zero_label"] is True
    assert (cards["coco"]["num_classes"], cards["coco"]["category_ids"]) == (8, list(COCO_CAT_IDS))
    assert cards["imagenet"]["classes"] == list(CLASSES) and cards["imagenet"]["name"] == "toy_imagenet"
