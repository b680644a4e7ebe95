"""The bad-input corpus, generated at test time (nothing binary is committed): images, COCO / ADE20K datasets,
checkpoints, configs. Every writer takes the folder (usually tmp_path) and returns the path it wrote."""
from __future__ import annotations

import functools
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


# ---------------------------------------------------------------- images
def _png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: "iter[bytes]") -> bytes:
    """A PNG written by hand (IHDR / IDAT streamed through zlib / IEND): sizes PIL would refuse to allocate."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    z, idat = zlib.compressobj(9), []
    for row in rows:
        idat.append(z.compress(b"\x00" + row))          # filter type 0 per scanline
    idat.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b"")


@functools.lru_cache(maxsize=1)
def _bomb_bytes(side: int) -> bytes:
    row = bytes(side // 8)
    return _png_bytes(side, side, 1, 0, (row for _ in range(side)))


def good(folder: Path, name: str = "good.png", rgb=(40, 160, 220), size=(24, 20)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(folder / name)
    return folder / name


def truncated_jpeg(folder: Path, name: str = "truncated.jpg") -> Path:
    """A JPEG cut in the middle of its entropy-coded data (PIL: 'image file is truncated')."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    return folder / name


def zero_byte(folder: Path, name: str = "empty.jpg") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"")
    return folder / name


def text_file(folder: Path, name: str = "notes.txt", text: str = "not an image\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def cmyk_jpeg(folder: Path, name: str = "cmyk.jpg", cmyk=(0, 255, 255, 0)) -> Path:
    """Solid CMYK JPEG (PIL writes the Adobe marker; it reads the inverted CMYK back)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("CMYK", (16, 16), cmyk).save(folder / name, quality=95)
    return folder / name


def png16_gray(folder: Path, name: str = "gray16.png", values=((65535, 32768), (257, 0))) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.array(values, dtype=np.uint16)).save(folder / name)      # mode I;16
    return folder / name


def png16_rgb(folder: Path, name: str = "rgb16.png", rgb=(65535, 32768, 0)) -> Path:
    """A 48-bit RGB PNG (PIL cannot write one): 2x2 of one colour."""
    folder.mkdir(parents=True, exist_ok=True)
    row = np.array([rgb, rgb], dtype=">u2").tobytes()
    (folder / name).write_bytes(_png_bytes(2, 2, 16, 2, [row, row]))
    return folder / name


def palette_alpha_png(folder: Path, name: str = "palette_alpha.png") -> Path:
    """P mode + tRNS: index 0 = red, fully transparent; index 1 = blue, opaque. 2x1 px: [0, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    im.putpixel((1, 0), 1)
    im.save(folder / name, transparency=bytes([0, 255]))
    return folder / name


def rgba_png(folder: Path, name: str = "rgba.png", rgba=(10, 20, 30, 0)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (4, 4), rgba).save(folder / name)
    return folder / name


def gray_png(folder: Path, name: str = "gray.png", value: int = 100, mode: str = "L") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (4, 4), value if mode == "L" else (value, 255)).save(folder / name)
    return folder / name


def int32_tiff(folder: Path, name: str = "int32.tif") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), 1 << 20, dtype=np.int32)).save(folder / name)           # mode I
    return folder / name


def bomb_png(folder: Path, name: str = "bomb.png", side: int = 20000) -> Path:
    """A valid 1-bit PNG of side x side pixels (400 M at 20000: over twice PIL's limit), ~60 KB on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(_bomb_bytes(side))
    return folder / name


# ---------------------------------------------------------------- COCO instances json + images
W, H = 40, 30


def coco(root: Path, categories=({"id": 1, "name": "person"}, {"id": 3, "name": "car"}), split="train2017",
         mutate=None) -> Path:
    """root/annotations/instances_<split>.json + root/<split>/*.jpg: 2 images (40x30), 1 polygon object each.
    mutate(data) edits the json dict before it is written (the bad case)."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in (1, 2):
        name = f"{i:012d}.jpg"
        Image.new("RGB", (W, H), (30 * i, 90, 200)).save(root / split / name, quality=90)
        images.append({"id": i, "file_name": name, "width": W, "height": H})
        anns.append({"id": 10 + i, "image_id": i, "category_id": categories[i % len(categories)]["id"],
                     "iscrowd": 0, "bbox": [4.0, 5.0, 20.0, 10.0], "area": 200.0,
                     "segmentation": [[4, 5, 24, 5, 24, 15, 4, 15]]})
    data = {"images": images, "annotations": anns, "categories": [dict(c) for c in categories]}
    if mutate is not None:
        mutate(data)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


# ---------------------------------------------------------------- ADEChallengeData2016
def ade(root: Path, n: int = 2, splits=("training", "validation"), label_value: int = 3) -> Path:
    """root/ADEChallengeData2016/{images,annotations}/<split>/ADE_*: 40x30 jpg + uint8 L label PNG."""
    base = root / "ADEChallengeData2016"
    for split in splits:
        for sub in ("images", "annotations"):
            (base / sub / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"ADE_{split[:5]}_{i + 1:08d}"
            Image.new("RGB", (W, H), (120, 60, 10)).save(base / "images" / split / f"{stem}.jpg")
            lab = np.full((H, W), label_value, np.uint8)
            lab[0] = 0                                                   # a row of 'other' (ignored)
            Image.fromarray(lab, mode="L").save(base / "annotations" / split / f"{stem}.png")
    return base


def ade_label(base: Path, split: str = "training", i: int = 1) -> Path:
    return base / "annotations" / split / f"ADE_{split[:5]}_{i:08d}.png"


# ---------------------------------------------------------------- checkpoints and configs
class Evil:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    import torch
    torch.save({"state_dict": {"backbone.conv1.weight": torch.ones(1)}, "meta": Evil(str(marker))}, path)
    return path


def yaml_file(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


@functools.lru_cache(maxsize=None)
def _parsed_config(path: str):
    from mmengine.config import Config
    return Config.fromfile(path)


def openmmlab_config(path: Path, data_root: Path | None = None):
    """An mmdet/mmseg config parsed once per session; each caller gets its own deep copy, with every
    dataloader's dataset.data_root set to `data_root` (what --data-root does for the pre-flight)."""
    import copy

    from transfer.datacheck import config_datasets
    cfg = copy.deepcopy(_parsed_config(str(path)))
    for _, ds in config_datasets(cfg) if data_root is not None else ():
        ds["data_root"] = str(data_root)
    return cfg


# ---------------------------------------------------------------- the toy world (benchmarks/toydata.py), tiny
def toy_world(folder: Path) -> dict:
    """The real toy-world writer at its smallest (32 px, 1-2 images per split): paths as world_paths gives them."""
    from benchmarks.toydata import make_toy_world
    return make_toy_world(folder, size=32, dense_size=32, n_train=1, n_val=1, n_dense_train=2, n_dense_val=1,
                          check=False)
