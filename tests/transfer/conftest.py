"""Tiny datasets in the REAL layouts (COCO 2017 instances json + folders; ADEChallengeData2016) and
project-exported backbones (pretrain.export_format), generated once per test session."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

H, W = 128, 160
# the 80 COCO 2017 category ids (1..90 with gaps), in the order of mmdet's CocoDataset classes
COCO_IDS = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
            *range(84, 91)]
USED = (1, 3)     # objects drawn: person, car


def coco_categories() -> list[dict]:
    from mmdet.datasets import CocoDataset
    names = CocoDataset.METAINFO["classes"]
    assert len(names) == len(COCO_IDS) == 80
    return [{"id": i, "name": n, "supercategory": "thing"} for i, n in zip(COCO_IDS, names)]


def _shapes(rng: np.random.Generator, n: int):
    """n random axis-aligned rectangles (x0, y0, x1, y1) inside the image, at least 24 px on a side."""
    out = []
    for _ in range(n):
        w, h = int(rng.integers(24, 60)), int(rng.integers(24, 60))
        x0, y0 = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
        out.append((x0, y0, x0 + w, y0 + h))
    return out


def _image(rng, boxes, colors) -> Image.Image:
    arr = (rng.random((H, W, 3)) * 60 + 90).astype(np.uint8)
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    for (x0, y0, x1, y1), c in zip(boxes, colors):
        d.rectangle([x0, y0, x1 - 1, y1 - 1], fill=c)
    return img


def make_coco(root: Path, n_train: int = 4, n_val: int = 2, seed: int = 0) -> Path:
    """root/annotations/instances_{train,val}2017.json + root/{train,val}2017/*.jpg, polygons per object."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        (root / split).mkdir(exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img_id = 1000 * (split == "val2017") + i + 1
            boxes = _shapes(rng, 2)
            cats = [USED[j % 2] for j in range(len(boxes))]
            colors = [(220, 40, 40) if c == 1 else (40, 40, 220) for c in cats]
            name = f"{img_id:012d}.jpg"
            _image(rng, boxes, colors).save(root / split / name, quality=95)
            images.append({"id": img_id, "file_name": name, "height": H, "width": W})
            for (x0, y0, x1, y1), c in zip(boxes, cats):
                anns.append({"id": ann_id, "image_id": img_id, "category_id": c, "iscrowd": 0,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
                             "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
                ann_id += 1
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": coco_categories()}))
    return root


def make_ade(root: Path, n_train: int = 4, n_val: int = 2, seed: int = 0) -> Path:
    """root/ADEChallengeData2016/{images,annotations}/{training,validation}: jpg + uint8 PNG (0 = ignore)."""
    rng = np.random.default_rng(seed)
    ade = root / "ADEChallengeData2016"
    for split, n in (("training", n_train), ("validation", n_val)):
        (ade / "images" / split).mkdir(parents=True, exist_ok=True)
        (ade / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            boxes = _shapes(rng, 3)
            classes = [1 + (j + i) % 5 for j in range(len(boxes))]
            colors = [tuple(int(v) for v in rng.integers(0, 255, 3)) for _ in boxes]
            label = np.full((H, W), 1 + 5, np.uint8)             # background class 6 ("building" etc.)
            label[:4] = 0                                        # a strip of ignored pixels
            for (x0, y0, x1, y1), c in zip(boxes, classes):
                label[y0:y1, x0:x1] = c
            stem = f"ADE_{'train' if split == 'training' else 'val'}_{i + 1:08d}"
            _image(rng, boxes, colors).save(ade / "images" / split / f"{stem}.jpg", quality=95)
            Image.fromarray(label, mode="L").save(ade / "annotations" / split / f"{stem}.png")
    return ade


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("coco"), n_train=4, n_val=1)


@pytest.fixture(scope="session")
def ade_root(tmp_path_factory) -> Path:
    return make_ade(tmp_path_factory.mktemp("ade"), n_train=4, n_val=1)


def export(tmp: Path, preset: str) -> Path:
    """An exported backbone exactly as `python -m pretrain.export` writes it (random weights)."""
    import torch
    from pretrain.export_format import write_backbone
    from pretrain.models import build_backbone, get_preset

    torch.manual_seed(0)
    p = get_preset(preset)
    sd = build_backbone(p, img_size=224).state_dict()
    return write_backbone(tmp / f"{preset}.safetensors", sd,
                          {"preset": preset, "timm_name": p.timm_name, "timm_kwargs": p.timm_kwargs, "kind": p.kind,
                           "method": "random", "inject_module": p.inject_module, "inject_stride": p.inject_stride,
                           "input_size": 224})


@pytest.fixture(scope="session")
def r50_weights(tmp_path_factory) -> Path:
    return export(tmp_path_factory.mktemp("export"), "resnet50")


@pytest.fixture(scope="session")
def vitb_weights(tmp_path_factory) -> Path:
    return export(tmp_path_factory.mktemp("export"), "vit_base")
