"""Typed, strict configuration of a classification run (fine-tune or linear probe), through the same strict loader
as pre-training (pretrain.config.StrictSchema): unknown keys name the nearest valid one, values are typed,
enumerations are checked. load_config(yaml, ["optim.lr=1e-3", ...]) -> ClsConfig.

Learning rate: optim.lr if set, else optim.base_lr * global_batch / optim.lr_ref_batch (global batch =
run.batch_per_gpu x processes x run.accum_steps). Sizes are in pixels; epochs/warm-up in epochs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import MISSING

from pretrain.config import ConfigError, LoopRunConfig, ScheduleConfig, StrictSchema, schedule_checks, to_yaml
from pretrain.schema import at_least, crop_checks, loop_run_checks, optim_checks, within
from pretrain.models.presets import get_preset


@dataclass
class ClsModelConfig:
    weights: str = MISSING                # exported .safetensors (+ .json sidecar) or an official A2MIM .pth
    mode: str = "finetune"                # finetune (whole network) | linear (frozen backbone + linear head)
    preset: Optional[str] = None          # backbone preset; None: the weights' sidecar (needed for a .pth)
    num_classes: Optional[int] = None     # None: the number of class folders in data.root/<train_split>
    global_pool: Optional[str] = None     # ViT only: avg (mean of patch tokens + fc_norm LayerNorm) | token (cls
                                          # token after the final norm); None: avg to fine-tune, token to probe
    drop_path: float = 0.0                # stochastic depth of the fine-tuned network (linear: always 0)
    head_bn: bool = True                  # linear: BatchNorm1d(affine=False, eps=1e-6) before the head (MAE)
    head_init_std: float = 0.01           # linear: head weight ~ trunc_normal(std), bias 0 (MAE / MoCo 0.01)


@dataclass
class ClsDataConfig:
    root: str = MISSING                   # ImageNet folder: <root>/<train_split>/<wnid>/*, <root>/<val_split>/<wnid>/*
    train_split: str = "train"
    val_split: str = "val"
    train_size: int = 224                 # RandomResizedCrop output
    test_size: int = 224                  # centre crop at test
    test_resize: int = 256                # shorter side resized to this before the centre crop
    interpolation: str = "bicubic"        # bilinear | bicubic (train crop and test resize)
    rrc_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    rrc_ratio: List[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip: float = 0.5
    color_jitter: float = 0.0             # timm: ignored when auto_augment is set
    auto_augment: Optional[str] = None    # timm RandAugment spec, e.g. rand-m7-mstd0.5-inc1
    re_prob: float = 0.0                  # timm RandomErasing probability
    re_mode: str = "pixel"                # const | rand | pixel
    repeated_aug: int = 1                 # repeated augmentation: copies of each image per epoch (1 = off; RSB 3)
    num_workers: int = 8                  # per process
    skip_budget: int = 100                # unreadable images tolerated per run before it fails
    max_image_pixels: Optional[int] = None  # decompression-bomb limit; None: PIL's
    # loader hygiene of the shared loop (pretrain.loop.Loop.build_loader): one DataLoader per run
    prefetch_factor: int = 2              # batches each worker loads ahead (num_workers > 0)
    pin_memory: bool = True               # page-locked batches when training on CUDA
    persistent_workers: bool = True       # one set of workers for the whole run (num_workers > 0)


@dataclass
class MixupConfig:                        # timm.data.Mixup on each batch ('batch' mode), 0/0 = off
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0                     # probability to mix a batch
    switch_prob: float = 0.5              # with both on: probability of CutMix instead of Mixup


@dataclass
class LossConfig:
    name: str = "ce"                      # ce (soft-target CE with mixing) | bce (timm BinaryCrossEntropy, RSB)
    label_smoothing: float = 0.0
    bce_target_thresh: Optional[float] = None   # bce: binarise mixed targets above this (timm); None: soft


@dataclass
class ClsOptimConfig:
    name: str = "adamw"                   # adamw | lamb | lars | momentum (SGD) | sgd (SGD, Nesterov) (timm.optim)
    lr: Optional[float] = None            # peak lr; None: base_lr * global_batch / lr_ref_batch
    base_lr: float = 1e-3
    lr_ref_batch: int = 256
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])   # adamw, lamb
    eps: float = 1e-8                     # adamw, lamb
    momentum: float = 0.9                 # lars, momentum, sgd
    weight_decay: float = 0.05            # never on biases, norms (1-D tensors) or the model's no_weight_decay()
    layer_decay: Optional[float] = None   # layer-wise lr decay (transfer.param_groups, BEiT rule), e.g. 0.65 for ViT
    clip_grad: Optional[float] = None     # max grad norm


@dataclass
class EmaConfig:
    decay: Optional[float] = None         # timm ModelEmaV3 decay; None: no EMA
    warmup: bool = False                  # timm's EMA warm-up: decay = min(decay, 1 - (1 + step)^-2/3)


@dataclass
class ClsRunConfig(LoopRunConfig):
    eval_interval: int = 1                # evaluate on val every N epochs (and always at the end); 0: end only
    eval_batch_per_gpu: Optional[int] = None   # None: run.batch_per_gpu
    # protocol id of benchmarks/reference.yaml without the '@pt<epochs>' part (added from the weights' sidecar);
    # result.json carries it so the leaderboard sets the run beside the paper's row of the same protocol
    protocol: Optional[str] = None


@dataclass
class ClsConfig:
    model: ClsModelConfig = field(default_factory=ClsModelConfig)
    data: ClsDataConfig = field(default_factory=ClsDataConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: ClsOptimConfig = field(default_factory=ClsOptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    run: ClsRunConfig = field(default_factory=ClsRunConfig)


CHOICES = {
    "model.mode": ("finetune", "linear"),
    "model.global_pool": ("avg", "token", None),
    "data.interpolation": ("bilinear", "bicubic"),
    "data.re_mode": ("const", "rand", "pixel"),
    "loss.name": ("ce", "bce"),
    "optim.name": ("adamw", "lamb", "lars", "momentum", "sgd"),
    "schedule.kind": ("cosine", "step"),
    "run.precision": ("fp32", "bf16", "fp16"),
    "run.device": ("auto", "cpu", "cuda"),
}


def mixup_active(cfg: ClsConfig) -> bool:
    return cfg.mixup.prob > 0 and (cfg.mixup.mixup_alpha > 0 or cfg.mixup.cutmix_alpha > 0)


def _checks(cfg: ClsConfig) -> list:
    r, d, s, o = cfg.run, cfg.data, cfg.schedule, cfg.optim
    checks = [
        ("run.batch_per_gpu", r.batch_per_gpu >= 1, "an integer >= 1"),
        ("run.accum_steps", r.accum_steps >= 1, "an integer >= 1"),
        ("run.log_interval", r.log_interval >= 1, "an integer >= 1"),
        ("run.ckpt_interval", r.ckpt_interval >= 1, "an integer >= 1"),
        ("run.keep_last", r.keep_last >= 0, "an integer >= 0"),
        ("run.eval_interval", r.eval_interval >= 0, "an integer >= 0"),
        ("data.rrc_scale", len(d.rrc_scale) == 2, "a list of 2 floats"),
        ("data.rrc_ratio", len(d.rrc_ratio) == 2, "a list of 2 floats"),
        ("data.repeated_aug", d.repeated_aug >= 1, "an integer >= 1"),
        ("data.skip_budget", d.skip_budget >= 0, "an integer >= 0"),
        ("data.test_resize", d.test_resize >= d.test_size, "an integer >= data.test_size"),
        ("optim.betas", len(o.betas) == 2, "a list of 2 floats"),
        ("optim.layer_decay", o.layer_decay is None or (0 < o.layer_decay <= 1 and cfg.model.mode == "finetune"),
         "null, or in (0, 1] with model.mode=finetune (a linear probe trains only its head)"),
        ("run.batch_per_gpu", not mixup_active(cfg) or r.batch_per_gpu % 2 == 0,
         "an even number when Mixup/CutMix is on (timm's batch mode mixes the batch with its flip)"),
        ("ema.decay", cfg.ema.decay is None or 0 < cfg.ema.decay < 1, "null or in (0, 1)"),
    ]
    for key, val in (("model.num_classes", cfg.model.num_classes), ("run.max_steps", r.max_steps),
                     ("run.eval_batch_per_gpu", r.eval_batch_per_gpu)):
        if val is not None:
            checks.append((key, val >= 1, "an integer >= 1 or null"))
    mx, ls = cfg.mixup, cfg.loss
    checks += [*optim_checks(o), *crop_checks(d), *loop_run_checks(r),
               within("optim.momentum", o.momentum, 0, 1, hi_open=True),
               at_least("data.train_size", d.train_size, 1), at_least("data.test_size", d.test_size, 1),
               at_least("data.num_workers", d.num_workers, 0), at_least("data.color_jitter", d.color_jitter, 0),
               at_least("data.prefetch_factor", d.prefetch_factor, 1),
               within("data.re_prob", d.re_prob, 0, 1),
               at_least("data.max_image_pixels", d.max_image_pixels, 1, null=True),
               within("model.drop_path", cfg.model.drop_path, 0, 1, hi_open=True),
               at_least("model.head_init_std", cfg.model.head_init_std, 0),
               at_least("mixup.mixup_alpha", mx.mixup_alpha, 0), at_least("mixup.cutmix_alpha", mx.cutmix_alpha, 0),
               within("mixup.prob", mx.prob, 0, 1), within("mixup.switch_prob", mx.switch_prob, 0, 1),
               within("loss.label_smoothing", ls.label_smoothing, 0, 1, hi_open=True),
               within("loss.bce_target_thresh", ls.bce_target_thresh, 0, 1, null=True)]
    return checks + schedule_checks(s)


def _check_preset(cfg: ClsConfig) -> None:
    if cfg.model.preset is not None:
        try:
            get_preset(cfg.model.preset)
        except KeyError as e:
            raise ConfigError(f"config key 'model.preset': {e.args[0]}") from None


SCHEMA = StrictSchema(ClsConfig, CHOICES, _checks, extra=_check_preset)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ClsConfig:
    """Defaults <- YAML preset <- key=value overrides, strictly checked."""
    return SCHEMA.load(path, overrides)


def changed_keys(old_text: str, new_text: str) -> list[str]:
    return SCHEMA.changed_keys(old_text, new_text)


__all__ = ["ClsConfig", "ConfigError", "SCHEMA", "changed_keys", "load_config", "mixup_active", "to_yaml"]
