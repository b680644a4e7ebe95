"""Config handling of the mmdet / mmseg entry points (transfer/openmmlab_common.py): the data root, the layout
check, weights only through the gate, normalisation = pre-training's, the CPU smoke shrink (--tiny), and the
strict --cfg-options check.

--cfg-options keys must name a key the resolved config has (did-you-mean otherwise: mmengine would add the typo
silently, or fail later with a TypeError from a constructor); `+a.b=v` adds a key the config does not have yet.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transfer.datacheck import config_datasets


@dataclass(frozen=True)
class Framework:
    name: str            # 'mmdet' | 'mmseg'
    task: str            # result.json task
    dataset: str         # result.json dataset
    layout: str          # human description of the expected dataset layout
    metrics: dict        # result key -> (evaluator key, factor to percent)
    root_subdir: str = ""  # --data-root may also name the folder holding this one (ADEChallengeData2016)
    configure: Callable | None = None   # (cfg) -> None: framework-specific set-up, after the data root is set



class DataLayoutError(FileNotFoundError):
    pass


class ConfigError(ValueError):
    pass


def _keys(node, prefix: str = "") -> list[str]:
    """Every dotted key of a config (list items by index), for the did-you-mean."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
    for k, v in items:
        key = f"{prefix}{k}"
        out.append(key)
        out += _keys(v, key + ".")
    return out


def _node(cfg, key: str):
    """(the node at the longest existing prefix of key, that prefix, whether the whole key exists)."""
    node, seen = cfg, []
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return node, ".".join(seen), False
        seen.append(part)
    return node, key, True


def _component_accepts(node, leaf: str, scope: str) -> bool | None:
    """A registry-built component (a dict with 'type'): does its class take `leaf`? None when it cannot be told
    (type not found, or a constructor with **kwargs)."""
    import importlib
    import inspect
    t = node.get("type") if isinstance(node, dict) else None
    if t is None:
        return False
    cls = t if callable(t) else None
    if cls is None:
        try:
            reg = importlib.import_module(f"{scope}.registry")
        except ImportError:
            return None
        for name in dir(reg):
            r = getattr(reg, name)
            if hasattr(r, "get") and hasattr(r, "module_dict"):
                try:
                    cls = r.get(t)
                except Exception:       # noqa: BLE001  (a registry that cannot resolve the name)
                    cls = None
                if cls is not None:
                    break
    if cls is None:
        return None
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True if leaf in params else None
    return leaf in params


def check_cfg_options(cfg, options: dict, scope: str = "mmengine") -> dict:
    """-> the options to merge (a leading '+' stripped); ConfigError for a key the config does not have, unless
    it is an argument of the component (a dict with 'type') it goes into."""
    root = getattr(cfg, "_cfg_dict", cfg)
    out, bad = {}, []
    for key, val in options.items():
        if key.startswith("+"):
            out[key[1:]] = val
            continue
        out[key] = val
        node, prefix, ok = _node(root, key)
        leaf = key[len(prefix) + 1:] if prefix else key
        if ok or ("." not in leaf and prefix and _component_accepts(node, leaf, scope) is not False):
            continue
        valid = _keys(root)
        under = [k for k in valid if k.startswith(prefix + ".")] if prefix else valid
        near = difflib.get_close_matches(key, under, n=1, cutoff=0.6) or \
            difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        if not near and isinstance(node, dict) and node.get("type") is not None:
            near = [f"{prefix}.{n}" for n in difflib.get_close_matches(leaf, _arg_names(node, scope), n=1)]
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        bad.append(f"'{key}'{hint}")
    if bad:
        raise ConfigError(f"--cfg-options: unknown config key{'s' if len(bad) > 1 else ''} {', '.join(bad)}; "
                          f"to add a key the config does not have, write it as +KEY=VALUE")
    return out


def _arg_names(node, scope: str) -> list[str]:
    import importlib
    import inspect
    try:
        reg = importlib.import_module(f"{scope}.registry")
        for name in dir(reg):
            r = getattr(reg, name)
            if hasattr(r, "module_dict"):
                cls = r.get(node["type"]) if isinstance(node["type"], str) else node["type"]
                if cls is not None:
                    return list(inspect.signature(cls).parameters)
    except Exception:       # noqa: BLE001  (suggestions only)
        pass
    return []


def set_data_root(cfg, root: str) -> None:
    for _, ds in config_datasets(cfg):
        ds["data_root"] = root
    val = dict(config_datasets(cfg)).get("val")
    for key in ("val_evaluator", "test_evaluator"):
        ev = cfg.get(key)
        if isinstance(ev, dict) and "ann_file" in ev and val is not None and "ann_file" in val:
            ev["ann_file"] = os.path.join(root, val["ann_file"])


