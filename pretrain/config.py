"""Typed, strict configuration of a pre-training run (OmegaConf structured config over dataclasses).

load_config(yaml_path, ["optim.lr=1e-3", ...]) -> PretrainConfig (a plain dataclass instance).
Strict: an unknown key fails naming the nearest valid key; a value of the wrong type fails naming the key
and the expected type; enumerated strings (method, precision, ...) fail naming the allowed values.
to_yaml(cfg) is the resolved text written to <run>/config.yaml and into every checkpoint.
StrictSchema (pretrain/schema.py) holds the strict loader for any dataclass tree; PRETRAIN is the pre-training
one, and transfer/classification/config.py builds its own from the shared LoopRunConfig / ScheduleConfig sections.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf

from pretrain.models.presets import BackbonePreset, LossPreset, get_preset
from pretrain.schema import (ConfigError, StrictSchema, at_least, crop_checks, loop_run_checks, optim_checks,
                             to_dict, to_yaml, within)


@dataclass
class ModelConfig:
    preset: str = "resnet50"              # a name of pretrain.models.presets.PRESETS
    method: str = "a2mim"                 # a2mim | simmim
    input_size: int = 224
    mask_patch: int = 32                  # mask cell size in pixels (7x7 grid at 224)
    mask_ratio: float = 0.6               # exactly ceil(ratio * cells) cells masked
    mask_init: Optional[float] = None     # A²MIM mask_gamma init: None = CNN 1e-6 / ViT none; 0 = no gamma
    drop_path: Optional[float] = None     # None: the preset's (ViT 0.1, CNN timm default 0)
    vit_init: str = "official"            # official (openmixup SimMIMViT: trunc-normal 0.02 on every Linear) |
                                          # timm (BEiT's fix_init_weight: attn.proj / mlp.fc2 of block l / sqrt(2(l+1)))
    # Hand overrides of the preset (None / empty = keep the preset's): any timm CNN/ViT + its injection point.
    timm_name: Optional[str] = None
    timm_kwargs: Dict[str, Any] = field(default_factory=dict)   # merged over the preset's kwargs
    kind: Optional[str] = None            # cnn | vit
    inject_module: Optional[str] = None   # module whose OUTPUT receives the token
    inject_stride: Optional[int] = None
    inject_channels: Optional[int] = None
    out_stride: Optional[int] = None      # stride of the map the decoder reads
    out_channels: Optional[int] = None
    spatial_loss: Optional[str] = None    # focal_l1 | l1
    freq_weight: Optional[float] = None   # lambda_f
    freq_focal: Optional[bool] = None
    unmask_weight: Optional[float] = None  # w_u


@dataclass
class DataConfig:
    root: str = MISSING                   # folder (imagenet_folder / image_folder / shards) or a text file (file_list)
    kind: str = "imagenet_folder"         # imagenet_folder (root/<split>/<wnid>/*) | image_folder | file_list |
                                          # shards (WebDataset tars + index.json from `python -m pretrain.shard`)
    split: str = "train"                  # imagenet_folder only
    rrc_scale: List[float] = field(default_factory=lambda: [0.8, 1.0])
    rrc_ratio: List[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    interpolation: str = "bilinear"       # bilinear | bicubic
    hflip: float = 0.5                    # probability of a horizontal flip
    num_workers: int = 8                  # per process
    skip_budget: int = 100                # unreadable images tolerated per run before it fails
    max_image_pixels: Optional[int] = None  # decompression-bomb limit; None: PIL's Image.MAX_IMAGE_PIXELS
    # where images are decoded and augmented: pil (workers, PIL; the CPU default) | torchcodec (on run.device, nvJPEG
    # on CUDA) | dali (NVIDIA DALI, mixed decoder on CUDA, CPU-only pipeline on CPU); crops, flips and masks are drawn
    # per sample on the host from the sample's own seed on every backend (pretrain/gpu_data.py)
    backend: str = "pil"
    dali_threads: int = 4                 # host threads of the DALI pipeline (backend=dali)
    prefetch_factor: int = 2              # batches each worker loads ahead (num_workers > 0)
    pin_memory: bool = True               # page-locked batches when training on CUDA
    persistent_workers: bool = True       # one set of workers for the whole run (num_workers > 0)


@dataclass
class OptimConfig:
    name: str = "adamw"                   # adamw | lamb (timm.optim)
    lr: Optional[float] = None            # peak lr; None: base_lr * global_batch / lr_ref_batch
    base_lr: float = 3e-4
    lr_ref_batch: int = 512               # the official configs' scaling rule: lr = base_lr * batch / 512
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.05
    token_lr_mult: Optional[float] = None  # lr multiplier of mask token/gamma; None: the model's (CNN 0.1, ViT 1)
    # openmixup's paramwise_options, verbatim: {regex: {weight_decay: v, lr_mult: v}}, each matching rule applied in
    # order (pretrain.a2mim.A2MIM.param_groups); null: the 'all 1-D' convention + token_lr_mult
    paramwise: Optional[Dict[str, Dict[str, float]]] = None
    clip_grad: Optional[float] = None     # max grad norm; None: no clipping


@dataclass
class ScheduleConfig:
    epochs: int = 300
    warmup_epochs: float = 10.0           # linear warm-up from warmup_lr_init
    warmup_lr_init: float = 0.0
    kind: str = "cosine"                  # cosine (to min_lr) | step (x step_gamma at each of step_epochs)
    min_lr: float = 1e-5
    step_epochs: List[int] = field(default_factory=list)   # absolute epochs
    step_gamma: float = 0.1
    per_iteration: bool = True            # lr updated every optimizer step (official); False: once per epoch
    # CPU-seconds of optimizer steps for this process; when set, the run lasts as many steps as fit (measured once
    # at the start of a fresh run, stored in <run>/budget.json) and `epochs` is ignored (pretrain/budget.py)
    budget_s: Optional[float] = None


@dataclass
class LoopRunConfig:
    """The `run` keys the training loop itself reads (pretrain/loop.py); each task's run section extends it."""
    out_dir: str = MISSING                # the run folder (auto-resumes from it)
    seed: int = 0
    batch_per_gpu: int = 256              # per process (pre-training: the frequency loss averages spectra over it)
    accum_steps: int = 1                  # global batch = batch_per_gpu * world_size * accum_steps
    precision: str = "fp32"               # fp32 | bf16 | fp16 (GradScaler); on a CPU: fp32 unless run.cpu_amp
    device: str = "auto"                  # auto | cpu | cuda
    # fp16/bf16 autocast on a CPU device: false = run fp32 there, with one warning (CPU autocast with a GradScaler
    # ran the fp16 R50 preset at 250 s/step vs 1.16 s in fp32); true = insist on the configured precision
    cpu_amp: bool = False
    log_interval: int = 50                # optimizer steps
    ckpt_interval: int = 1000             # optimizer steps (a final checkpoint is always written)
    keep_last: int = 3                    # numbered checkpoints kept beside last.pt
    max_steps: Optional[int] = None       # stop early at this global step (tests, smoke runs)
    syncbn: bool = False                  # convert BatchNorm to SyncBatchNorm (multi-GPU CNNs)
    channels_last: bool = False
    # torch.compile the training network: true | false | null = auto (on CUDA: compiled/eager 0.70 for the A²MIM R50
    # bf16 step on an H100; eager on CPU); a compilation failure falls back to eager (pretrain/compile.py)
    compile: Optional[bool] = None
    tensorboard: bool = True
    debug_nan_step: int = -1              # debug hook: the loss becomes NaN at this global step
    # a checkpoint is refused when the largest |weight| grew by more than this factor since the last one (or the
    # start): weights that exploded but are still finite (lr 1e10, a broken loss) never replace a good checkpoint
    max_weight_growth: Optional[float] = 1000.0


