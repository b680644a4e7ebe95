"""Typed, strict configuration of a pre-training run (OmegaConf structured config over dataclasses).

load_config(yaml_path, ["optim.lr=1e-3", ...]) -> PretrainConfig (a plain dataclass instance).
Strict: an unknown key fails naming the nearest valid key; a value of the wrong type fails naming the key
and the expected type; enumerated strings (method, precision, ...) fail naming the allowed values.
to_yaml(cfg) is the resolved text written to <run>/config.yaml and into every checkpoint.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pretrain.models.presets import BackbonePreset, LossPreset, get_preset


class ConfigError(ValueError):
    """A bad config file or override; the message names the key and what was expected."""


@dataclass
class ModelConfig:
    preset: str = "resnet50"              # a name of pretrain.models.presets.PRESETS
    method: str = "a2mim"                 # a2mim | simmim
    input_size: int = 224
    mask_patch: int = 32                  # mask cell size in pixels (7x7 grid at 224)
    mask_ratio: float = 0.6               # exactly ceil(ratio * cells) cells masked
    drop_path: Optional[float] = None     # None: the preset's (ViT 0.1, CNN timm default 0)
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
    root: str = MISSING                   # folder (imagenet_folder / image_folder) or a text file (file_list)
    kind: str = "imagenet_folder"         # imagenet_folder (root/<split>/<wnid>/*) | image_folder | file_list
    split: str = "train"                  # imagenet_folder only
    rrc_scale: List[float] = field(default_factory=lambda: [0.8, 1.0])
    rrc_ratio: List[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    interpolation: str = "bilinear"       # bilinear | bicubic
    hflip: float = 0.5                    # probability of a horizontal flip
    num_workers: int = 8                  # per process
    skip_budget: int = 100                # unreadable images tolerated per run before it fails
    max_image_pixels: Optional[int] = None  # decompression-bomb limit; None: PIL's Image.MAX_IMAGE_PIXELS


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


@dataclass
class RunConfig:
    out_dir: str = MISSING                # the run folder (auto-resumes from it)
    seed: int = 0
    batch_per_gpu: int = 256              # per process; the frequency loss averages spectra over it
    accum_steps: int = 1                  # global batch = batch_per_gpu * world_size * accum_steps
    precision: str = "fp32"               # fp32 | bf16 | fp16 (GradScaler)
    device: str = "auto"                  # auto | cpu | cuda
    log_interval: int = 50                # optimizer steps
    ckpt_interval: int = 1000             # optimizer steps (a final checkpoint is always written)
    image_interval: int = 5000            # reconstruction PNG every N steps (and at the end); 0: end only
    num_vis: int = 4                      # images in the reconstruction grid
    keep_last: int = 3                    # numbered checkpoints kept beside last.pt
    max_steps: Optional[int] = None       # stop early at this global step (tests, smoke runs)
    syncbn: bool = False                  # convert BatchNorm to SyncBatchNorm (multi-GPU CNNs)
    channels_last: bool = False
    compile: bool = False                 # torch.compile the model
    tensorboard: bool = True
    export_at_end: bool = True            # write <run>/backbone.safetensors when the run completes
    debug_nan_step: int = -1              # debug hook: the loss becomes NaN at this global step


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
    "data.kind": ("imagenet_folder", "image_folder", "file_list"),
    "data.interpolation": ("bilinear", "bicubic"),
    "optim.name": ("adamw", "lamb"),
    "schedule.kind": ("cosine", "step"),
    "run.precision": ("fp32", "bf16", "fp16"),
    "run.device": ("auto", "cpu", "cuda"),
}


def _leaf_types(cls=PretrainConfig, prefix: str = "") -> dict[str, Any]:
    """Every valid dotted key -> its annotation. Dict fields are leaves (their content is free-form)."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_leaf_types(tp, key + "."))
        else:
            out[key] = tp
    return out


LEAF_TYPES = _leaf_types()
_SECTIONS = {k.split(".")[0] for k in LEAF_TYPES}


