"""COCO instance segmentation with detectron2: convert -> load + gate -> train -> COCOEvaluator -> result.json.

    python -m transfer.detectron2.train --config {r50_c4_1x,r50_c4_2x,r50_fpn_1x,exported_fpn_1x,vit_base_sfp}
        --weights EXPORTED.safetensors|OFFICIAL.pth --data-root COCO_ROOT [--work-dir D] [--tiny [--tiny-size S] [--iters N]]
        [--num-gpus N --num-machines M --machine-rank R --dist-url U] [KEY VALUE ...]

COCO_ROOT holds annotations/instances_{train,val}2017.json and {train,val}2017/ (the real layout, or the toy
world's coco/). Trailing KEY VALUE pairs override the config (detectron2 syntax, unknown keys fail), e.g.
`SOLVER.IMS_PER_BATCH 8 SOLVER.BASE_LR 0.01`. Multi-GPU / multi-machine runs go through detectron2's `launch`
(one process per GPU; under SLURM start one `python -m transfer.detectron2.train` per node with its
--machine-rank and a shared --dist-url tcp://HOST:PORT).

The weights are read and loaded in memory through the gate (transfer/detectron2/gate.py): an exported backbone
of any family for the exported_* / vit_* configs (MODEL.EXPORTED.* filled from its sidecar), a ResNet for the
native-ResNet MoCo configs. The run folder D (default runs/detectron2/<config>): config.yaml, log.txt,
metrics.jsonl, TensorBoard events, load_report.json, model_final.pth, inference/, result.json.
A folder with result.json is complete (nothing is done); one with a detectron2 `last_checkpoint` resumes from it.
On one process every SyncBN becomes BN and without CUDA the model runs on CPU with AMP off: see
configs.adapt_to_runtime; the changes are logged and listed in result.json under runtime_changes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
from pathlib import Path

import torch

from transfer.detectron2.configs import CONFIGS, adapt_to_runtime, get_config

logger = logging.getLogger("a2mim.detectron2")


class DataLayoutError(FileNotFoundError):
    """COCO_ROOT does not have the COCO 2017 layout."""


def coco_paths(root: str | Path) -> dict[str, tuple[Path, Path]]:
    """{'train'|'val': (annotation json, image folder)}; a clear error listing what is missing."""
    root = Path(root)
    paths = {s: (root / "annotations" / f"instances_{s}2017.json", root / f"{s}2017") for s in ("train", "val")}
    missing = [str(p) for pair in paths.values() for p in pair if not p.exists()]
    if missing:
        raise DataLayoutError(f"{root}: not a COCO 2017 layout, missing {missing}; expected "
                              "annotations/instances_{train,val}2017.json and image folders {train,val}2017/")
    return paths


def preflight_coco(root: str | Path) -> None:
    """The shared COCO pre-flight (transfer.datacheck) on both splits: DatasetError naming files and keys."""
    from transfer.datacheck import preflight_coco_root
    preflight_coco_root(root)


# config name -> the recipe id of benchmarks/reference.yaml (the others are their own)
RECIPE_IDS = {"r50_c4_2x": "maskrcnn-c4-ms2x", "vit_base_sfp": "maskrcnn-vit-sfp"}


def coco_num_classes(ann: Path) -> int:
    try:
        cats = json.loads(ann.read_text()).get("categories")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataLayoutError(f"{ann}: not a COCO annotation json ({e})") from None
    if not cats:
        raise DataLayoutError(f"{ann}: no 'categories' list (COCO instances json expected)")
    return len(cats)


def register_coco(root: str | Path) -> tuple[str, str]:
    """Register both splits (names unique per root) with detectron2's COCO json loader."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    tag = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:8]
    names = []
    for split, (ann, images) in coco_paths(root).items():
        name = f"a2mim_coco_{split}_{tag}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(ann), str(images))
        names.append(name)
    return names[0], names[1]