@dataclass
class RunConfig(LoopRunConfig):
    image_interval: int = 5000            # reconstruction PNG every N steps (and at the end); 0: end only
    num_vis: int = 4                      # images in the reconstruction grid
    export_at_end: bool = True            # write <run>/backbone.safetensors when the run completes


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)


CHOICES = {
    "model.method": ("a2mim", "simmim"),
    "model.kind": ("cnn", "vit", None),
    "model.spatial_loss": ("focal_l1", "l1", None),
    "model.vit_init": ("official", "timm"),
    "data.kind": ("imagenet_folder", "image_folder", "file_list", "shards"),
    "data.interpolation": ("bilinear", "bicubic"),
    "data.backend": ("pil", "torchcodec", "dali"),
    "optim.name": ("adamw", "lamb"),
    "schedule.kind": ("cosine", "step"),
    "run.precision": ("fp32", "bf16", "fp16"),
    "run.device": ("auto", "cpu", "cuda"),
}


def _pretrain_checks(cfg: PretrainConfig) -> list:
    checks = [
        ("run.batch_per_gpu", cfg.run.batch_per_gpu >= 1, "an integer >= 1"),
        ("run.accum_steps", cfg.run.accum_steps >= 1, "an integer >= 1"),
        ("run.log_interval", cfg.run.log_interval >= 1, "an integer >= 1"),
        ("run.ckpt_interval", cfg.run.ckpt_interval >= 1, "an integer >= 1"),
        ("run.image_interval", cfg.run.image_interval >= 0, "an integer >= 0"),
        ("run.keep_last", cfg.run.keep_last >= 0, "an integer >= 0"),
        ("model.mask_ratio", 0.0 < cfg.model.mask_ratio < 1.0, "in (0, 1)"),
        ("model.mask_patch", cfg.model.mask_patch >= 1, "an integer >= 1"),
        ("model.input_size", cfg.model.input_size >= 1, "an integer >= 1"),
        ("model.input_size", cfg.model.mask_patch >= 1 and cfg.model.input_size % cfg.model.mask_patch == 0,
         "a multiple of model.mask_patch"),
        ("data.rrc_scale", len(cfg.data.rrc_scale) == 2, "a list of 2 floats"),
        ("data.rrc_ratio", len(cfg.data.rrc_ratio) == 2, "a list of 2 floats"),
        ("optim.betas", len(cfg.optim.betas) == 2, "a list of 2 floats"),
        ("data.skip_budget", cfg.data.skip_budget >= 0, "an integer >= 0"),
    ]
    if cfg.run.max_steps is not None:
        checks.append(("run.max_steps", cfg.run.max_steps >= 1, "an integer >= 1 or null"))
    return checks + schedule_checks(cfg.schedule) + optim_checks(cfg.optim) + _paramwise_checks(cfg.optim.paramwise) + \
        _model_checks(cfg.model) + [
        *crop_checks(cfg.data), ("data.num_workers", cfg.data.num_workers >= 0, "an integer >= 0"),
        at_least("data.prefetch_factor", cfg.data.prefetch_factor, 1), at_least("data.dali_threads", cfg.data.dali_threads, 1),
        ("data.max_image_pixels", cfg.data.max_image_pixels is None or cfg.data.max_image_pixels >= 1,
         "an integer >= 1 or null"),
        *loop_run_checks(cfg.run), ("run.num_vis", cfg.run.num_vis >= 1, "an integer >= 1")]


