"""Toy-world rendering: lightly textured gray shapes (the classes) with scale, rotation (+-30 deg), stretch and
occlusion (dense scenes) on low-contrast textured backgrounds. benchmarks/toydata.py writes the scenes in
ImageNet / COCO / ADE20K formats.

Conventions: images are float32 (H, W, 3) in [0, 1] until `to_uint8`; masks are bool (H, W); a point is (x, y) with
x = column, y = row, and pixel (row y, col x) covers [x, x+1) x [y, y+1) in continuous coordinates (COCO's).
Gray levels, texture, position, size and pose are drawn independently of the class, so only the shape tells the
class apart. Why gray, one polarity and narrow level ranges (measured, benchmarks/analysis/results/toy_signal.md):
with random colours and brightness, 70-85 % of the variance of a (random or MIM pre-trained) backbone's pooled
features followed the image's mean brightness and contrast, so k-NN and linear probes of every init sat near chance
and a supervised ResNet-18 learnt ~25 % top-1 in the toy budget; with the nuisance held in a narrow range the
shapes dominate and the protocols measure what pre-training learnt.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "heart")
TEXTURES = ("solid", "stripes", "checker", "dots", "noise", "gradient")
MAX_ROTATION = np.pi / 6  # shapes turn by up to +-30 deg: full rotation invariance is too slow to learn on a CPU budget


def _ngon(n: int, r: float = 1.0, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], 1) * r  # (n, 2) unit-scale (x, y)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    outer = _ngon(points, 1.0, -np.pi / 2)
    inner_pts = _ngon(points, inner, -np.pi / 2 + np.pi / points)
    return np.stack([outer, inner_pts], 1).reshape(-1, 2)


def _plus(half_width: float = 0.33) -> np.ndarray:
    a, b = half_width, 1.0
    return np.array([(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b),
                     (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a), (-a, b)])


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    p = np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], 1)
    return (p - p.mean(0)) / 16.0


# class -> parts (unit-scale polygon, True = add / False = cut out); areas are within ~2x of each other
SHAPES: dict[str, list[tuple[np.ndarray, bool]]] = {
    "circle": [(_ngon(48), True)],
    "square": [(_ngon(4, 1.15, np.pi / 4), True)],
    "triangle": [(_ngon(3, 1.15, -np.pi / 2), True)],
    "star": [(_star(), True)],
    "cross": [(_plus(), True)],
    "ring": [(_ngon(48), True), (_ngon(48, 0.55), False)],
    "crescent": [(_ngon(48), True), (_ngon(48, 0.85) + [0.45, 0.0], False)],
    "heart": [(_heart(), True)],
}
assert tuple(SHAPES) == CLASSES


def fill_polygon(mask: np.ndarray, pts: np.ndarray, value: int = 1) -> np.ndarray:
    """Rasterise a continuous-coordinate polygon (n, 2) into a uint8 mask (sub-pixel precise, 1/16 px)."""
    fixed = np.round((pts - 0.5) * 16).astype(np.int32)  # cv2 vertex = pixel centre; shift=4 -> 1/16 px
    cv2.fillPoly(mask, [fixed], value, lineType=cv2.LINE_8, shift=4)
    return mask


def shape_mask(name: str, cx: float, cy: float, r: float, angle: float, stretch: tuple[float, float],
               h: int, w: int) -> np.ndarray:
    """(h, w) bool mask of shape `name` centred at (cx, cy), radius r px, rotated by `angle`, axis-stretched."""
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    out = np.zeros((h, w), np.uint8)
    for poly, add in SHAPES[name]:
        pts = (poly * stretch) @ rot.T * r + (cx, cy)
        part = fill_polygon(np.zeros((h, w), np.uint8), pts)
        out = (out | part) if add else (out & (1 - part))
    return out.astype(bool)


BACKGROUND_LEVEL = (0.35, 0.5)   # mean gray level of a background
OBJECT_OFFSET = (0.25, 0.35)     # an object is this much lighter than what it covers (one polarity)


def texture(rng: np.random.Generator, h: int, w: int, level: float, contrast: float) -> np.ndarray:
    """(h, w, 3) float32 gray texture: two random colours mixed by a random pattern (one of TEXTURES), the second
    pulled towards the first by a factor in (0.2, 1), turned to gray, centred on `level` and scaled by `contrast`
    (a texture's peak-to-peak is then ~0.15 x contrast on average); the same in the three channels."""
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    c1, c2 = rng.uniform(0, 1, (2, 3)).astype(np.float32)
    c2 = c1 + (c2 - c1) * np.float32(rng.uniform(0.2, 1.0))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    th = rng.uniform(0, np.pi)
    u, v = xx * np.cos(th) + yy * np.sin(th), -xx * np.sin(th) + yy * np.cos(th)  # rotated frame
    if kind == "solid":
        t = np.zeros((h, w), np.float32)
    elif kind == "stripes":
        t = np.sin(2 * np.pi * u / rng.uniform(3, 9) + rng.uniform(0, 2 * np.pi)) > 0
    elif kind == "checker":
        s = rng.uniform(3, 8)
        t = (np.floor(u / s) + np.floor(v / s)) % 2
    elif kind == "dots":
        s = rng.uniform(4, 9)
        t = ((u % s) - s / 2) ** 2 + ((v % s) - s / 2) ** 2 < (rng.uniform(0.2, 0.4) * s) ** 2
    elif kind == "noise":
        k = int(rng.integers(2, 6))
        coarse = rng.uniform(0, 1, (h // k + 2, w // k + 2)).astype(np.float32)
        t = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    else:  # gradient
        t = (u - u.min()) / max(float(np.ptp(u)), 1e-6)
    t = np.asarray(t, np.float32)[..., None]
    g = (c1 * (1 - t) + c2 * t).mean(-1)                                  # (h, w) gray
    g = (g - g.mean()) * np.float32(contrast) + np.float32(level)
    return np.repeat(g[..., None], 3, axis=-1)


def paint(img: np.ndarray, mask: np.ndarray, tex: np.ndarray) -> None:
    img[mask] = tex[mask]


def paint_object(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    """Paint a lightly textured object OBJECT_OFFSET lighter than what it covers, so its silhouette is visible;
    its gray level says nothing about the class."""
    if not mask.any():
        return
    under = float(img[mask].mean())
    paint(img, mask, texture(rng, *mask.shape, under + rng.uniform(*OBJECT_OFFSET), 0.2))


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A low-contrast gray texture at a level drawn from BACKGROUND_LEVEL."""
    return texture(rng, h, w, rng.uniform(*BACKGROUND_LEVEL), 0.3)


def to_uint8(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    img = img + rng.normal(0, 0.025, img.shape).astype(np.float32)  # sensor noise
    return (img.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def _random_shape(rng: np.random.Generator, label: int, cx: float, cy: float, r: float, h: int, w: int) -> np.ndarray:
    stretch = tuple(rng.uniform(0.8, 1.2, 2))
    return shape_mask(CLASSES[label], cx, cy, r, rng.uniform(-MAX_ROTATION, MAX_ROTATION), stretch, h, w)


def classification_image(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    """(size, size, 3) uint8: one object of class `label` (diameter 44-76 % of the image) on a background."""
    img = background(rng, size, size)
    r = size * rng.uniform(0.22, 0.38)
    cx, cy = rng.uniform(0.8 * r, size - 0.8 * r, 2)
    mask = _random_shape(rng, label, cx, cy, r, size, size)
    paint_object(rng, img, mask)
    return to_uint8(rng, img)


@dataclass
class Scene:
    image: np.ndarray                      # (H, W, 3) uint8
    instances: list[tuple[int, np.ndarray]]  # (class index, visible bool mask), paint order (later ones on top)
    crowd: tuple[int, np.ndarray] | None   # a cluster of tiny same-class shapes: (class index, visible mask)


def dense_scene(rng: np.random.Generator, size: int, max_objects: int = 4, p_crowd: float = 0.2,
                min_visible: float = 0.35, min_area: int = 12, radius: tuple[float, float] = (0.13, 0.3)) -> Scene:
    """Several objects (1..max_objects, radius `radius` x size: 25-60 % of the image across) that may occlude each
    other; every kept object stays >= `min_visible` of its in-frame area and >= `min_area` px visible. Optionally a
    crowd cluster under them (COCO iscrowd=1). Sized so that a small CNN/ViT learns the shapes within a few hundred
    CPU iterations (the toy suite's budget)."""
    h = w = size
    img = background(rng, h, w)
    crowd = None
    if rng.uniform() < p_crowd:
        label = int(rng.integers(len(CLASSES)))
        ccx, ccy = rng.uniform(0.2 * size, 0.8 * size, 2)
        cm = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(6, 13))):
            dx, dy = rng.normal(0, 0.07 * size, 2)
            m = _random_shape(rng, label, ccx + dx, ccy + dy, rng.uniform(2.5, 4.0), h, w)
            paint_object(rng, img, m)
            cm |= m
        crowd = (label, cm)
    full: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(10):
            label = int(rng.integers(len(CLASSES)))
            r = size * rng.uniform(*radius)
            cx, cy = rng.uniform(0.5 * r, size - 0.5 * r, 2)
            m = _random_shape(rng, label, cx, cy, r, h, w)
            if m.sum() < 2 * min_area:
                continue
            on_top = m.copy()
            ok = True
            for _lab, prev in reversed(full):  # each earlier object must stay visible enough
                vis = prev & ~on_top
                if vis.sum() < max(min_area, min_visible * prev.sum()):
                    ok = False
                    break
                on_top |= prev
            if ok:
                full.append((label, m))
                paint_object(rng, img, m)
                break
    instances, above = [], np.zeros((h, w), bool)
    for label, m in reversed(full):
        instances.append((label, m & ~above))
        above |= m
    instances.reverse()
    if crowd is not None:
        vis = crowd[1] & ~above
        crowd = (crowd[0], vis) if vis.sum() >= min_area else None
    return Scene(to_uint8(rng, img), instances, crowd)