def check_layout(cfg, fw: Framework) -> None:
    """Every file/folder the datasets will read exists, else DataLayoutError naming what was expected."""
    missing, roots = {}, set()
    for split, ds in config_datasets(cfg):
        root = ds.get("data_root") or ""
        roots.add(root)
        need = []
        if ds.get("ann_file"):
            need.append((ds["ann_file"], "file"))
        for sub in (ds.get("data_prefix") or {}).values():
            need.append((sub, "dir"))
        for rel, kind in need:
            p = Path(root, rel)
            ok = p.is_file() if kind == "file" else (p.is_dir() and any(p.iterdir()))
            if not ok and str(p) not in missing:
                missing[str(p)] = f"{p}{'/' if kind == 'dir' else ''} ({split}; " \
                                  f"{'file' if kind == 'file' else 'non-empty folder'})"
    if missing:
        raise DataLayoutError(f"dataset layout not found under {', '.join(sorted(roots))}: expected {fw.layout}; "
                              f"missing:\n  " + "\n  ".join(missing.values())
                              + "\n(set --data-root to the dataset root)")


def forbid_silent_pretrained(cfg) -> None:
    """Weights come only through the gate: no init_cfg=Pretrained / `pretrained=` anywhere in the model."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("pretrained"):
                found.append(f"{path}.pretrained={node['pretrained']!r}")
            ic = node.get("init_cfg")
            for c in (ic if isinstance(ic, (list, tuple)) else [ic]):
                if isinstance(c, dict) and c.get("type") == "Pretrained":
                    found.append(f"{path}.init_cfg=Pretrained({c.get('checkpoint')!r})")
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
    walk(cfg.model, "model")
    if cfg.get("load_from"):
        found.append(f"load_from={cfg.load_from!r} (resume is automatic from the work dir)")
    if found:
        raise ConfigError("config loads weights outside the load gate (a non-strict load with no report): "
                          + "; ".join(found) + " — set them to None; --weights loads the backbone")


def check_normalisation(cfg, meta: dict) -> None:
    dp = cfg.model.get("data_preprocessor", {})
    if "mean" not in meta or "mean" not in dp:
        return
    want_m = [255 * m for m in meta["mean"]]
    want_s = [255 * s for s in meta["std"]]
    if not dp.get("bgr_to_rgb", False) or any(abs(a - b) > 1e-2 for a, b in zip(dp["mean"], want_m)) \
            or any(abs(a - b) > 1e-2 for a, b in zip(dp["std"], want_s)):
        raise ConfigError(f"model.data_preprocessor normalises with mean {list(dp['mean'])} std {list(dp['std'])} "
                          f"bgr_to_rgb={dp.get('bgr_to_rgb')}, but the backbone was pre-trained on RGB with mean "
                          f"{want_m} std {want_s} (x255)")


def _round32(v: float) -> int:
    return max(32, int(round(v / 32)) * 32)


def _scaled(v, f: float):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _round32(v * f)
    if isinstance(v, (list, tuple)):
        return type(v)(_scaled(x, f) for x in v)
    return v


def apply_tiny(cfg, fw: Framework, size: int, iters: int) -> None:
    """Shrink a real config for a CPU smoke run (sizes x size/ref, `iters` iterations, val at the end)."""
    if fw.name == "mmdet":
        test_ds = dict(config_datasets(cfg))["test"]
        ref = min(next(t["scale"] for t in test_ds["pipeline"] if t["type"] == "Resize"))
    else:
        ref = cfg.get("crop_size", (512, 512))[0]
    f = size / ref
    for _, ds in config_datasets(cfg):
        for t in ds.get("pipeline", []):
            for key in ("scale", "scales", "crop_size", "size"):
                if key in t:
                    t[key] = _scaled(t[key], f)
    for split in ("train", "val", "test"):
        dl = cfg.get(f"{split}_dataloader")
        if dl:
            dl.update(num_workers=0, persistent_workers=False, batch_size=2 if split == "train" else 1)
    cfg.train_dataloader.sampler = dict(type="InfiniteSampler", shuffle=True)
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters)
    cfg.param_scheduler = [s for s in (cfg.get("param_scheduler") or []) if not s.get("by_epoch", True)]
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=-1, save_last=False)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    m = cfg.model
    if "img_size" in m.backbone:
        m.backbone.img_size = _round32(m.backbone.img_size * f)
    dp = m.get("data_preprocessor", {})
    if dp.get("size"):
        dp["size"] = _scaled(dp["size"], f)
    for aug in dp.get("batch_augments") or []:
        if "size" in aug:
            aug["size"] = _scaled(aug["size"], f)
    if fw.name == "mmdet":      # few RoIs: mmcv's CPU RoIAlign is single-threaded
        tr, te = m.train_cfg, m.test_cfg
        tr.rpn.sampler.num = 64
        tr.rpn_proposal.update(nms_pre=200, max_per_img=100)
        tr.rcnn.sampler.num = 8
        te.rpn.update(nms_pre=200, max_per_img=10)
        te.rcnn.update(score_thr=0.0, max_per_img=20)   # keep detections from an untrained head for CocoMetric
    elif m.get("test_cfg", {}).get("mode") == "slide":
        cs = _round32(m.test_cfg.crop_size[0] * f)
        m.test_cfg.update(crop_size=(cs, cs), stride=(cs * 2 // 3, cs * 2 // 3))
