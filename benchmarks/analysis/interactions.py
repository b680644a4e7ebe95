"""Multi-order interaction strength J(m) of classifiers built on exported backbones (one curve per checkpoint).

    python -m benchmarks.analysis.interactions --weights W.safetensors [--weights W2 ...] --data ROOT
        [--head HEAD.pt ... | --probe-steps N] [--grid 7] [--orders 0,0.05,...,1] [--pairs 8 --contexts 16]
        [--pair-radius 1] [--baseline mean|zero] [--norm mean|sum] [--num-images 32] [--seed 0] [--batch 256]
        --out DIR

Definitions, sampling and normalisation: benchmarks/analysis/multiorder.py (Deng et al., ICLR 2022; the curve
the A²MIM paper shows). The classifier (benchmarks/analysis/classifier.py): the exported backbone + a linear
head, given (--head, once per --weights) or fitted as a deterministic logistic-regression probe on the train
split's frozen pooled features (--probe-steps). Interactions are measured on --num-images images of --split
(taken round-robin over classes), scored by log p/(1-p) of the true class.

DIR/interactions.csv   order_ratio, m, then J of each checkpoint (one column per label)
DIR/interactions.png   the curves on one plot
DIR/interactions.json  per checkpoint: weights + sha256, head, accuracy on the analysed images, raw strengths, J
DIR/config.json        the arguments; DIR/load_report_<label>.json  the backbone load gate's report

Example (the toy world, A²MIM vs SimMIM-switch vs random init, 64 px ResNet-18):
    python -m benchmarks.analysis.interactions --weights runs/a2mim/backbone.safetensors \
        --weights runs/simmim/backbone.safetensors --weights runs/random_r18.safetensors --data data/toy --out runs/mi
(random_r18: python -m pretrain.export --random --preset resnet18 --set model.input_size=64 --out ...)
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.analysis.classifier import (ClassifierError, fit_probe, load_exported_backbone, load_head,
                                            pooled_features, score_fn)
from benchmarks.analysis.images import (AnalysisDataError, balanced_subset, class_names, imagenet_root,
                                        load_images, split_items)
from benchmarks.analysis.multiorder import BASELINES, NORMS, interaction_strengths
from benchmarks.analysis.outputs import new_figure, save_png, write_csv
from pretrain.data import IMAGENET_MEAN, IMAGENET_STD
from pretrain.fileio import atomic_write_json

log = logging.getLogger("benchmarks.analysis")
DEFAULT_ORDERS = ",".join(f"{r:g}" for r in np.round(np.linspace(0, 1, 21), 2))


def parse_orders(text: str) -> list[float]:
    try:
        orders = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--orders {text!r}: expected comma-separated ratios in [0, 1], e.g. 0,0.25,0.5,1") from None
    if not orders or any(not 0.0 <= r <= 1.0 for r in orders):
        raise ValueError(f"--orders {text!r}: expected comma-separated ratios in [0, 1]")
    return orders


def checkpoint_labels(weights: list[Path], metas: list[dict], given: str | None) -> list[str]:
    """--labels if given, else the sidecar's method ('a2mim', 'simmim', 'random'), made unique with the file stem."""
    if given:
        labels = [s.strip() for s in given.split(",")]
        if len(labels) != len(weights):
            raise ValueError(f"--labels has {len(labels)} names for {len(weights)} --weights")
    else:
        base = [str(m.get("method") or w.stem) for w, m in zip(weights, metas)]
        labels = [b if base.count(b) == 1 else f"{b} ({w.parent.name}/{w.stem})" for b, w in zip(base, weights)]
    if len(set(labels)) != len(labels):
        raise ValueError(f"checkpoint labels must be unique, got {labels}")
    return labels


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "ckpt"