def _paramwise_checks(rules) -> list:
    """optim.paramwise: {regex: {weight_decay: v >= 0, lr_mult: v >= 0}} (openmixup's paramwise_options)."""
    import re
    out = []
    for pat, rule in (rules or {}).items():
        key = f"optim.paramwise.{pat}"
        try:
            re.compile(pat)
        except re.error as e:
            out.append((key, False, f"a valid regular expression as the key ({e})", rule))
            continue
        bad = sorted(set(rule or {}) - {"weight_decay", "lr_mult"})
        out.append((key, not bad and all(isinstance(v, (int, float)) and v >= 0 for v in (rule or {}).values()),
                    "a mapping of weight_decay / lr_mult to numbers >= 0" + (f" (unknown {bad})" if bad else ""), rule))
    return out


def _model_checks(m: "ModelConfig") -> list:
    p = resolve_preset(m)
    stride = p.simmim_inject_stride if m.method == "simmim" else p.inject_stride
    out = [within("model.drop_path", m.drop_path, 0, 1, hi_open=True, null=True),
           at_least("model.mask_init", m.mask_init, 0, null=True),
           at_least("model.freq_weight", m.freq_weight, 0, null=True),
           at_least("model.unmask_weight", m.unmask_weight, 0, null=True),
           ("model.mask_patch", m.mask_patch % stride == 0,
            f"a multiple of the injection stride {stride} ({m.preset}, {m.method})"),
           ("model.input_size", m.input_size % p.out_stride == 0,
            f"a multiple of the backbone's output stride {p.out_stride} ({m.preset})")]
    for key in ("inject_stride", "inject_channels", "out_stride", "out_channels"):
        out.append(at_least(f"model.{key}", getattr(m, key), 1, null=True))
    return out


