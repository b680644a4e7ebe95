"""benchmarks/toydata.py: the toy world in ImageNet / COCO / ADE20K formats (tiny sizes, a few seconds)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.toydata import (ADE_CLASSES, COCO_CAT_IDS, WNIDS, _coco_annotations, make_toy_world, mask_to_polygons,
                                mask_to_rle)
from benchmarks.toyrender import CLASSES, dense_scene

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

TINY = dict(size=32, dense_size=48, n_train=2, n_val=1, n_dense_train=8, n_dense_val=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_toy_world(tmp_path_factory.mktemp("toy") / "w", seed=0, **TINY)


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "toyworld.json"}


def _poly_mask(polys: list[list[float]], h: int, w: int) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w))).astype(bool)


# ---------------------------------------------------------------- hand-made masks
def test_rle_matches_hand_computed_counts_and_pycocotools():
    m = np.array([[0, 1, 1, 0],
                  [0, 1, 0, 0],
                  [0, 0, 0, 1]], bool)
    # column-major: col0 000, col1 110, col2 100, col3 001 -> 0 0 0 1 1 0 1 0 0 0 0 1
    assert mask_to_rle(m) == {"size": [3, 4], "counts": [3, 2, 1, 1, 4, 1]}
    starts_with_one = np.ones((2, 2), bool)
    assert mask_to_rle(starts_with_one)["counts"] == [0, 4]
    rle = mask_utils.frPyObjects(mask_to_rle(m), 3, 4)
    assert (mask_utils.decode(rle).astype(bool) == m).all()


def test_polygon_of_a_rectangle_hugs_its_pixels():
    m = np.zeros((10, 12), bool)
    m[2:6, 3:8] = True  # rows 2..5, cols 3..7: continuous box x 3..8, y 2..6
    (poly,) = mask_to_polygons(m)
    xs, ys = poly[0::2], poly[1::2]
    assert min(xs) == pytest.approx(3.125) and max(xs) == pytest.approx(7.875)  # 1/8 px inside the pixel edge
    assert min(ys) == pytest.approx(2.125) and max(ys) == pytest.approx(5.875)
    assert (_poly_mask([poly], 10, 12) == m).all()


def test_polygon_of_a_ring_keeps_its_hole():
    yy, xx = np.mgrid[0:40, 0:40] + 0.5
    r = np.hypot(xx - 20, yy - 20)
    m = (r < 15) & (r >= 7)
    polys = mask_to_polygons(m)
    assert len(polys) == 1  # hole joined to the outer ring by a zero-width cut
    got = _poly_mask(polys, 40, 40)
    assert not got[20, 20]  # the hole stays empty
    assert (got & m).sum() / (got | m).sum() > 0.97


def test_crowd_annotation_is_uncompressed_rle_with_exact_area():
    scenes = (dense_scene(np.random.default_rng(i), 48, p_crowd=1.0) for i in range(20))
    scene = next(s for s in scenes if s.crowd is not None)  # a crowd may end up hidden under the objects
    anns = _coco_annotations(scene, img_id=7)
    crowd = [a for a in anns if a["iscrowd"] == 1]
    assert len(crowd) == 1 and isinstance(crowd[0]["segmentation"]["counts"], list)
    decoded = mask_utils.decode(mask_utils.frPyObjects(crowd[0]["segmentation"], 48, 48)).astype(bool)
    assert (decoded == scene.crowd[1]).all()
    assert crowd[0]["area"] == float(scene.crowd[1].sum())
    assert crowd[0]["category_id"] == COCO_CAT_IDS[scene.crowd[0]]


# ---------------------------------------------------------------- the written world
def test_imagenet_folder_has_every_class(world):
    mapping = Path(world["imagenet"], "LOC_synset_mapping.txt").read_text().splitlines()
    assert mapping == [f"{w} {c}" for w, c in zip(WNIDS, CLASSES)]
    for split, n in (("imagenet_train", 2), ("imagenet_val", 1)):
        dirs = sorted(p.name for p in Path(world[split]).iterdir())
        assert dirs == sorted(WNIDS)
        for w in WNIDS:
            files = sorted(Path(world[split], w).glob("*.JPEG"))
            assert len(files) == n
            with Image.open(files[0]) as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (32, 32))
    assert {p.name for p in Path(world["imagenet_val"], WNIDS[0]).iterdir()} == {"ILSVRC2012_val_00000001.JPEG"}


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_json_loads_and_masks_match_areas(world, split):
    coco = COCO(world[f"coco_{split}_ann"])
    assert sorted(coco.cats) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert [coco.cats[i]["name"] for i in COCO_CAT_IDS] == list(CLASSES)
    assert len(coco.imgs) == (8 if split == "train" else 3)
    assert len(coco.anns) >= len(coco.imgs)  # at least one object per image
    for img in coco.imgs.values():
        with Image.open(Path(world[f"coco_{split}_images"], img["file_name"])) as im:
            assert im.size == (img["width"], img["height"]) == (48, 48)
    for ann in coco.anns.values():
        m = coco.annToMask(ann).astype(bool)
        assert abs(m.sum() - ann["area"]) <= max(3.0, 0.15 * ann["area"]), ann["id"]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 48 and y + h <= 48
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert abs(cols[0] - x) <= 1 and abs(rows[0] - y) <= 1  # bbox is that of the mask
        assert abs(cols[-1] + 1 - (x + w)) <= 1 and abs(rows[-1] + 1 - (y + h)) <= 1
        if not ann["iscrowd"]:
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])


def test_ade_labels_in_range_and_paired_with_images(world):
    base = Path(world["ade_data_root"])
    classes = json.loads(Path(world["ade_classes"]).read_text())
    assert classes["classes"] == list(ADE_CLASSES) and ADE_CLASSES[0] == "background" and len(ADE_CLASSES) == 9
    assert len(classes["palette"]) == 9
    for folder, prefix, n in (("training", "ADE_train", 8), ("validation", "ADE_val", 3)):
        imgs = sorted((base / "images" / folder).glob("*.jpg"))
        labs = sorted((base / "annotations" / folder).glob("*.png"))
        assert [p.stem for p in imgs] == [p.stem for p in labs] == [f"{prefix}_{i:08d}" for i in range(1, n + 1)]
        seen = set()
        for p in labs:
            with Image.open(p) as im:
                assert im.mode == "L" and im.size == (48, 48)
                a = np.asarray(im)
            assert a.max() <= 9
            seen |= set(np.unique(a).tolist())
        assert 1 in seen and seen & set(range(2, 10))  # background and at least one shape class


def test_dataset_cards_name_the_toy_datasets_and_the_gray_world(world):
    """Every root the entry points read says what it is (transfer.results.result_dataset reads the card)."""
    from transfer.results import result_dataset
    for key, name in (("imagenet", "toy_imagenet"), ("coco", "toy_coco"), ("ade", "toy_ade"),
                      ("ade_data_root", "toy_ade")):
        card = json.loads((Path(world[key]) / "dataset.json").read_text())
        assert card["name"] == name and card["toy"] is True
        assert result_dataset(world[key], "real") == name
    assert result_dataset(Path(world["root"]), "imagenet1k") == "imagenet1k"        # no card: the real default
    img = np.asarray(Image.open(next(Path(world["imagenet_train"]).glob("*/*.JPEG"))), dtype=np.int16)
    assert np.abs(img[..., 0] - img[..., 1]).max() <= 12          # gray (JPEG chroma noise only)


def test_same_seed_same_bytes_other_seed_differs(world, tmp_path):
    again = make_toy_world(tmp_path / "again", seed=0, **TINY)
    assert _digests(Path(world["root"])) == _digests(Path(again["root"]))
    other = make_toy_world(tmp_path / "other", seed=1, **TINY)
    a, b = _digests(Path(world["root"])), _digests(Path(other["root"]))
    assert a.keys() == b.keys() and sum(a[k] != b[k] for k in a) > len(a) // 2


def test_finished_world_is_not_regenerated_and_params_are_guarded(tmp_path):
    paths = make_toy_world(tmp_path / "w", **TINY)
    marker = Path(paths["marker"])
    probe = next(Path(paths["imagenet_train"]).rglob("*.JPEG"))
    before = (marker.stat().st_mtime_ns, probe.stat().st_mtime_ns)
    assert make_toy_world(tmp_path / "w", **TINY) == paths
    assert (marker.stat().st_mtime_ns, probe.stat().st_mtime_ns) == before
    with pytest.raises(ValueError, match=r"toyworld\.json.*'seed'"):
        make_toy_world(tmp_path / "w", **{**TINY, "seed": 5})
    make_toy_world(tmp_path / "w", force=True, check=False, **{**TINY, "seed": 5, "n_train": 1})
    assert json.loads(marker.read_text())["params"]["seed"] == 5
    assert len(list(Path(paths["imagenet_train"], WNIDS[0]).glob("*.JPEG"))) == 1  # no stale files left


def test_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "data" / "coco").mkdir(parents=True)
    with pytest.raises(ValueError, match="no toy-world marker"):
        make_toy_world(tmp_path / "data", **TINY)
    with pytest.raises(ValueError, match="n_train must be an int >= 1"):
        make_toy_world(tmp_path / "x", **{**TINY, "n_train": 0})


@pytest.mark.openmmlab
def test_mmdet_and_mmseg_datasets_read_the_toy_world(world):
    from mmdet.datasets import CocoDataset
    from mmseg.datasets import BaseSegDataset
    from mmseg.datasets.transforms import LoadAnnotations

    det = CocoDataset(ann_file=world["coco_val_ann"], data_root="", data_prefix=dict(img=world["coco_val_images"]),
                      metainfo=dict(classes=CLASSES), filter_cfg=None, pipeline=[], test_mode=True)
    coco = COCO(world["coco_val_ann"])
    info = det.get_data_info(0)
    anns = coco.imgToAnns[info["img_id"]]
    # mmdet maps category ids 1, 3, 5, ... to labels 0..7 by class name
    assert sorted(i["bbox_label"] for i in info["instances"]) == sorted(COCO_CAT_IDS.index(a["category_id"])
                                                                       for a in anns)
    classes = json.loads(Path(world["ade_classes"]).read_text())
    seg = BaseSegDataset(data_root=world["ade_data_root"], img_suffix=".jpg", seg_map_suffix=".png",
                         data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
                         metainfo=dict(classes=classes["classes"], palette=classes["palette"]),
                         reduce_zero_label=True, pipeline=[])
    assert len(seg) == 3 and list(seg.metainfo["classes"]) == list(ADE_CLASSES)
    info = seg.get_data_info(0)
    raw = np.asarray(Image.open(info["seg_map_path"]))
    loaded = LoadAnnotations()({**info, "seg_fields": []})["gt_seg_map"]
    # reduce_zero_label: 0 (other) -> 255 (ignored), v -> v - 1 (background = 0, shapes 1..8)
    assert (loaded == np.where(raw == 0, 255, raw.astype(np.int64) - 1)).all()