def _type_name(tp) -> str:
    """int, float or null, list of float, mapping, ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or null"
    if origin in (list, List):
        return f"list of {_type_name(args[0])}"
    if origin in (dict, Dict):
        return "mapping"
    return "any" if tp is Any else getattr(tp, "__name__", str(tp))


def _unknown(key: str, where: str) -> ConfigError:
    valid = list(LEAF_TYPES) + sorted(_SECTIONS)
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not near:  # a misspelled leaf under a correct section: compare the leaf names there
        sect = key.rsplit(".", 1)[0]
        near = difflib.get_close_matches(key, [k for k in LEAF_TYPES if k.startswith(sect + ".")], n=1, cutoff=0.3)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return ConfigError(f"{where}: unknown config key '{key}'{hint}")


def _check_keys(d: Any, where: str, prefix: str = "") -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping at '{prefix.rstrip('.') or '<top>'}', got {type(d).__name__}")
    for k, v in d.items():
        key = prefix + str(k)
        if key in LEAF_TYPES:
            continue
        if key in _SECTIONS:
            _check_keys(v, where, key + ".")
        else:
            raise _unknown(key, where)


def _merge(base, other, where: str):
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e).splitlines()[0]
        tp = LEAF_TYPES.get(key)
        expected = f"; expected {_type_name(tp)}" if tp is not None else ""
        raise ConfigError(f"{where}: bad value for config key '{key}': {msg}{expected}") from None


def _parse_override(item: str):
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value (e.g. optim.lr=1e-3)")
    key = item.split("=", 1)[0].strip()
    if key not in LEAF_TYPES:
        if key in _SECTIONS:
            raise ConfigError(f"override '{item}': '{key}' is a section; set one of its keys (e.g. {key}.<name>=...)")
        raise _unknown(key, f"override '{item}'")
    try:
        return OmegaConf.from_dotlist([item])
    except OmegaConfBaseException as e:
        raise ConfigError(f"override '{item}': cannot parse ({str(e).splitlines()[0]})") from None


def validate(cfg: PretrainConfig) -> PretrainConfig:
    for key, allowed in CHOICES.items():
        sect, name = key.split(".")
        val = getattr(getattr(cfg, sect), name)
        if val not in allowed:
            shown = [a for a in allowed if a is not None]
            near = difflib.get_close_matches(str(val), shown, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"config key '{key}' = {val!r}{hint}; expected one of {shown}")
    try:
        resolve_preset(cfg.model)
    except KeyError as e:
        raise ConfigError(f"config key 'model.preset': {e.args[0]}") from None
    checks = [
        ("run.batch_per_gpu", cfg.run.batch_per_gpu >= 1, "an integer >= 1"),
        ("run.accum_steps", cfg.run.accum_steps >= 1, "an integer >= 1"),
        ("run.log_interval", cfg.run.log_interval >= 1, "an integer >= 1"),
        ("run.ckpt_interval", cfg.run.ckpt_interval >= 1, "an integer >= 1"),
        ("run.image_interval", cfg.run.image_interval >= 0, "an integer >= 0"),
        ("run.keep_last", cfg.run.keep_last >= 0, "an integer >= 0"),
        ("schedule.epochs", cfg.schedule.epochs >= 1, "an integer >= 1"),
        ("schedule.warmup_epochs", 0 <= cfg.schedule.warmup_epochs < cfg.schedule.epochs, "in [0, schedule.epochs)"),
        ("model.mask_ratio", 0.0 < cfg.model.mask_ratio < 1.0, "in (0, 1)"),
        ("model.input_size", cfg.model.input_size % cfg.model.mask_patch == 0, "a multiple of model.mask_patch"),
        ("data.rrc_scale", len(cfg.data.rrc_scale) == 2, "a list of 2 floats"),
        ("data.rrc_ratio", len(cfg.data.rrc_ratio) == 2, "a list of 2 floats"),
        ("optim.betas", len(cfg.optim.betas) == 2, "a list of 2 floats"),
        ("data.skip_budget", cfg.data.skip_budget >= 0, "an integer >= 0"),
    ]
    if cfg.run.max_steps is not None:
        checks.append(("run.max_steps", cfg.run.max_steps >= 1, "an integer >= 1 or null"))
    for key, ok, expected in checks:
        if not ok:
            sect, name = key.split(".")
            raise ConfigError(f"config key '{key}' = {getattr(getattr(cfg, sect), name)!r}; expected {expected}")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """Defaults <- YAML preset <- key=value overrides, strictly checked; returns a PretrainConfig."""
    cfg = OmegaConf.structured(PretrainConfig)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = OmegaConf.load(path)
        except Exception as e:  # yaml scanner/parser errors
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if raw is not None and len(raw):
            _check_keys(OmegaConf.to_container(raw), str(path))
            cfg = _merge(cfg, raw, str(path))
    for item in overrides:
        cfg = _merge(cfg, _parse_override(item), f"override '{item}'")
    missing = [k for k in LEAF_TYPES
               if OmegaConf.is_missing(OmegaConf.select(cfg, k.rsplit(".", 1)[0]), k.rsplit(".", 1)[1])]
    if missing:
        raise ConfigError(f"config keys without a value: {missing} (set them in the YAML or as key=value)")
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: {str(e).splitlines()[0]}") from None
    return validate(obj)


def load_model_config(overrides: list[str] | tuple[str, ...] = ()) -> ModelConfig:
    """Only the model section (export of a random-init backbone), from model.key=value overrides, strictly."""
    cfg = OmegaConf.structured(PretrainConfig)
    for item in overrides:
        if not item.startswith("model."):
            raise ConfigError(f"override '{item}': only model.* keys apply here")
        cfg = _merge(cfg, _parse_override(item), f"override '{item}'")
    m = OmegaConf.to_object(cfg.model)
    for key, allowed in CHOICES.items():
        if key.startswith("model.") and getattr(m, key[6:]) not in allowed:
            raise ConfigError(f"config key '{key}' = {getattr(m, key[6:])!r}; "
                              f"expected one of {[a for a in allowed if a]}")
    try:
        resolve_preset(m)
    except KeyError as e:
        raise ConfigError(f"config key 'model.preset': {e.args[0]}") from None
    return m


def to_yaml(cfg: PretrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)


def from_yaml_text(text: str, where: str = "checkpoint config") -> PretrainConfig:
    """Parse a resolved config text (from a checkpoint or config.yaml) back into a PretrainConfig."""
    raw = OmegaConf.create(text)
    _check_keys(OmegaConf.to_container(raw), where)
    return validate(OmegaConf.to_object(_merge(OmegaConf.structured(PretrainConfig), raw, where)))


def changed_keys(old_text: str, new_text: str) -> list[str]:
    """Dotted keys whose values differ between two resolved config texts (e.g. a checkpoint's and this run's)."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and f"{prefix}{k}" in _SECTIONS else
                       {f"{prefix}{k}": v})
        return out
    a = flat(OmegaConf.to_container(OmegaConf.create(old_text)))
    b = flat(OmegaConf.to_container(OmegaConf.create(new_text)))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def to_dict(cfg: PretrainConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


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


__all__ = ["ConfigError", "PretrainConfig", "ModelConfig", "DataConfig", "OptimConfig", "ScheduleConfig",
           "RunConfig", "LossPreset", "load_config", "load_model_config", "changed_keys", "to_yaml", "from_yaml_text",
           "to_dict", "resolve_preset", "validate"]
