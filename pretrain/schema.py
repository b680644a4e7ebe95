"""The strict structured-config loader every entry point shares (OmegaConf over dataclasses), and the numeric
range checks the schemas share.

StrictSchema(root dataclass, choices, checks).load(yaml, ["key=value", ...]) -> a root dataclass instance.
Strict: an unknown key fails naming the nearest valid key; a value of the wrong type fails naming the key and the
expected type; enumerated strings fail naming the allowed values; every range check fails as
"config key 'k' = v; expected ...". to_yaml(cfg) is the resolved text written to <run>/config.yaml and into
every checkpoint.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A bad config file or override; the message names the key and what was expected."""


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
    values; checks(cfg) -> [(key, ok, expected[, value])]: range checks, reported as "config key 'k' = v; expected ...".
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
        for key, ok, expected, *value in self.checks(cfg):   # (key, ok, expected[, the value shown])
            if not ok:
                shown = value[0] if value else _get(cfg, key)
                raise ConfigError(f"config key '{key}' = {shown!r}; expected {expected}")
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


# ---- numeric ranges shared by the schemas: each check is (dotted key, ok, what was expected)
def at_least(key: str, v, lo: float, null: bool = False, strict: bool = False) -> tuple:
    """v >= lo (v > lo when strict); None allowed when null."""
    ok = (v is None and null) or (v is not None and (v > lo if strict else v >= lo))
    return key, ok, f"{'> ' if strict else '>= '}{lo:g}{' or null' if null else ''}"


def within(key: str, v, lo: float, hi: float, hi_open: bool = False, null: bool = False) -> tuple:
    """lo <= v <= hi (v < hi when hi_open); None allowed when null."""
    ok = (v is None and null) or (v is not None and lo <= v and (v < hi if hi_open else v <= hi))
    return key, ok, f"in [{lo:g}, {hi:g}{')' if hi_open else ']'}{' or null' if null else ''}"


def crop_checks(d) -> list:
    """RandomResizedCrop scale / ratio pairs and the flip probability (pre-training and classification data)."""
    s, r = list(d.rrc_scale), list(d.rrc_ratio)
    return [("data.rrc_scale", len(s) == 2 and 0 < s[0] <= s[1] <= 1,
             "[min, max] with 0 < min <= max <= 1 (fractions of the image area)"),
            ("data.rrc_ratio", len(r) == 2 and 0 < r[0] <= r[1], "[min, max] with 0 < min <= max (aspect ratios)"),
            within("data.hflip", d.hflip, 0, 1)]


def optim_checks(o) -> list:
    """The optimizer keys both schemas share (lr, base_lr, lr_ref_batch, weight_decay, eps, betas, clip_grad)."""
    betas = list(o.betas)
    return [at_least("optim.lr", o.lr, 0, null=True), at_least("optim.base_lr", o.base_lr, 0),
            at_least("optim.lr_ref_batch", o.lr_ref_batch, 1), at_least("optim.weight_decay", o.weight_decay, 0),
            at_least("optim.eps", o.eps, 0, strict=True),
            ("optim.betas", len(betas) == 2 and all(0 <= b < 1 for b in betas), "2 floats in [0, 1)"),
            at_least("optim.clip_grad", o.clip_grad, 0, null=True, strict=True)]


def loop_run_checks(r) -> list:
    """The shared run keys (pretrain.config.LoopRunConfig)."""
    return [at_least("run.seed", r.seed, 0), at_least("run.debug_nan_step", r.debug_nan_step, -1),
            at_least("run.max_weight_growth", r.max_weight_growth, 1, null=True, strict=True)]


