"""Typed, strict configuration of a pre-training run (OmegaConf structured config over dataclasses).

load_config(yaml_path, ["optim.lr=1e-3", ...]) -> PretrainConfig (a plain dataclass instance).
Strict: an unknown key fails naming the nearest valid key; a value of the wrong type fails naming the key
and the expected type; enumerated strings (method, precision, ...) fail naming the allowed values.
to_yaml(cfg) is the resolved text written to <run>/config.yaml and into every checkpoint.
StrictSchema holds the strict loader for any dataclass tree; PRETRAIN is the pre-training one, and
transfer/classification/config.py builds its own from the shared LoopRunConfig / ScheduleConfig sections.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

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
    precision: str = "fp32"               # fp32 | bf16 | fp16 (GradScaler)
    device: str = "auto"                  # auto | cpu | cuda
    log_interval: int = 50                # optimizer steps
    ckpt_interval: int = 1000             # optimizer steps (a final checkpoint is always written)
    keep_last: int = 3                    # numbered checkpoints kept beside last.pt
    max_steps: Optional[int] = None       # stop early at this global step (tests, smoke runs)
    syncbn: bool = False                  # convert BatchNorm to SyncBatchNorm (multi-GPU CNNs)
    channels_last: bool = False
    compile: bool = False                 # torch.compile the model
    tensorboard: bool = True
    debug_nan_step: int = -1              # debug hook: the loss becomes NaN at this global step


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
    "data.kind": ("imagenet_folder", "image_folder", "file_list"),
    "data.interpolation": ("bilinear", "bicubic"),
    "optim.name": ("adamw", "lamb"),
    "schedule.kind": ("cosine", "step"),
    "run.precision": ("fp32", "bf16", "fp16"),
    "run.device": ("auto", "cpu", "cuda"),
}


def _leaf_types(cls, prefix: str = "") -> dict[str, Any]:
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


def _get(obj, key: str):
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


class StrictSchema:
    """Strict YAML + key=value loading of one structured-config dataclass tree (shared by every entry point).

    root: the top dataclass (sections are dataclass-typed fields, any depth); choices: dotted key -> allowed
    values; checks(cfg) -> [(key, ok, expected)]: range checks, reported as "config key 'k' = v; expected ...".
    """

    def __init__(self, root: type, choices: dict[str, tuple], checks: Callable[[Any], list] = lambda cfg: [],
                 extra: Callable[[Any], None] = lambda cfg: None):
        self.root, self.choices, self.checks, self.extra = root, dict(choices), checks, extra
        self.leaf_types = _leaf_types(root)
        self.sections = {k.rsplit(".", i)[0] for k in self.leaf_types for i in range(1, k.count(".") + 1)}

    # ---- key checks
    def unknown(self, key: str, where: str) -> ConfigError:
        valid = list(self.leaf_types) + sorted(self.sections)
        near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        if not near:  # a misspelled leaf under a correct section: compare the leaf names there
            sect = key.rsplit(".", 1)[0]
            near = difflib.get_close_matches(key, [k for k in self.leaf_types if k.startswith(sect + ".")], n=1,
                                             cutoff=0.3)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return ConfigError(f"{where}: unknown config key '{key}'{hint}")

    def check_keys(self, d: Any, where: str, prefix: str = "") -> None:
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping at '{prefix.rstrip('.') or '<top>'}', "
                              f"got {type(d).__name__}")
        for k, v in d.items():
            key = prefix + str(k)
            if key in self.leaf_types:
                continue
            if key in self.sections:
                self.check_keys(v, where, key + ".")
            else:
                raise self.unknown(key, where)

    def merge(self, base, other, where: str):
        try:
            return OmegaConf.merge(base, other)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            msg = str(e).splitlines()[0]
            tp = self.leaf_types.get(key)
            expected = f"; expected {_type_name(tp)}" if tp is not None else ""
            raise ConfigError(f"{where}: bad value for config key '{key}': {msg}{expected}") from None

    def parse_override(self, item: str):
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value (e.g. optim.lr=1e-3)")
        key = item.split("=", 1)[0].strip()
        if key not in self.leaf_types:
            if key in self.sections:
                raise ConfigError(f"override '{item}': '{key}' is a section; set one of its keys "
                                  f"(e.g. {key}.<name>=...)")
            raise self.unknown(key, f"override '{item}'")
        try:
            return OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as e:
            raise ConfigError(f"override '{item}': cannot parse ({str(e).splitlines()[0]})") from None

    def check_choices(self, cfg, prefix: str = "") -> None:
        """Enumerated strings; with prefix (e.g. 'model.') only the keys under it, cfg being that section."""
        for key, allowed in self.choices.items():
            if not key.startswith(prefix):
                continue
            val = _get(cfg, key[len(prefix):])
            if val not in allowed:
                shown = [a for a in allowed if a is not None]
                near = difflib.get_close_matches(str(val), shown, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                raise ConfigError(f"config key '{key}' = {val!r}{hint}; expected one of {shown}")

    def validate(self, cfg):
        """choices, then extra(cfg) (raises ConfigError itself), then the range checks."""
        self.check_choices(cfg)
        self.extra(cfg)
        for key, ok, expected in self.checks(cfg):
            if not ok:
                raise ConfigError(f"config key '{key}' = {_get(cfg, key)!r}; expected {expected}")
        return cfg

    # ---- loading
    def load(self, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
        """Defaults <- YAML preset <- key=value overrides, strictly checked; returns a root dataclass instance."""
        cfg = OmegaConf.structured(self.root)
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                raw = OmegaConf.load(path)
            except Exception as e:  # yaml scanner/parser errors
                raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
            if raw is not None and len(raw):
                self.check_keys(OmegaConf.to_container(raw), str(path))
                cfg = self.merge(cfg, raw, str(path))
        for item in overrides:
            cfg = self.merge(cfg, self.parse_override(item), f"override '{item}'")
        missing = [k for k in self.leaf_types
                   if OmegaConf.is_missing(OmegaConf.select(cfg, k.rsplit(".", 1)[0]), k.rsplit(".", 1)[1])]
        if missing:
            raise ConfigError(f"config keys without a value: {missing} (set them in the YAML or as key=value)")
        try:
            obj = OmegaConf.to_object(cfg)
        except OmegaConfBaseException as e:
            raise ConfigError(f"config: {str(e).splitlines()[0]}") from None
        return self.validate(obj)

    def from_yaml_text(self, text: str, where: str = "checkpoint config"):
        """Parse a resolved config text (from a checkpoint or config.yaml) back into the root dataclass."""
        raw = OmegaConf.create(text)
        self.check_keys(OmegaConf.to_container(raw), where)
        return self.validate(OmegaConf.to_object(self.merge(OmegaConf.structured(self.root), raw, where)))

    def changed_keys(self, old_text: str, new_text: str) -> list[str]:
        """Dotted keys whose values differ between two resolved config texts (e.g. a checkpoint's and this run's)."""
        def flat(d, prefix=""):
            out = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and f"{prefix}{k}" in self.sections else
                           {f"{prefix}{k}": v})
            return out
        a = flat(OmegaConf.to_container(OmegaConf.create(old_text)))
        b = flat(OmegaConf.to_container(OmegaConf.create(new_text)))
        return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def to_yaml(cfg) -> str:
    """The resolved text of any structured config (written to <run>/config.yaml and into every checkpoint)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)


