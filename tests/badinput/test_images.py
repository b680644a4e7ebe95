"""Bad and unusual images through the pre-training dataset and the `pretrain.verify_data` CLI."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ImageFile

import corpus
from pretrain.data import IMAGENET_MEAN, IMAGENET_STD, DataError, MaskedImageDataset, build_transform, list_images
from pretrain.masking import BlockMaskGenerator

REPO = Path(__file__).resolve().parents[2]
MASK = BlockMaskGenerator(input_size=32, mask_patch=16, model_patch=16, ratio=0.5)


def _dataset(paths, **kw):
    return MaskedImageDataset([str(p) for p in paths], build_transform(32, (1.0, 1.0), (1.0, 1.0), 0.0), MASK,
                              seed=3, **kw)


def _rgb(path, **kw) -> np.ndarray:
    im = _dataset([path], **kw).decode(str(path))
    assert im.mode == "RGB"
    return np.asarray(im).astype(int)


# ---------------------------------------------------------------- unusual but valid: decoded to the right RGB
def test_unusual_modes_decode_to_hand_checked_rgb(tmp_path, tally):
    d = tmp_path / "imgs"
    assert _rgb(corpus.cmyk_jpeg(d))[0, 0].tolist() == pytest.approx([255, 0, 0], abs=2)      # C=0 M=Y=255 -> red
    k = _rgb(corpus.cmyk_jpeg(d, "cmyk_k.jpg", (0, 0, 0, 128)))[0, 0]
    assert k.tolist() == pytest.approx([127, 127, 127], abs=2)                                  # 255 - K
    g16 = _rgb(corpus.png16_gray(d))                  # 16-bit grey v -> v >> 8 (PIL alone would clip 32768 to 255)
    assert g16[..., 0].tolist() == [[255, 128], [1, 0]] and (g16[..., 0] == g16[..., 2]).all()
    assert _rgb(corpus.png16_rgb(d))[1, 1].tolist() == [255, 128, 0]                            # high byte
    assert _rgb(corpus.palette_alpha_png(d)).tolist() == [[[255, 0, 0], [0, 0, 255]]]           # alpha dropped
    assert _rgb(corpus.rgba_png(d))[0, 0].tolist() == [10, 20, 30]                              # alpha 0, colour kept
    assert _rgb(corpus.gray_png(d))[2, 2].tolist() == [100, 100, 100]
    assert _rgb(corpus.gray_png(d, "la.png", 77, mode="LA"))[0, 0].tolist() == [77, 77, 77]
    tally.decoded("cmyk_jpeg", "cmyk_jpeg_black", "png16_gray", "png16_rgb", "palette_alpha_png", "rgba_png",
                  "grayscale_png", "grayscale_alpha_png")
    # through __getitem__: a solid 16-bit grey 32768 becomes 128/255 in every channel, then ImageNet-normalised
    p = corpus.png16_gray(d, "solid16.png", values=[[32768] * 40] * 40)
    x, _, skipped = _dataset([p])[(0, 0)]
    want = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert skipped == [] and torch.allclose(x.mean(dim=(1, 2)), want, atol=1e-4)


# ---------------------------------------------------------------- unreadable: a counted skip naming the path
SKIPS = {  # case -> (writer, what the message must say)
    "truncated_jpeg": (corpus.truncated_jpeg, r"truncated.jpg: unreadable image \(OSError: image file is truncated"),
    "zero_byte_jpeg": (corpus.zero_byte, r"empty.jpg: unreadable image \(UnidentifiedImageError: cannot identify"),
    "text_named_jpeg": (lambda d: corpus.text_file(d, "fake.JPEG"), r"fake.JPEG: unreadable image \(Unidentified"),
    "decompression_bomb": (corpus.bomb_png, r"bomb.png: refused by the decompression-bomb guard \(Image size "
                                            r"\(400000000 pixels\) exceeds limit of 178956970 pixels"),
    "int32_tiff": (corpus.int32_tiff, r"int32.tif: unreadable image \(ValueError: 32-bit integer image \(mode I\) "
                                      r"has no defined 8-bit range"),
}


@pytest.mark.parametrize("case", sorted(SKIPS))
def test_unreadable_image_is_a_counted_skip(tmp_path, case, tally):
    writer, message = SKIPS[case]
    bad = writer(tmp_path / "c0")
    ds = _dataset([bad, corpus.good(tmp_path / "c1")], skip_budget=2)
    with pytest.warns(UserWarning, match="skipping image: .*" + message):
        x, _, skipped = ds[(0, 0)]
    assert x.shape == (3, 32, 32) and len(skipped) == 1 and str(bad) in skipped[0]
    with pytest.raises(DataError, match=message):
        ds.decode(str(bad))
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    tally.skip(case)


def test_folders_non_image_files_and_empty_classes(tmp_path, tally):
    root = tmp_path / "inet"
    corpus.good(root / "train" / "n01")
    corpus.text_file(root / "train" / "n01", "notes.txt")
    (root / "train" / "n02").mkdir()                                   # an empty class folder
    assert list_images(root, "imagenet_folder") == [str(root / "train" / "n01" / "good.png")]
    (root / "val" / "n01").mkdir(parents=True)
    with pytest.raises(DataError, match=r"data.root=.*inet \(data.kind=imagenet_folder\): no images found"):
        list_images(root, "imagenet_folder", "val")                   # a whole split empty: a clear error
    tally.skip("non_image_file_in_class_folder", "empty_class_folder")
    tally.error("empty_split")


# ---------------------------------------------------------------- the pre-flight CLI
def _verify(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain.verify_data", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_verify_data_cli_reports_every_bad_image_and_exits_1(tmp_path, tally):
    root = tmp_path / "inet"
    for i in range(70):                        # > one chunk of 64: the process pool path is taken
        corpus.good(root / "train" / f"n{i % 2:02d}", f"ok_{i}.png", size=(16, 16))
        corpus.good(root / "val" / f"n{i % 2:02d}", f"ok_{i}.png", size=(16, 16))
    for case in SKIPS:
        SKIPS[case][0](root / "train" / "n00")
    corpus.text_file(root / "train" / "n01", "notes.txt")
    (root / "train" / "n02").mkdir()
    (root / "val" / "n02").mkdir()
    p = _verify(root, "--workers", 2, "--json", tmp_path / "report.json")
    assert p.returncode == 1, p.stderr
    out = p.stdout.splitlines()
    for case, (_, message) in SKIPS.items():
        assert any(line.startswith("BAD  ") and re.search(message, line) for line in out), case
    assert f"SKIP {root}/train/n01/notes.txt: not an image extension" in p.stdout
    assert f"SKIP {root}/train/n02: empty class folder (expected at least one image)" in p.stdout
    assert out[-1] == f"verify_data: imagenet {root}: 146 items checked, 5 bad, 3 skipped by the loaders"
    assert "Traceback" not in p.stderr
    rep = json.loads((tmp_path / "report.json").read_text())
    assert (rep["bad"], rep["skipped"], rep["checked"]) == (5, 3, 146)
    # after removing the bad files the same folder passes
    for f in rep["findings"]:
        if f["severity"] == "error":
            Path(f["path"]).unlink()
    p = _verify(root, "--workers", 2)
    assert p.returncode == 0
    assert p.stdout.splitlines()[-1].endswith("141 items checked, 0 bad, 3 skipped by the loaders")
    assert _verify(tmp_path / "nope").returncode == 2
    flat = tmp_path / "flat"                            # a plain folder of images (recursive), no class folders
    corpus.good(flat / "a" / "b")
    bad = corpus.zero_byte(flat / "a")
    p = _verify(flat, "--kind", "imagenet")
    assert p.returncode == 1 and p.stdout.splitlines() == [
        f"BAD  {bad}: unreadable image (UnidentifiedImageError: cannot identify image file '{bad}')",
        f"verify_data: imagenet {flat}: 2 items checked, 1 bad, 0 skipped by the loaders"]
    tally.error("verify_data_cli_bad_images")