def _trainer_class():
    """DefaultTrainer with: AdamW + layer decay (SOLVER.OPTIMIZER ADAMW, transfer.param_groups), COCOEvaluator,
    metrics.jsonl."""
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator
    from detectron2.solver.build import maybe_add_gradient_clipping
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

    from transfer.backbones import FeatureBackbone
    from transfer.param_groups import param_groups

    class Trainer(DefaultTrainer):
        @classmethod
        def build_optimizer(cls, cfg, model):
            if cfg.SOLVER.OPTIMIZER != "ADAMW":
                return super().build_optimizer(cfg, model)
            fb = next(((n + ".", m) for n, m in model.named_modules() if isinstance(m, FeatureBackbone)), None)
            decay = cfg.SOLVER.LAYER_DECAY if fb is not None and cfg.SOLVER.LAYER_DECAY != 1.0 else None
            groups = param_groups(model, cfg.SOLVER.WEIGHT_DECAY, decay, body=fb[1].body if fb else None,
                                  prefix=f"{fb[0]}body." if fb else "")
            for g in groups:
                g["lr"] = cfg.SOLVER.BASE_LR * g.pop("lr_scale")
                g.pop("param_names"), g.pop("group_name")
            opt = torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS),
                                    weight_decay=cfg.SOLVER.WEIGHT_DECAY)
            return maybe_add_gradient_clipping(cfg, opt)

        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))

        def build_writers(self):
            out = self.cfg.OUTPUT_DIR
            return [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(out, "metrics.jsonl")),
                    TensorboardXWriter(out)]

    return Trainer


def fill_backbone(cfg, sd: dict, meta: dict, config: str, weights: str) -> None:
    """MODEL.EXPORTED.* from the sidecar (contract configs) or MODEL.RESNETS.DEPTH (native-ResNet configs);
    a family the config cannot take is an error naming both."""
    from transfer.detectron2.configs import EXPORTED_BACKBONE
    from transfer.detectron2.convert import backbone_kind, resnet_depth

    if cfg.MODEL.BACKBONE.NAME == EXPORTED_BACKBONE:
        e = cfg.MODEL.EXPORTED
        if not meta.get("timm_name"):
            raise ValueError(f"--config {config} builds the backbone from the weights' sidecar, but {weights} has "
                             f"none naming the architecture (python -m pretrain.export writes it)")
        if meta.get("kind") != e.KIND:
            raise ValueError(f"--config {config} needs {e.KIND.upper()} weights, but {weights} holds a "
                             f"{meta.get('kind')} backbone ({meta['timm_name']})")
        e.TIMM_NAME, e.TIMM_KWARGS = meta["timm_name"], json.dumps(meta.get("timm_kwargs") or {}, sort_keys=True)
        return
    if backbone_kind(sd, weights) != "resnet":
        raise ValueError(f"--config {config} uses detectron2's native ResNet, but {weights} holds a "
                         f"{meta.get('timm_name') or 'non-ResNet'} backbone; use exported_fpn_1x (CNNs) or vit_base_sfp")
    depth = cfg.MODEL.RESNETS.DEPTH = resnet_depth(sd, weights)
    if depth < 50:              # basic blocks: detectron2 builds them with 64 res2 channels, and has no basic res5 head
        if "Res5" in cfg.MODEL.ROI_HEADS.NAME:
            raise ValueError(f"--config {config} puts res5 in the RoI head (C4), which detectron2 builds from bottleneck "
                             f"blocks only; {weights} is a ResNet-{depth}: use r50_fpn_1x or exported_fpn_1x")
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64


