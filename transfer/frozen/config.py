"""Typed, strict configuration of a frozen-feature protocol (linear probe or k-NN on cached features), through the
shared strict loader (pretrain.config.StrictSchema). load_config(yaml, ["probe.lr=0.1", ...]) -> FrozenConfig.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import MISSING

from pretrain.config import ConfigError, StrictSchema, to_yaml


@dataclass
class FrozenModelConfig:
    weights: str = MISSING                # exported .safetensors (+ .json sidecar)
    levels: List[int] = field(default_factory=lambda: [-1])   # feature levels (transfer.backbones.FeatureBackbone
                                          # out_indices), each global-average-pooled, then concatenated


@dataclass
class FrozenDataConfig:
    root: str = MISSING                   # ImageNet folder: <root>/<train_split>/<wnid>/*, <root>/<val_split>/<wnid>/*
    train_split: str = "train"
    val_split: str = "val"
    test_size: int = 224                  # centre crop (the features of every image, train and val alike)
    test_resize: int = 256                # shorter side resized to this first
    interpolation: str = "bicubic"
    batch: int = 128                      # images per forward pass of the feature extraction
    num_workers: int = 8
    skip_budget: int = 0                  # unreadable images tolerated (a frozen protocol sees every image once)
    max_image_pixels: Optional[int] = None


@dataclass
class ProbeConfig:                        # protocol 'linear': BatchNorm1d(affine=False) + Linear (MAE / MoCo)
    epochs: int = 90
    batch: int = 256
    optimizer: str = "lars"               # lars (MAE) | sgd (MoCo: momentum 0.9)
    lr: Optional[float] = None            # peak lr; None: base_lr * batch / 256
    base_lr: float = 0.1
    weight_decay: float = 0.0
    warmup_epochs: float = 10.0
    head_bn: bool = True
    head_init_std: float = 0.01


@dataclass
class KnnConfig:                          # protocol 'knn': DINO's weighted k-NN on L2-normalised features
    k: int = 20
    temperature: float = 0.07


@dataclass
class FrozenRunConfig:
    out_dir: str = MISSING
    protocol: str = "linear"              # linear | knn
    recipe: Optional[str] = None          # recipe id in result.json (e.g. 'toy'); None: the config file's stem
    seed: int = 0                         # linear: head init + batch order (k-NN is deterministic)
    device: str = "auto"                  # auto | cpu | cuda
    cache_dir: Optional[str] = None       # where features are cached (shared by protocols); None: <out_dir>/features


@dataclass
class FrozenConfig:
    model: FrozenModelConfig = field(default_factory=FrozenModelConfig)
    data: FrozenDataConfig = field(default_factory=FrozenDataConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    run: FrozenRunConfig = field(default_factory=FrozenRunConfig)


CHOICES = {
    "data.interpolation": ("bilinear", "bicubic"),
    "probe.optimizer": ("lars", "sgd"),
    "run.protocol": ("linear", "knn"),
    "run.device": ("auto", "cpu", "cuda"),
}


def _checks(cfg: FrozenConfig) -> list:
    d, p, k = cfg.data, cfg.probe, cfg.knn
    return [
        ("model.levels", len(cfg.model.levels) >= 1 and len(set(cfg.model.levels)) == len(cfg.model.levels),
         "a non-empty list of distinct feature levels"),
        ("data.test_size", d.test_size >= 1, "an integer >= 1"),
        ("data.test_resize", d.test_resize >= d.test_size, "an integer >= data.test_size"),
        ("data.batch", d.batch >= 1, "an integer >= 1"),
        ("data.num_workers", d.num_workers >= 0, "an integer >= 0"),
        ("data.skip_budget", d.skip_budget >= 0, "an integer >= 0"),
        ("probe.epochs", p.epochs >= 1, "an integer >= 1"),
        ("probe.batch", p.batch >= 1, "an integer >= 1"),
        ("probe.lr", p.lr is None or p.lr > 0, "a positive number or null"),
        ("probe.base_lr", p.base_lr > 0, "a positive number"),
        ("probe.weight_decay", p.weight_decay >= 0, ">= 0"),
        ("probe.warmup_epochs", 0 <= p.warmup_epochs < p.epochs, "in [0, probe.epochs)"),
        ("probe.head_init_std", p.head_init_std > 0, "a positive number"),
        ("knn.k", k.k >= 1, "an integer >= 1"),
        ("knn.temperature", k.temperature > 0, "a positive number"),
    ]


SCHEMA = StrictSchema(FrozenConfig, CHOICES, _checks)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> FrozenConfig:
    return SCHEMA.load(path, overrides)


__all__ = ["ConfigError", "FrozenConfig", "SCHEMA", "load_config", "to_yaml"]