def to_dict(cfg) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def _pretrain_checks(cfg: PretrainConfig) -> list:
    checks = [
        ("run.batch_per_gpu", cfg.run.batch_per_gpu >= 1, "an integer >= 1"),
        ("run.accum_steps", cfg.run.accum_steps >= 1, "an integer >= 1"),
        ("run.log_interval", cfg.run.log_interval >= 1, "an integer >= 1"),
        ("run.ckpt_interval", cfg.run.ckpt_interval >= 1, "an integer >= 1"),
        ("run.image_interval", cfg.run.image_interval >= 0, "an integer >= 0"),
        ("run.keep_last", cfg.run.keep_last >= 0, "an integer >= 0"),
        ("model.mask_ratio", 0.0 < cfg.model.mask_ratio < 1.0, "in (0, 1)"),
        ("model.input_size", cfg.model.input_size % cfg.model.mask_patch == 0, "a multiple of model.mask_patch"),
        ("data.rrc_scale", len(cfg.data.rrc_scale) == 2, "a list of 2 floats"),
        ("data.rrc_ratio", len(cfg.data.rrc_ratio) == 2, "a list of 2 floats"),
        ("optim.betas", len(cfg.optim.betas) == 2, "a list of 2 floats"),
        ("data.skip_budget", cfg.data.skip_budget >= 0, "an integer >= 0"),
    ]
    if cfg.run.max_steps is not None:
        checks.append(("run.max_steps", cfg.run.max_steps >= 1, "an integer >= 1 or null"))
    return checks + schedule_checks(cfg.schedule)


def schedule_checks(s: "ScheduleConfig") -> list:
    """Range checks of the shared schedule section (pre-training and classification)."""
    out = [("schedule.epochs", s.epochs >= 1, "an integer >= 1")]
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
