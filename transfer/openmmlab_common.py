"""One training entry point for the mmdet and mmseg adapters (`transfer.mmdet.train`, `transfer.mmseg.train`).

Flow: config (mmengine .py inheriting `mmdet::` / `mmseg::` bases) -> overrides (--cfg-options, --data-root,
--tiny) -> checks (dataset layout, no silent `init_cfg=Pretrained`, normalisation = pre-training's) ->
mmengine Runner -> model.init_weights() -> backbone weights through the gate (transfer.weights; writes
load_report.json) -> train (+ val at the end) -> result.json (transfer.results): task from the framework,
dataset + protocol id from the config's `benchmark = dict(dataset=..., protocol=...)` (see result_fields), seed.

Guards: one writer per work dir (pretrain/runlock.py), its recorded inputs (pretrain/fingerprint.py; --force-new),
a NaN/inf loss stops the run, stop signals save a checkpoint at the end of the iteration (transfer/openmmlab_hooks.py),
and mmengine's own checkpoints hold tensors and plain containers only, so resume reads them with
the weights-only loader.

SyncBN: configs ask for SyncBN (the protocols); with `--launcher none` mmengine's Runner reverts every
SyncBN layer to BatchNorm (Runner.wrap_model -> revert_sync_batchnorm), so the same configs run on one
CPU/GPU. Runs are folders: a work dir with result.json is complete and is left alone; one with a
checkpoint resumes from it (mmengine resume), a fresh one starts from the exported weights.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

from pretrain.fingerprint import InputsChangedError, check_inputs, record
from pretrain.runlock import RunLock, RunLockError
from pretrain.signals import RunInterrupted, StopSignals
from transfer.backbones import FeatureBackbone, load_exported
from transfer.datacheck import config_datasets
from transfer.openmmlab_config import (ConfigError, Framework, DataLayoutError, apply_tiny, check_cfg_options, check_layout,
                                       check_normalisation, forbid_silent_pretrained, set_data_root)
from transfer.openmmlab_hooks import (ExactResumeHook, FiniteLossHook, MetricsJsonlHook, PlainCheckpointHook,
                                      StopSignalHook)
from transfer.openmmlab_models import fill_exported_backbone
from transfer.results import pretrain_seed, write_result
from transfer.weights import load_backbone_into, read_backbone_weights


def parse_args(fw: Framework, argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    ap = argparse.ArgumentParser(prog=f"python -m transfer.{fw.name}.train",
                                 description=f"{fw.task}: train + evaluate a pre-trained backbone with {fw.name}")
    ap.add_argument("config", help="mmengine .py config (e.g. transfer/%s/configs/...)" % fw.name)
    ap.add_argument("--weights", required=True, help="exported backbone .safetensors (or official A²MIM .pth)")
    ap.add_argument("--work-dir", help="run folder (default work_dirs/<config stem>)")
    ap.add_argument("--data-root", help=f"dataset root ({fw.layout})")
    ap.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                    help="override config keys, e.g. train_dataloader.batch_size=4 (applied last, after --tiny; a "
                         "key the config lacks is an error: add one with +KEY=VALUE)")
    ap.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    ap.add_argument("--tiny", type=int, nargs="?", const=128, default=None, metavar="SIZE",
                    help="CPU smoke run: images ~SIZE px, 2 iterations, few RoIs, workers 0, no checkpoints")
    ap.add_argument("--iters", type=int, default=None, help="with --tiny: training iterations (default 2)")
    ap.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper); without CUDA the run "
                    "stays fp32, with a warning, unless --cpu-amp")
    ap.add_argument("--cpu-amp", action="store_true", help="keep AMP on a CPU (far slower than fp32 there)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: the config's randomness.seed, "
                    "else 0); written to result.json")
    ap.add_argument("--force-new", action="store_true",
                    help="the work dir holds a run made from other inputs (or any run): move it aside, start fresh")
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


# ----------------------------------------------------------------------------- main flow
def _is_rank0() -> bool:
    """Before mmengine sets up the process group: rank 0 of a torchrun / srun launch (or a single process)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def cpu_safe_amp(cfg, insist: bool) -> None:
    """An AmpOptimWrapper (from --amp or the config) without CUDA becomes a plain fp32 OptimWrapper, with one warning,
    unless insist (--cpu-amp): CPU autocast is far slower than fp32."""
    import torch

    ow = cfg.get("optim_wrapper") or {}
    if ow.get("type") != "AmpOptimWrapper" or torch.cuda.is_available() or insist:
        return
    print("warning: AMP without CUDA: this run is fp32 (CPU autocast is far slower); --cpu-amp insists", flush=True)
    ow["type"] = "OptimWrapper"
    for key in ("loss_scale", "dtype"):
        ow.pop(key, None)


