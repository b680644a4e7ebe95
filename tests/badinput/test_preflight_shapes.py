"""`python -m pretrain.verify_data` flags tiny and extremely elongated images (shorter side < --min-side 16 px,
aspect > --max-aspect 20) as warnings: 'WARN path: reason' lines, counted in the summary, exit status 0."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

import corpus

REPO = Path(__file__).resolve().parents[2]


def _verify(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain.verify_data", *map(str, args), "--workers", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "inet"
    for split in ("train", "val"):
        corpus.good(root / split / "n01", "ok.png", size=(24, 20))
    corpus.good(root / "train" / "n01", "dot.png", size=(1, 1))
    corpus.good(root / "train" / "n01", "strip.png", size=(1, 3000))
    corpus.good(root / "val" / "n01", "banner.png", size=(630, 30))        # 21:1, sides fine
    return root


def test_tiny_and_elongated_images_are_warnings(tmp_path, tally):
    root = _folder(tmp_path)
    p = _verify(root, "--json", tmp_path / "r.json")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
    t = f"{root}/train/n01"
    assert p.stdout.splitlines() == [
        f"WARN {t}/dot.png: 1x1 image: shorter side 1 px < 16 (--min-side); used as is by the loaders",
        f"WARN {t}/strip.png: 1x3000 image: shorter side 1 px < 16 (--min-side) and aspect ratio 3000.0 > 20 "
        f"(--max-aspect); used as is by the loaders",
        f"WARN {root}/val/n01/banner.png: 630x30 image: aspect ratio 21.0 > 20 (--max-aspect); used as is by the "
        f"loaders",
        f"verify_data: imagenet {root}: 5 items checked, 0 bad, 0 skipped by the loaders, 3 warnings"], p.stdout
    rep = json.loads((tmp_path / "r.json").read_text())
    assert (rep["bad"], rep["warned"]) == (0, 3) and {f["severity"] for f in rep["findings"]} == {"warn"}
    tally.warned("imagenet_tiny_image_warned", "imagenet_elongated_image_warned")


def test_thresholds_are_flags(tmp_path):
    root = _folder(tmp_path)
    p = _verify(root, "--min-side", 0, "--max-aspect", 0)
    assert p.returncode == 0 and p.stdout.splitlines() == [
        f"verify_data: imagenet {root}: 5 items checked, 0 bad, 0 skipped by the loaders"], p.stdout
    p = _verify(root, "--min-side", 1, "--max-aspect", 25)
    assert p.returncode == 0 and [x.split(":")[0] for x in p.stdout.splitlines()[:-1]] == [
        f"WARN {root}/train/n01/strip.png"], p.stdout
    p = _verify(root, "--max-aspect", 0.5)
    assert p.returncode == 2 and "--max-aspect 0 or >= 1" in p.stderr


def test_coco_images_are_checked_too(tmp_path, tally):
    def strip(data):                                   # image 1 becomes 3000x1, its object a 20x1 box
        data["images"][0].update(width=3000, height=1)
        data["annotations"][0].update(bbox=[0, 0, 20, 1], area=20.0, segmentation=[[0, 0, 20, 0, 20, 1, 0, 1]])
    root = corpus.coco(tmp_path / "coco", split="val2017", mutate=strip)
    Image.new("RGB", (3000, 1), (9, 9, 9)).save(root / "val2017" / "000000000001.jpg")
    p = _verify(root)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines() == [
        f"WARN {root}/val2017/000000000001.jpg: 3000x1 image: shorter side 1 px < 16 (--min-side) and aspect "
        f"ratio 3000.0 > 20 (--max-aspect); used as is by the loaders",
        f"verify_data: coco {root}: 6 items checked, 0 bad, 0 skipped by the loaders, 1 warning"], p.stdout
    tally.warned("coco_elongated_image_warned")