def plot_curves(path: Path, orders: np.ndarray, curves: dict[str, np.ndarray], title: str, ylabel: str) -> Path:
    fig, ax = new_figure(figsize=(6.0, 4.0))
    for label, J in curves.items():
        ax.plot(orders, J, marker="o", markersize=3, label=label)
    ax.set_xlabel("order m / (n - 2)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, path)


def labelled_paths(root: Path, split: str, classes: list[str], n: int | None) -> tuple[list[str], list[int]]:
    """Up to n (path, label) of root/<split>, taken round-robin over classes."""
    paths, ys = split_items(root, split, classes)
    pick = balanced_subset(ys, n)
    return [paths[i] for i in pick], [ys[i] for i in pick]


def probe_features(backbone, paths: list[str], ys: list[int], size: int, mean, std, batch: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Pooled features of the probe's train images, decoded `batch` at a time -> (feats, labels, skipped)."""
    feats, labels, skipped = [], [], []
    for s in range(0, len(paths), batch):
        try:
            imgs, kept, sk = load_images(paths[s:s + batch], size, mean, std)
        except AnalysisDataError:           # a chunk with no readable image: skip it, count its files
            kept, sk = [], paths[s:s + batch]
        skipped += sk
        if kept:
            feats.append(pooled_features(backbone, imgs, batch, device))
            labels += [ys[s + i] for i in kept]
    if not feats:
        raise AnalysisDataError(f"none of the {len(paths)} probe (train) images could be read")
    return torch.cat(feats), torch.tensor(labels), skipped


def analyse_checkpoint(args, weights: Path, head_path: Path | None, num_classes: int, images: torch.Tensor,
                       labels: torch.Tensor, probe_set: tuple | None, report: Path, device: torch.device) -> dict:
    """probe_set: (paths, labels) of the train images the probe is fitted on (None with a head)."""
    t0 = time.perf_counter()
    backbone, meta = load_exported_backbone(weights, report_path=report)
    if meta.get("kind") == "vit" and meta.get("input_size") != images.shape[-1]:
        raise ClassifierError(f"{weights}: this ViT was exported for {meta.get('input_size')} px images, the "
                              f"analysed images are {images.shape[-1]} px (position embeddings are not resized)")
    feats = pooled_features(backbone, images, args.batch, device)
    if head_path is not None:
        head, head_info = load_head(head_path, feats.shape[1], num_classes), {"head": str(head_path)}
    else:
        tfeats, ty, tskipped = probe_features(backbone, *probe_set, images.shape[-1], meta.get("mean", IMAGENET_MEAN),
                                              meta.get("std", IMAGENET_STD), args.batch, device)
        head, acc = fit_probe(tfeats, ty, num_classes, args.probe_steps, args.probe_wd)
        head_info = {"probe_steps": args.probe_steps, "probe_wd": args.probe_wd, "probe_images": len(ty),
                     "probe_skipped_images": tskipped, "probe_train_top1": acc}
    with torch.no_grad():
        top1 = float((head(feats).argmax(1) == labels).float().mean() * 100)
    res = interaction_strengths(score_fn(backbone, head, device, args.amp), images.to(device), labels, args.grid,
                                args.orders, args.pairs, args.contexts, args.seed, args.batch, args.baseline,
                                args.norm, args.pair_radius)
    return {"result": res, "summary": {
        "weights": str(weights), "weights_sha256": meta.get("sha256"), "method": meta.get("method"),
        "preset": meta.get("preset"), **head_info, "top1_on_analysed_images": top1,
        "m": res.m.tolist(), "strength": res.strength.tolist(), "J": res.J.tolist(), "forwards": res.forwards,
        "seconds": round(time.perf_counter() - t0, 2)}}


def run(args) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.orders = parse_orders(args.orders) if isinstance(args.orders, str) else args.orders
    for name in ("num_images", "probe_images", "probe_steps", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    weights = [Path(w) for w in args.weights]
    heads = [Path(h) for h in args.head] if args.head else [None] * len(weights)
    if len(heads) != len(weights):
        raise ValueError(f"give one --head per --weights ({len(weights)}), got {len(heads)}")
    from pretrain.export_format import read_backbone
    metas = [read_backbone(w, verify=False)[1] for w in weights]
    labels_ = checkpoint_labels(weights, metas, args.labels)
    sizes = {m.get("input_size") for m in metas}
    size = args.input_size or (sizes.pop() if len(sizes) == 1 else None)
    if size is None:
        raise ValueError(f"checkpoints have different input sizes {sorted(map(str, sizes))}; analyse them separately")
    norms = {(tuple(m.get("mean", IMAGENET_MEAN)), tuple(m.get("std", IMAGENET_STD))) for m in metas}
    if len(norms) != 1:
        raise ValueError(f"checkpoints normalise images differently ({sorted(norms)}); analyse them separately")
    (mean, std), = norms
    root = imagenet_root(args.data)
    classes = class_names(root)
    paths, ys = labelled_paths(root, args.split, classes, args.num_images)
    images, kept, skipped = load_images(paths, size, mean, std)
    labels, used = torch.tensor([ys[i] for i in kept]), [paths[i] for i in kept]
    probe_set = None if args.head else labelled_paths(root, "train", classes, args.probe_images)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    atomic_write_json(out / "config.json", {**config, "data_root": str(root), "classes": classes, "images": used,
                                            "skipped_images": skipped})
    curves, summaries = {}, {}
    for label, w, h in zip(labels_, weights, heads):
        log.info("%s: %s (%d images, %d orders)", label, w, len(images), len(args.orders))
        r = analyse_checkpoint(args, w, h, len(classes), images, labels, probe_set,
                               out / f"load_report_{_slug(label)}.json", device)
        curves[label], summaries[label] = r["result"].J, r["summary"]
        if not np.isfinite(r["result"].J).any():
            log.warning("%s: no pairwise interaction at any order (the score does not depend jointly on any "
                        "sampled pair of patches); J is undefined and written as NaN", label)
    orders = np.asarray(args.orders, dtype=np.float64)
    ms = summaries[labels_[0]]["m"]
    rows = [[float(o), int(m), *[float(curves[lb][k]) for lb in labels_]] for k, (o, m) in enumerate(zip(orders, ms))]
    write_csv(out / "interactions.csv", ["order_ratio", "m", *labels_], rows)
    norm = "mean over orders = 1" if args.norm == "mean" else "sum over orders = 1"
    plot_curves(out / "interactions.png", orders, curves,
                f"multi-order interaction strength ({len(images)} images, {args.grid}x{args.grid} patches)",
                f"J(m)  ({norm})")
    atomic_write_json(out / "interactions.json", {"checkpoints": summaries, "orders": orders.tolist(),
                                                  "num_images": len(images), "skipped_images": len(skipped)})
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m benchmarks.analysis.interactions", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", action="append", required=True, help="exported backbone .safetensors (repeatable)")
    p.add_argument("--labels", help="comma-separated curve names, one per --weights (default: the sidecar's method)")
    p.add_argument("--data", required=True, help="ImageNet-style folder (train/<class>/*, val/<class>/*)")
    p.add_argument("--split", default="val", help="split whose images are analysed")
    p.add_argument("--num-images", type=int, default=32, help="images analysed, round-robin over classes")
    p.add_argument("--head", action="append", help="linear head .pt state dict, one per --weights")
    p.add_argument("--probe-steps", type=int, default=100, help="L-BFGS iterations of the probe (without --head)")
    p.add_argument("--probe-wd", type=float, default=1e-3, help="L2 weight of the probe on standardised features")
    p.add_argument("--probe-images", type=int, default=10000,
                   help="train images for the probe, round-robin over classes")
    p.add_argument("--grid", type=int, default=7, help="patch grid side: n = grid^2 players")
    p.add_argument("--orders", default=DEFAULT_ORDERS, help="comma-separated order ratios m/(n-2) in [0, 1]")
    p.add_argument("--pairs", type=int, default=8, help="patch pairs per image")
    p.add_argument("--pair-radius", type=int, default=1, help="pairs within this Chebyshev distance (0: any)")
    p.add_argument("--contexts", type=int, default=16, help="random contexts S per pair and order")
    p.add_argument("--baseline", choices=BASELINES, default="mean", help="fill of absent patches (see multiorder)")
    p.add_argument("--norm", choices=NORMS, default="mean", help="J normalisation over orders (Deng et al.: mean)")
    p.add_argument("--input-size", type=int, default=None, help="image size (default: the sidecar's input_size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=256, help="masked images per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pretrain.checkpoint import CheckpointError
    from pretrain.data import DataError
    from pretrain.export_format import ExportFormatError
    from transfer.weights import IncompleteLoadError
    try:
        out = run(args)
    except (AnalysisDataError, CheckpointError, ClassifierError, DataError, ExportFormatError, IncompleteLoadError,
            FileNotFoundError, ValueError, FloatingPointError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(out / "interactions.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