def prepare(fw: Framework, args):
    """The resolved config of this run (data root, seed, --tiny, --amp, then the user's --cfg-options, checked)."""
    from mmengine.config import Config

    if not Path(args.config).is_file():
        raise FileNotFoundError(f"config not found: {args.config}")
    cfg = Config.fromfile(args.config)       # runs custom_imports (registers the suite's modules)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or str(Path("work_dirs") / Path(args.config).stem)
    if args.data_root:
        root = Path(args.data_root)
        if fw.root_subdir and (root / fw.root_subdir).is_dir() and not (root / "images").is_dir():
            root = root / fw.root_subdir
        set_data_root(cfg, str(root))
    if fw.configure is not None:
        fw.configure(cfg)
    if args.seed is not None:
        cfg.randomness = dict(cfg.get("randomness") or {}, seed=args.seed)
    cfg.setdefault("randomness", dict(seed=0))
    if args.tiny:
        apply_tiny(cfg, fw, args.tiny, args.iters or 2)
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    cfg.merge_from_dict(check_cfg_options(cfg, args.cfg_options, scope=fw.name))    # the user's word is the last
    cpu_safe_amp(cfg, getattr(args, "cpu_amp", False))
    for split in ("train", "val", "test"):        # workers ignore stop signals (the main process saves)
        dl = cfg.get(f"{split}_dataloader")
        if dl and dl.get("num_workers", 0) > 0 and "worker_init_fn" not in dl:
            dl["worker_init_fn"] = dict(type="a2mim_worker_init_fn", num_workers=dl["num_workers"],
                                        seed=cfg.randomness.get("seed") or 0)
    return cfg


def run(fw: Framework, argv=None) -> dict:
    """Train + evaluate; returns the result.json record (also when the run folder was already complete).
    Rank 0 holds the work dir's lock (pretrain/runlock.py) for the whole run."""
    args = parse_args(fw, argv)
    cfg = prepare(fw, args)
    lock = RunLock(cfg.work_dir, what=f"transfer.{fw.name}.train")
    if _is_rank0():
        lock.acquire()
    try:
        return _run_locked(fw, args, cfg)
    finally:
        lock.release()