def setup(args) -> tuple:
    """Config for this process (after launch): datasets, output dir, runtime changes, the weights read."""
    from detectron2.engine import default_setup
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from transfer.detectron2 import modeling  # noqa: F401  (registers the exported backbone and the C4 head)
    from transfer.weights import read_backbone_weights

    cfg = get_config(args.config, args.opts)
    train, val = register_coco(args.data_root)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train,), (val,)
    cfg.OUTPUT_DIR = str(args.output_dir)
    changes = adapt_to_runtime(cfg, comm.get_world_size(), torch.cuda.is_available())
    val_ann = coco_paths(args.data_root)["val"][0]
    n = coco_num_classes(val_ann)
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != n:   # a mismatch would break COCOEvaluator's id mapping
        changes.append(f"MODEL.ROI_HEADS.NUM_CLASSES: {cfg.MODEL.ROI_HEADS.NUM_CLASSES} -> {n} "
                       f"(categories in {val_ann})")
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = n
    loaded = read_backbone_weights(args.weights)
    fill_backbone(cfg, loaded[0], loaded[1], args.config, str(args.weights))
    cfg.MODEL.WEIGHTS = ""                     # weights come through the gate only (gate.load_backbone)
    cfg.freeze()
    # several runs in one process (tests, drivers): each logs to its own folder only. detectron2's setup_logger is
    # lru-cached per arguments, so its cache is cleared with the old handlers.
    for name in ("detectron2", "fvcore", logger.name):
        logging.getLogger(name).handlers.clear()
    getattr(setup_logger, "cache_clear", lambda: None)()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=logger.name, abbrev_name="a2mim")
    for c in changes:
        logger.info("runtime change: %s", c)
    return cfg, loaded, changes


