"""Small generated image sets for the engine tests (shapes on gradients, written with PIL)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "pretrain" / "configs"


def make_images(root: str | Path, n: int = 32, size: tuple[int, int] = (80, 72), classes: int = 2,
                layout: str = "image_folder", seed: int = 0) -> Path:
    """n RGB PNGs: a colour gradient with 2-3 filled shapes. layout 'imagenet' -> root/train/n0000000k/*.JPEG."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = (xx / w if i % 2 else yy / h)[..., None]
        arr = (c0 * (1 - t) + c1 * t).astype(np.uint8)
        im = Image.fromarray(arr)
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(2, 4))):
            x, y = rng.integers(0, w - 24), rng.integers(0, h - 24)
            s = int(rng.integers(12, 24))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)([x, y, x + s, y + s], fill=fill)
        if layout == "imagenet":
            folder, name = root / "train" / f"n{i % classes:08d}", f"img_{i:04d}.JPEG"
            folder.mkdir(parents=True, exist_ok=True)
            im.save(folder / name, format="JPEG", quality=95)
        else:
            folder = root / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            im.save(folder / f"img_{i:04d}.png")
    return root


def write_corrupt(folder: str | Path, name: str = "broken.png") -> Path:
    """A PNG cut off in the middle of its data (PIL raises on decode; LOAD_TRUNCATED_IMAGES stays off)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / f".{name}.full.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    good.unlink()
    path = folder / name
    path.write_bytes(data[: len(data) // 2])
    return path


def train_cmd(config: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "pretrain.train", "--config", str(CONFIGS / config), *overrides]


def child_env() -> dict:
    """Environment of a training subprocess: one thread (bit-exact comparisons), repo importable, no GPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    return env