def schedule_checks(s: "ScheduleConfig") -> list:
    """Range checks of the shared schedule section (pre-training and classification)."""
    steps = list(s.step_epochs)
    out = [("schedule.epochs", s.epochs >= 1, "an integer >= 1"),
           at_least("schedule.min_lr", s.min_lr, 0), at_least("schedule.warmup_lr_init", s.warmup_lr_init, 0),
           at_least("schedule.step_gamma", s.step_gamma, 0, strict=True),
           ("schedule.step_epochs", all(0 <= e <= s.epochs for e in steps) and steps == sorted(steps),
            "ascending epochs in [0, schedule.epochs]")]
    if s.budget_s is None:
        out.append(("schedule.warmup_epochs", 0 <= s.warmup_epochs < s.epochs, "in [0, schedule.epochs)"))
    else:
        out += [("schedule.budget_s", s.budget_s > 0, "a positive number of CPU-seconds, or null"),
                ("schedule.warmup_epochs", s.warmup_epochs >= 0, ">= 0")]
    return out


def check_preset(m: ModelConfig) -> None:
    try:
        resolve_preset(m)
    except KeyError as e:
        raise ConfigError(f"config key 'model.preset': {e.args[0]}") from None


PRETRAIN = StrictSchema(PretrainConfig, CHOICES, _pretrain_checks, extra=lambda cfg: check_preset(cfg.model))
LEAF_TYPES = PRETRAIN.leaf_types


def validate(cfg: PretrainConfig) -> PretrainConfig:
    return PRETRAIN.validate(cfg)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """Defaults <- YAML preset <- key=value overrides, strictly checked; returns a PretrainConfig."""
    return PRETRAIN.load(path, overrides)


def load_model_config(overrides: list[str] | tuple[str, ...] = ()) -> ModelConfig:
    """Only the model section (export of a random-init backbone), from model.key=value overrides, strictly."""
    cfg = OmegaConf.structured(PretrainConfig)
    for item in overrides:
        if not item.startswith("model."):
            raise ConfigError(f"override '{item}': only model.* keys apply here")
        cfg = PRETRAIN.merge(cfg, PRETRAIN.parse_override(item), f"override '{item}'")
    m = OmegaConf.to_object(cfg.model)
    PRETRAIN.check_choices(m, prefix="model.")
    check_preset(m)
    return m


def from_yaml_text(text: str, where: str = "checkpoint config") -> PretrainConfig:
    """Parse a resolved config text (from a checkpoint or config.yaml) back into a PretrainConfig."""
    return PRETRAIN.from_yaml_text(text, where)


def changed_keys(old_text: str, new_text: str) -> list[str]:
    """Dotted keys whose values differ between two resolved pre-training config texts."""
    return PRETRAIN.changed_keys(old_text, new_text)


def resolve_preset(m: ModelConfig) -> BackbonePreset:
    """The preset named by model.preset with the hand overrides applied (any timm model by name)."""
    p = get_preset(m.preset)
    over = {k: getattr(m, k) for k in ("timm_name", "kind", "inject_module", "inject_stride", "inject_channels",
                                        "out_stride", "out_channels") if getattr(m, k) is not None}
    if m.timm_kwargs:
        over["timm_kwargs"] = {**p.timm_kwargs, **m.timm_kwargs}
    loss_keys = {"spatial_loss": "spatial", "freq_weight": "freq_weight", "freq_focal": "freq_focal",
                 "unmask_weight": "unmask_weight"}
    loss_over = {name: getattr(m, key) for key, name in loss_keys.items() if getattr(m, key) is not None}
    if loss_over:
        over["loss"] = dataclasses.replace(p.loss, **loss_over)
    return p.replace(**over) if over else p


__all__ = ["ConfigError", "StrictSchema", "LoopRunConfig", "PretrainConfig", "ModelConfig", "DataConfig", "OptimConfig", "ScheduleConfig",
           "RunConfig", "LossPreset", "load_config", "load_model_config", "changed_keys", "to_yaml", "from_yaml_text",
           "to_dict", "resolve_preset", "validate"]