def run(args) -> dict | None:
    """One process of the job (detectron2's launch calls it once per GPU)."""
    from detectron2.utils import comm

    from pretrain.signals import StopSignals
    from transfer.detectron2.gate import load_backbone
    from transfer.detectron2.guards import StopSignalHook, safe_resume
    from transfer.results import identity, pretrain_label, pretrain_seed, result_dataset, write_result

    cfg, loaded, changes = setup(args)
    meta = loaded[1]
    out = Path(cfg.OUTPUT_DIR)
    with StopSignals() as stop:
        trainer = _trainer_class()(cfg)
        trainer.register_hooks([StopSignalHook(stop)])
        if comm.all_gather((out / "last_checkpoint").exists())[0]:   # rank 0 decides (resuming needs a shared folder)
            logger.info("resuming from this run's own checkpoint (%s); the load gate ran at its first start",
                        (out / "last_checkpoint").read_text().strip())
            safe_resume(trainer)        # only the run's own .pth files, weights_only (guards.SafeCheckpointer)
        else:
            report = out / "load_report.json" if comm.is_main_process() else None
            rep = load_backbone(trainer.model, loaded, report_path=report, source=str(args.weights))
            logger.info("load gate passed: %s", rep.counts)
        trainer.train()
    if not comm.is_main_process():
        return None
    res = getattr(trainer, "_last_eval_results", None)
    if not res or "bbox" not in res:
        raise RuntimeError(f"{out}: training ended without COCO evaluation results (got {res!r})")
    metrics = {f"{task}_{name}": float(res[task][ap]) for task in ("bbox", "segm") if task in res
               for name, ap in (("mAP", "AP"), ("mAP_50", "AP50"), ("mAP_75", "AP75"))}
    if any(math.isnan(v) for v in metrics.values()):
        logger.warning("some COCO metrics are NaN (the model made no predictions): %s", metrics)
    backbone = meta.get("preset") or (meta.get("timm_name") or f"resnet{cfg.MODEL.RESNETS.DEPTH}")
    ident = identity(task="coco_det", dataset=result_dataset(args.data_root, "coco2017"), framework="detectron2",
                     recipe=RECIPE_IDS.get(args.config, args.config), backbone=backbone,
                     method=meta.get("method") or ("a2mim" if meta.get("format") == "openmixup" else "unknown"),
                     pretrain=pretrain_label(meta),
                     markers=(["opts"] if getattr(args, "user_opts", args.opts) else [])
                     + (["tiny"] if getattr(args, "tiny", False) else []))
    write_result(out, **ident, metrics=metrics, weights=str(args.weights), config=str(out / "config.yaml"),
                 data_root=str(Path(args.data_root).resolve()), load_report=str(out / "load_report.json"),
                 iterations=cfg.SOLVER.MAX_ITER, world_size=comm.get_world_size(), runtime_changes=changes,
                 pretrain_seed=pretrain_seed(meta))
    return metrics


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m transfer.detectron2.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, choices=sorted(CONFIGS),
                    help="a config name (transfer/detectron2/configs.py), not a yaml path")
    ap.add_argument("--weights", required=True, help="exported .safetensors (+ .json) or official A²MIM .pth")
    ap.add_argument("--data-root", required=True, help="COCO root: annotations/instances_{train,val}2017.json, ...")
    ap.add_argument("--work-dir", "--output-dir", dest="output_dir", default=None,
                    help="run folder (default runs/detectron2/<config>); --output-dir is the same flag")
    ap.add_argument("--tiny", action="store_true",
                    help="CPU smoke run: short side --tiny-size, 2 iterations, few RoIs (configs.tiny_opts; your "
                         "KEY VALUE overrides still win); marks the protocol +tiny")
    ap.add_argument("--tiny-size", type=int, default=96, help="with --tiny: the short side in px (default 96)")
    ap.add_argument("--iters", type=int, default=None, help="with --tiny: training iterations (default 2)")
    ap.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs) per machine")
    ap.add_argument("--num-machines", type=int, default=1)
    ap.add_argument("--machine-rank", type=int, default=0)
    ap.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0 ('auto': a free local port)")
    ap.add_argument("--force-new", action="store_true",
                    help="the output folder holds a run made from other inputs (or any run): move it aside, start fresh")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--config-file" in argv or any(a.startswith("--config-file=") for a in argv):
        ap.error("--config-file is detectron2's tools/train_net.py flag; here --config takes a config NAME, one of "
                 f"{', '.join(sorted(CONFIGS))} (detectron2 overrides go last as KEY VALUE pairs)")
    args = ap.parse_args(argv)
    if args.iters is not None and not args.tiny:
        ap.error("--iters goes with --tiny (for a real run set SOLVER.MAX_ITER N)")
    args.user_opts = list(args.opts)
    if args.tiny:                  # the smoke settings first: the user's own KEY VALUE pairs override them
        from transfer.detectron2.configs import tiny_opts
        args.opts = tiny_opts(args.config, args.tiny_size, args.iters or 2) + args.user_opts
    args.output_dir = Path(args.output_dir or Path("runs/detectron2") / args.config)
    if args.dist_url == "auto" and args.num_machines > 1:
        ap.error("--dist-url tcp://HOST:PORT is required with --num-machines > 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """One machine of the job. Machine 0 holds the output folder's lock (pretrain/runlock.py) while its processes
    run, and checks the folder's recorded inputs (pretrain/fingerprint.py) before anything is read from it."""
    from pretrain.checkpoint import CheckpointError
    from pretrain.datacheck import DatasetError
    from pretrain.fingerprint import InputsChangedError, check_inputs, record
    from pretrain.runlock import RunLock, RunLockError
    from pretrain.signals import RunInterrupted

    args = parse_args(argv)
    lock = RunLock(args.output_dir, what="transfer.detectron2.train")
    try:
        if args.machine_rank == 0:
            lock.acquire()
        cfg = get_config(args.config, args.opts)   # fail before spawning workers: bad config keys, data, weights
        if not Path(args.weights).is_file():
            raise FileNotFoundError(f"--weights {args.weights}: no such file")
        if args.machine_rank == 0:
            check_inputs(args.output_dir, record(json.loads(json.dumps(cfg, default=str)), args.weights,
                                                 args.data_root),
                         complete=(args.output_dir / "result.json").exists(), force_new=args.force_new)
        if (args.output_dir / "result.json").exists():
            print(f"{args.output_dir}: complete (result.json exists); nothing to do")
            return 0
        preflight_coco(args.data_root)
        from detectron2.engine import launch

        from transfer.weights import IncompleteLoadError, WeightsFormatError
        try:
            launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                   dist_url=args.dist_url, args=(args,))
        except (IncompleteLoadError, WeightsFormatError, FloatingPointError) as e:   # load gate, weights, NaN loss
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
    except RunInterrupted as e:
        print(f"{e}", file=sys.stderr)
        return e.code
    except (KeyError, ValueError, FileNotFoundError, AssertionError, CheckpointError, DatasetError, RunLockError,
            InputsChangedError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