def _run_locked(fw: Framework, args, cfg) -> dict:
    from mmengine.dist import is_main_process
    from mmengine.model import is_model_wrapper
    from mmengine.runner import Runner, find_latest_checkpoint

    work = Path(cfg.work_dir)
    done = (work / "result.json").is_file()
    if not done:
        check_layout(cfg, fw)               # a wrong data root fails before anything is written
    if _is_rank0():
        train_root = (dict(config_datasets(cfg)).get("train") or {}).get("data_root")
        check_inputs(work, record(cfg.to_dict(), args.weights, train_root), complete=done, force_new=args.force_new)
        done = (work / "result.json").is_file()
    if done:
        print(f"{work}/result.json exists: run complete, nothing to do")
        return json.loads((work / "result.json").read_text())
    from transfer.datacheck import preflight    # data pre-flight: malformed annotations fail here, naming the file
    preflight(cfg, fw.name, work_dir=work)
    forbid_silent_pretrained(cfg)
    loaded = read_backbone_weights(args.weights)          # fail early on a bad weights file
    meta = loaded[1]
    fill_exported_backbone(cfg, meta)
    check_normalisation(cfg, meta)
    cfg.resume = find_latest_checkpoint(str(work)) is not None if work.is_dir() else False
    fields = result_fields(cfg, fw, args, meta)
    ckpt = cfg.default_hooks.get("checkpoint")
    if ckpt and ckpt.get("interval", 1) > 0:
        ckpt.setdefault("max_keep_ckpts", 3)              # the run folder keeps the newest few (+ last)
    backends = list(cfg.visualizer.get("vis_backends", []))
    if importlib.util.find_spec("tensorboard") and not any(b.get("type") == "TensorboardVisBackend" for b in backends):
        # TensorBoard events next to mmengine's scalars.json, in <work>/<timestamp>/vis_data
        cfg.visualizer.vis_backends = backends + [dict(type="TensorboardVisBackend")]

    with StopSignals() as stop:
        runner = Runner.from_cfg(cfg)
        log_every = cfg.default_hooks.get("logger", {}).get("interval", 50)
        hook = MetricsJsonlHook(work / "metrics.jsonl", interval=log_every)
        for h in (hook, FiniteLossHook(), PlainCheckpointHook(), ExactResumeHook(), StopSignalHook(stop)):
            runner.register_hook(h)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model.init_weights()                      # random init of heads now; Runner's own call becomes a no-op
        main_rank = is_main_process()
        report_path = work / "load_report.json" if main_rank else None
        if isinstance(model.backbone, FeatureBackbone):
            report = load_exported(model, loaded, report_path=report_path, source=args.weights, prefix="backbone.")
        else:
            report = load_backbone_into(model, args.weights, report_path=report_path, loaded=loaded)
        runner.logger.info(f"backbone weights loaded through the gate: {report.counts} ({work / 'load_report.json'})")
        if main_rank:      # the dumped config replays in stock mmdet/mmseg from these weights (load_from)
            from transfer.openmmlab_stock import write_stock_config
            dumped = write_stock_config(runner, model, report.matched, work)
            runner.logger.info(f"stock-tool config: {dumped} (load_from = the weights the gate loaded)")
        runner.train()
        raw = hook.last_val if hook.last_val else runner.test()
    metrics = {}
    for out_key, (key, factor) in fw.metrics.items():
        if key not in raw:
            raise RuntimeError(f"evaluation returned no '{key}' (got {sorted(raw)}); see the log in {work}")
        metrics[out_key] = round(float(raw[key]) * factor, 4)
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"evaluation gave non-finite metrics {bad}; no result.json is written ({work})")
    if not main_rank:
        return {}
    path = write_result(work, **fields, metrics=metrics, weights=str(Path(args.weights).resolve()),
                        config=str(Path(args.config).resolve()), tiny=bool(args.tiny), seed=cfg.randomness.get("seed"),
                        pretrain_seed=pretrain_seed(meta))
    return json.loads(Path(path).read_text())


def cli(fw: Framework, argv=None) -> int:
    """Command line: bad input (data layout, config, weights, load gate) ends with one clear message, exit 2; a
    stop signal after its checkpoint exits 75 (SIGTERM / SIGUSR1) or 130 (SIGINT)."""
    from pretrain.checkpoint import CheckpointError
    from pretrain.datacheck import DatasetError
    from pretrain.export_format import ExportFormatError
    from transfer.weights import IncompleteLoadError, WeightsFormatError
    try:
        run(fw, argv)
    except RunInterrupted as e:
        print(f"{e}", file=sys.stderr)
        return e.code
    except (DataLayoutError, ConfigError, IncompleteLoadError, WeightsFormatError, ExportFormatError,
            FileNotFoundError, DatasetError, CheckpointError, RunLockError, InputsChangedError,
            FloatingPointError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


def _backbone_label(cfg, meta: dict) -> str:
    """The sidecar's preset; for a weights file without one (an official .pth), the config's ResNet depth or type."""
    if meta.get("preset"):
        return meta["preset"]
    bb = cfg.model.get("backbone") or {}
    return f"resnet{bb['depth']}" if bb.get("depth") else str(bb.get("type", "unknown"))
