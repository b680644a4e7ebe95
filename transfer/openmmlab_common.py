"""One training entry point for the mmdet and mmseg adapters (`transfer.mmdet.train`, `transfer.mmseg.train`).

Flow: config (mmengine .py inheriting `mmdet::` / `mmseg::` bases) -> overrides (--cfg-options, --data-root,
--tiny) -> checks (dataset layout, no silent `init_cfg=Pretrained`, normalisation = pre-training's) ->
mmengine Runner -> model.init_weights() -> backbone weights through the gate (transfer.weights; writes
load_report.json) -> train (+ val at the end) -> result.json (transfer.results): task from the framework,
dataset + protocol id from the config's `benchmark = dict(dataset=..., protocol=...)` (see result_fields), seed.

SyncBN: configs ask for SyncBN (the protocols); with `--launcher none` mmengine's Runner reverts every
SyncBN layer to BatchNorm (Runner.wrap_model -> revert_sync_batchnorm), so the same configs run on one
CPU/GPU. Runs are folders: a work dir with result.json is complete and is left alone; one with a
checkpoint resumes from it (mmengine resume), a fresh one starts from the exported weights.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mmengine.hooks import Hook

from transfer.backbones import FeatureBackbone, load_exported
from transfer.datacheck import config_datasets
from transfer.openmmlab_models import fill_exported_backbone
from transfer.results import pretrain_seed, write_result
from transfer.weights import load_backbone_into, read_backbone_weights


class DataLayoutError(FileNotFoundError):
    pass


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Framework:
    name: str            # 'mmdet' | 'mmseg'
    task: str            # result.json task
    dataset: str         # result.json dataset
    layout: str          # human description of the expected dataset layout
    metrics: dict        # result key -> (evaluator key, factor to percent)
    root_subdir: str = ""  # --data-root may also name the folder holding this one (ADEChallengeData2016)
    configure: Callable | None = None   # (cfg) -> None: framework-specific set-up, after the data root is set


def parse_args(fw: Framework, argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    ap = argparse.ArgumentParser(prog=f"python -m transfer.{fw.name}.train",
                                 description=f"{fw.task}: train + evaluate a pre-trained backbone with {fw.name}")
    ap.add_argument("config", help="mmengine .py config (e.g. transfer/%s/configs/...)" % fw.name)
    ap.add_argument("--weights", required=True, help="exported backbone .safetensors (or official A²MIM .pth)")
    ap.add_argument("--work-dir", help="run folder (default work_dirs/<config stem>)")
    ap.add_argument("--data-root", help=f"dataset root ({fw.layout})")
    ap.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                    help="override config keys, e.g. train_dataloader.batch_size=4")
    ap.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    ap.add_argument("--tiny", type=int, nargs="?", const=128, default=None, metavar="SIZE",
                    help="CPU smoke run: images ~SIZE px, 2 iterations, few RoIs, workers 0, no checkpoints")
    ap.add_argument("--iters", type=int, default=None, help="with --tiny: training iterations (default 2)")
    ap.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: the config's randomness.seed, "
                    "else 0); written to result.json")
    return ap.parse_args(argv)


BENCHMARK_KEYS = ("dataset", "protocol")


def result_fields(cfg, fw: Framework, args, meta: dict) -> dict:
    """The run identity (transfer.results.identity) of an mmdet/mmseg run: the recipe id from the config's
    `benchmark = dict(protocol=...)` (else the config file's stem), the dataset as the data names itself (its
    dataset.json card; else the framework's real dataset), the pre-training from the weights' sidecar, and a marker
    for every departure from the config (--tiny, --cfg-options), so such a run is never set beside a published
    number of the unchanged recipe."""
    from transfer.results import identity, pretrain_label, result_dataset

    bench = cfg.get("benchmark") or {}
    bad = sorted(set(bench) - set(BENCHMARK_KEYS))
    if bad:
        raise ConfigError(f"{args.config}: benchmark has unknown keys {bad}; allowed: {list(BENCHMARK_KEYS)}")
    train = dict(config_datasets(cfg)).get("train") or {}
    dataset = result_dataset(train.get("data_root"), fw.dataset)
    markers = (["tiny"] if args.tiny else []) + (["cfg-options"] if args.cfg_options else [])
    return identity(task=fw.task, dataset=dataset, framework=fw.name,
                    recipe=bench.get("protocol") or Path(args.config).stem, backbone=_backbone_label(cfg, meta),
                    method=meta.get("method", "a2mim" if meta.get("format") == "openmixup" else "unknown"),
                    pretrain=pretrain_label(meta), markers=markers)


# ----------------------------------------------------------------------------- config helpers
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
        raise ConfigError("config loads weights outside the load gate (silent strict=False loading): "
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


# ----------------------------------------------------------------------------- run-folder hook
def _is_number(v) -> bool:
    try:
        float(v)            # python and numpy scalars (IoUMetric returns numpy float32)
        return not isinstance(v, (str, bytes))
    except (TypeError, ValueError):
        return False


class MetricsJsonlHook(Hook):
    """Appends training losses/lr and every validation's metrics to <work_dir>/metrics.jsonl; keeps the last
    validation metrics for result.json."""
    priority = "LOW"

    def __init__(self, path: Path, interval: int = 50):
        self.path, self.interval, self.last_val, self._lr = Path(path), interval, None, None

    def _write(self, rec: dict) -> None:
        from mmengine.dist import is_main_process
        if is_main_process():
            with open(self.path, "a") as f:
                f.write(json.dumps(rec, default=float) + "\n")

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._lr = float(runner.optim_wrapper.get_lr()["lr"][0])    # the lr this step uses (1st group)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        it = runner.iter + 1
        if it % self.interval and it != runner.max_iters:
            return
        rec = {"split": "train", "iter": it, "epoch": runner.epoch, "lr": self._lr}
        for k, v in (outputs or {}).items():
            rec[k] = float(v.detach().mean()) if hasattr(v, "detach") else v
        self._write(rec)

    def after_val_epoch(self, runner, metrics=None):
        self.last_val = {k: float(v) for k, v in (metrics or {}).items() if _is_number(v)}
        self._write({"split": "val", "iter": runner.iter, "epoch": runner.epoch, **self.last_val})


# ----------------------------------------------------------------------------- main flow
def run(fw: Framework, argv=None) -> dict:
    """Train + evaluate; returns the result.json record (also when the run folder was already complete)."""
    from mmengine.config import Config
    from mmengine.dist import is_main_process
    from mmengine.model import is_model_wrapper
    from mmengine.runner import Runner, find_latest_checkpoint

    args = parse_args(fw, argv)
    if not Path(args.config).is_file():
        raise FileNotFoundError(f"config not found: {args.config}")
    cfg = Config.fromfile(args.config)       # runs custom_imports (registers the suite's modules)
    cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or str(Path("work_dirs") / Path(args.config).stem)
    work = Path(cfg.work_dir)
    if (work / "result.json").is_file():
        print(f"{work}/result.json exists: run complete, nothing to do")
        return json.loads((work / "result.json").read_text())
    if args.data_root:
        root = Path(args.data_root)
        if fw.root_subdir and (root / fw.root_subdir).is_dir() and not (root / "images").is_dir():
            root = root / fw.root_subdir
        set_data_root(cfg, str(root))
    if fw.configure is not None:
        fw.configure(cfg)
    if args.seed is not None:
        cfg.randomness = dict(cfg.get("randomness") or {}, seed=args.seed)
    if args.tiny:
        apply_tiny(cfg, fw, args.tiny, args.iters or 2)
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    check_layout(cfg, fw)
    from transfer.datacheck import preflight    # data pre-flight: malformed annotations fail here, naming the file
    preflight(cfg, fw.name, work_dir=work)
    forbid_silent_pretrained(cfg)
    loaded = read_backbone_weights(args.weights)          # fail early on a bad weights file
    meta = loaded[1]
    fill_exported_backbone(cfg, meta)
    check_normalisation(cfg, meta)
    cfg.resume = find_latest_checkpoint(str(work)) is not None if work.is_dir() else False
    cfg.setdefault("randomness", dict(seed=0))
    fields = result_fields(cfg, fw, args, meta)
    ckpt = cfg.default_hooks.get("checkpoint")
    if ckpt and ckpt.get("interval", 1) > 0:
        ckpt.setdefault("max_keep_ckpts", 3)              # the run folder keeps the newest few (+ last)
    backends = list(cfg.visualizer.get("vis_backends", []))
    if importlib.util.find_spec("tensorboard") and not any(b.get("type") == "TensorboardVisBackend" for b in backends):
        # TensorBoard events next to mmengine's scalars.json, in <work>/<timestamp>/vis_data
        cfg.visualizer.vis_backends = backends + [dict(type="TensorboardVisBackend")]

    runner = Runner.from_cfg(cfg)
    log_every = cfg.default_hooks.get("logger", {}).get("interval", 50)
    hook = MetricsJsonlHook(work / "metrics.jsonl", interval=log_every)
    runner.register_hook(hook)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    model.init_weights()                      # random init of heads now; Runner's own call becomes a no-op
    main_rank = is_main_process()
    report_path = work / "load_report.json" if main_rank else None
    if isinstance(model.backbone, FeatureBackbone):
        report = load_exported(model, loaded, report_path=report_path, source=args.weights, prefix="backbone.")
    else:
        report = load_backbone_into(model, args.weights, report_path=report_path, loaded=loaded)
    runner.logger.info(f"backbone weights loaded through the gate: {report.counts} ({work / 'load_report.json'})")
    runner.train()
    raw = hook.last_val if hook.last_val else runner.test()
    metrics = {}
    for out_key, (key, factor) in fw.metrics.items():
        if key not in raw:
            raise RuntimeError(f"evaluation returned no '{key}' (got {sorted(raw)}); see the log in {work}")
        metrics[out_key] = round(float(raw[key]) * factor, 4)
    if not main_rank:
        return {}
    path = write_result(work, **fields, metrics=metrics, weights=str(Path(args.weights).resolve()),
                        config=str(Path(args.config).resolve()), tiny=bool(args.tiny), seed=cfg.randomness.get("seed"),
                        pretrain_seed=pretrain_seed(meta))
    return json.loads(Path(path).read_text())


def cli(fw: Framework, argv=None) -> int:
    """Command line: bad input (data layout, config, weights, load gate) ends with one clear message, exit 2."""
    from pretrain.checkpoint import CheckpointError
    from pretrain.datacheck import DatasetError
    from pretrain.export_format import ExportFormatError
    from transfer.weights import IncompleteLoadError, WeightsFormatError
    try:
        run(fw, argv)
    except (DataLayoutError, ConfigError, IncompleteLoadError, WeightsFormatError, ExportFormatError,
            FileNotFoundError, DatasetError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _backbone_label(cfg, meta: dict) -> str:
    """The sidecar's preset; for a weights file without one (an official .pth), the config's ResNet depth or type."""
    if meta.get("preset"):
        return meta["preset"]
    bb = cfg.model.get("backbone") or {}
    return f"resnet{bb['depth']}" if bb.get("depth") else str(bb.get("type", "unknown"))
