"""COCO instance segmentation with detectron2: convert -> load + gate -> train -> COCOEvaluator -> result.json.

    python -m transfer.detectron2.train --config {r50_c4_1x,r50_c4_2x,r50_fpn_1x,vit_base_sfp}
        --weights EXPORTED.safetensors|OFFICIAL.pth --data-root COCO_ROOT [--output-dir D]
        [--num-gpus N --num-machines M --machine-rank R --dist-url U] [KEY VALUE ...]

COCO_ROOT holds annotations/instances_{train,val}2017.json and {train,val}2017/ (the real layout, or the toy
world's coco/). Trailing KEY VALUE pairs override the config (detectron2 syntax, unknown keys fail), e.g.
`SOLVER.IMS_PER_BATCH 8 SOLVER.BASE_LR 0.01`. Multi-GPU / multi-machine runs go through detectron2's `launch`
(one process per GPU; under SLURM start one `python -m transfer.detectron2.train` per node with its
--machine-rank and a shared --dist-url tcp://HOST:PORT).

The run folder D (default runs/detectron2/<config>): config.yaml, log.txt, metrics.jsonl, TensorBoard events,
backbone_d2.pkl (the converted weights), load_report.json, model_final.pth, inference/, result.json.
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
VIT_BACKBONE = "build_a2mim_vit_sfp_backbone"


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
    """The shared COCO pre-flight (pretrain.datacheck) on both splits: DatasetError naming files and keys."""
    from pretrain.datacheck import Report, check_coco_images, check_coco_json

    rep = Report("detectron2 data", str(root))
    for ann, images in coco_paths(root).values():
        _, files = check_coco_json(ann, images, rep=rep)
        check_coco_images(files, rep, full=False)
    rep.raise_if_bad()


# config name -> the protocol id of benchmarks/reference.yaml (the others have no published row)
PROTOCOL_IDS = {"r50_c4_2x": "maskrcnn-c4-ms2x", "vit_base_sfp": "maskrcnn-vit"}


def result_protocol(config: str, opts: list[str]) -> str:
    """Protocol id for result.json; command-line overrides make it '+opts' (never set beside a paper number)."""
    return PROTOCOL_IDS.get(config, config) + ("+opts" if opts else "")


def result_dataset(root: str | Path) -> str:
    """'toy_coco' for the generated toy world (benchmarks/toydata.py marks its root), else 'coco2017'."""
    return "toy_coco" if (Path(root).resolve().parent / "toyworld.json").is_file() else "coco2017"


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
    """DefaultTrainer with: AdamW + layer decay (SOLVER.OPTIMIZER ADAMW), COCOEvaluator, metrics.jsonl."""
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator
    from detectron2.solver.build import maybe_add_gradient_clipping
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

    from transfer.detectron2.modeling import vit_param_groups

    class Trainer(DefaultTrainer):
        @classmethod
        def build_optimizer(cls, cfg, model):
            if cfg.SOLVER.OPTIMIZER != "ADAMW":
                return super().build_optimizer(cfg, model)
            vit = getattr(getattr(model.backbone, "net", None), "vit", None)
            depth = len(vit.blocks) if vit is not None else 0   # no ViT: plain AdamW groups (decay has no layers)
            groups = vit_param_groups(model, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.LAYER_DECAY, depth)
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


def setup(args) -> tuple:
    """Config for this process (after launch): datasets, output dir, runtime changes, converted weights."""
    from detectron2.engine import default_setup
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from transfer.detectron2 import modeling  # noqa: F401  (registers the ViT backbone and the C4 head)
    from transfer.detectron2.convert import convert, read_pkl

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
    pkl = Path(args.output_dir) / "backbone_d2.pkl"
    if comm.get_local_rank() == 0:   # once per machine (the run folder need not be on a shared file system)
        pkl.parent.mkdir(parents=True, exist_ok=True)
        convert(args.weights, pkl, img_size=cfg.MODEL.VIT.IMG_SIZE)
    comm.synchronize()
    info = read_pkl(pkl)["a2mim"]
    is_vit_cfg = cfg.MODEL.BACKBONE.NAME == VIT_BACKBONE
    if is_vit_cfg != (info["kind"] == "vit"):
        raise ValueError(f"--config {args.config} needs {'ViT' if is_vit_cfg else 'ResNet'} weights, "
                         f"but {args.weights} holds a {info['kind']} backbone")
    if is_vit_cfg and info.get("preset"):
        cfg.MODEL.VIT.PRESET = info["preset"]     # the architecture the weights were exported from
    elif not is_vit_cfg:
        cfg.MODEL.RESNETS.DEPTH = info["depth"]
    cfg.MODEL.WEIGHTS = str(pkl)
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
    return cfg, info, changes


def run(args) -> dict | None:
    """One process of the job (detectron2's launch calls it once per GPU)."""
    from detectron2.utils import comm

    from transfer.detectron2.gate import load_pkl_with_gate
    from transfer.results import write_result

    cfg, info, changes = setup(args)
    out = Path(cfg.OUTPUT_DIR)
    trainer = _trainer_class()(cfg)
    if comm.all_gather((out / "last_checkpoint").exists())[0]:   # rank 0 decides (resuming needs a shared folder)
        logger.info("resuming from this run's own checkpoint (%s); the load gate ran at its first start",
                    (out / "last_checkpoint").read_text().strip())
        trainer.resume_or_load(resume=True)
    else:
        report = out / "load_report.json" if comm.is_main_process() else None
        rep = load_pkl_with_gate(trainer.model, cfg.MODEL.WEIGHTS, report_path=report)
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
    backbone = info.get("preset") or (f"resnet{info['depth']}" if info["kind"] == "resnet" else cfg.MODEL.VIT.PRESET)
    write_result(out, task="coco_det", framework="detectron2", dataset=result_dataset(args.data_root),
                 backbone=backbone, method=info.get("method") or "unknown", metrics=metrics, weights=str(args.weights),
                 config=str(out / "config.yaml"), protocol=result_protocol(args.config, args.opts), data_root=str(Path(args.data_root).resolve()),
                 load_report=str(out / "load_report.json"), iterations=cfg.SOLVER.MAX_ITER,
                 world_size=comm.get_world_size(), runtime_changes=changes)
    return metrics


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m transfer.detectron2.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, choices=sorted(CONFIGS))
    ap.add_argument("--weights", required=True, help="exported .safetensors (+ .json) or official A²MIM .pth")
    ap.add_argument("--data-root", required=True, help="COCO root: annotations/instances_{train,val}2017.json, ...")
    ap.add_argument("--output-dir", default=None, help="run folder (default runs/detectron2/<config>)")
    ap.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs) per machine")
    ap.add_argument("--num-machines", type=int, default=1)
    ap.add_argument("--machine-rank", type=int, default=0)
    ap.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0 ('auto': a free local port)")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = ap.parse_args(argv)
    args.output_dir = Path(args.output_dir or Path("runs/detectron2") / args.config)
    if args.dist_url == "auto" and args.num_machines > 1:
        ap.error("--dist-url tcp://HOST:PORT is required with --num-machines > 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.output_dir / "result.json").exists():
        print(f"{args.output_dir}: complete (result.json exists); nothing to do")
        return 0
    try:  # fail before spawning workers: bad config keys, data layout, weights path
        get_config(args.config, args.opts)
        preflight_coco(args.data_root)
        if not Path(args.weights).is_file():
            raise FileNotFoundError(f"--weights {args.weights}: no such file")
    except (KeyError, ValueError, FileNotFoundError, AssertionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from detectron2.engine import launch

    from transfer.weights import IncompleteLoadError

    try:
        launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (ValueError, FileNotFoundError, IncompleteLoadError) as e:   # kind mismatch, conversion, load gate
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
