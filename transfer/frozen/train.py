"""python -m transfer.frozen.train CONFIG --weights W.safetensors --data-root ROOT --work-dir D [key=value ...]:
a frozen-feature protocol (run.protocol: linear | knn) of an exported backbone on an ImageNet-style folder.

The backbone (transfer.backbones.FeatureBackbone, from the export's sidecar, loaded through the gate ->
load_report.json) computes pooled features of every train and val image once (cached under run.cache_dir, shared
by both protocols and every seed); the protocol reads its levels (model.levels), concatenated. Writes
config.yaml, load_report.json, metrics.jsonl, result.json (task in1k_linear | in1k_knn; top1/top5 in percent) and
done. A complete run folder is left as it is.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("transfer.frozen")
TASKS = {"linear": "in1k_linear", "knn": "in1k_knn"}
CONFIG_DIR = Path(__file__).parent / "configs"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m transfer.frozen.train", description=__doc__.split("\n\n")[0],
                                epilog="example: python -m transfer.frozen.train transfer/frozen/configs/toy_linear.yaml "
                                       "--weights w.safetensors --data-root runs/toy/data/imagenet --work-dir runs/lin")
    p.add_argument("config", help="YAML (a path, or a name in transfer/frozen/configs/)")
    p.add_argument("--weights", required=True, help="exported backbone .safetensors")
    p.add_argument("--data-root", help="ImageNet folder with train/ and val/ class folders (sets data.root)")
    p.add_argument("--work-dir", "--out", dest="work_dir", help="run folder (sets run.out_dir)")
    p.add_argument("--cache-dir", help="feature cache folder shared by protocols and seeds (sets run.cache_dir)")
    p.add_argument("--force-new", action="store_true",
                   help="the run folder holds a run made from other inputs (or any run): move it aside, start fresh")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. probe.epochs=30 run.seed=1")
    return p


def _device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg, markers=(), force_new: bool = False) -> Path:
    """The probe in its run folder, under the folder's lock (pretrain/runlock.py) and inputs record
    (pretrain/fingerprint.py)."""
    from omegaconf import OmegaConf

    from pretrain.config import to_yaml
    from pretrain.fingerprint import check_inputs, record
    from pretrain.runlock import RunLock

    out = Path(cfg.run.out_dir)
    with RunLock(out, what="transfer.frozen.train"):
        conf = OmegaConf.to_container(OmegaConf.create(to_yaml(cfg)))
        check_inputs(out, record(conf, cfg.model.weights, cfg.data.root),
                     complete=(out / "done").is_file() and (out / "result.json").is_file(), force_new=force_new)
        return _run(cfg, markers)


def _run(cfg, markers=()) -> Path:
    import torch

    from pretrain.config import to_yaml
    from pretrain.fileio import atomic_write_json, atomic_write_text
    from transfer.backbones import from_sidecar, load_exported
    from transfer.frozen.features import features
    from transfer.frozen.probes import knn, linear_probe
    from transfer.results import identity, pretrain_label, pretrain_seed, result_dataset, write_result
    from transfer.weights import read_backbone_weights

    out = Path(cfg.run.out_dir)
    if (out / "done").is_file() and (out / "result.json").is_file():
        log.info("%s is complete: nothing to do", out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", to_yaml(cfg))
    t0 = time.time()
    loaded = read_backbone_weights(cfg.model.weights)
    meta = loaded[1]
    if meta.get("timm_name") is None:
        raise ValueError(f"{cfg.model.weights}: the frozen protocols need an export with a sidecar "
                         f"(python -m pretrain.export)")
    torch.manual_seed(0)
    backbone = from_sidecar(meta, out_indices=None, frozen=True)              # every level
    backbone.meta = meta
    report = load_exported(backbone, loaded, report_path=out / "load_report.json", source=cfg.model.weights)
    device = _device(cfg.run.device)
    feats, info = {}, {}
    for split in (cfg.data.train_split, cfg.data.val_split):
        feats[split], labels, info[split] = features(cfg, backbone, split, device)
        feats[split] = (feats[split], labels)
    n_levels = len(backbone.out_indices)
    levels = [lv if lv >= 0 else n_levels + lv for lv in cfg.model.levels]
    bad = [lv for lv in levels if not 0 <= lv < n_levels]
    if bad:
        from pretrain.config import ConfigError
        raise ConfigError(f"config key 'model.levels' = {cfg.model.levels}; {meta['timm_name']} has levels "
                          f"0..{n_levels - 1} ({[d['module'] for d in backbone.feature_info]})")
    (tr, ytr), (va, yva) = feats[cfg.data.train_split], feats[cfg.data.val_split]
    x_tr, x_va = torch.cat([tr[lv] for lv in levels], 1), torch.cat([va[lv] for lv in levels], 1)
    num_classes = info[cfg.data.train_split]["classes"]
    t1 = time.time()
    if cfg.run.protocol == "linear":
        metrics = linear_probe(x_tr, ytr, x_va, yva, num_classes, cfg.probe, cfg.run.seed)
    else:
        metrics = knn(x_tr, ytr, x_va, yva, num_classes, cfg.knn.k, cfg.knn.temperature)
    timing = {"features_s": round(t1 - t0, 2), "protocol_s": round(time.time() - t1, 2)}
    row = {"step": 0, **metrics, **timing, "dim": x_tr.shape[1], "train_images": len(x_tr), "val_images": len(x_va),
           "cache_hit": all(i["cache_hit"] for i in info.values())}
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    dataset = result_dataset(cfg.data.root, "imagenet1k")
    recipe = cfg.run.recipe or "frozen"
    ident = identity(task=TASKS[cfg.run.protocol], dataset=dataset, framework="a2mim-suite", recipe=recipe,
                     backbone=meta.get("preset") or meta["timm_name"], method=meta.get("method") or "unknown",
                     pretrain=pretrain_label(meta), markers=markers)
    write_result(out, **ident, metrics={k: v for k, v in metrics.items() if k in ("top1", "top5", "train_top1")},
                 weights=cfg.model.weights, config=str(out / "config.yaml"), seed=cfg.run.seed,
                 pretrain_seed=pretrain_seed(meta), num_classes=num_classes,
                 data_root=str(cfg.data.root), load_report=report.counts)
    atomic_write_json(out / "done", {"protocol": cfg.run.protocol, **timing})
    log.info("%s %s: top1 %.2f (%s)", cfg.run.protocol, out, metrics["top1"], timing)
    return out


def resolve_config(name: str) -> Path:
    """A path, or a name in transfer/frozen/configs/ (the classification entry point's rule)."""
    from transfer.classification.train import resolve_config as resolve
    return resolve(name, CONFIG_DIR)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pretrain.config import ConfigError
    from pretrain.data import DataError
    from pretrain.export_format import ExportFormatError
    from pretrain.fingerprint import InputsChangedError
    from pretrain.runlock import RunLockError
    from transfer.frozen.config import load_config
    from transfer.weights import IncompleteLoadError, WeightsFormatError

    config = resolve_config(args.config)
    over = [f"model.weights={args.weights}"]
    if args.work_dir:
        over.append(f"run.out_dir={args.work_dir}")
    if args.data_root:
        over.append(f"data.root={args.data_root}")
    if args.cache_dir:
        over.append(f"run.cache_dir={args.cache_dir}")
    try:
        cfg = load_config(config, [*over, *args.overrides])
        if cfg.run.recipe is None:
            cfg.run.recipe = config.stem
        from transfer.results import override_markers
        run(cfg, markers=override_markers(args.overrides), force_new=args.force_new)
    except KeyboardInterrupt:
        print("interrupted: a frozen-feature probe keeps no checkpoints (its feature cache is kept); run it again",
              file=sys.stderr)
        return 130
    except (ConfigError, DataError, IncompleteLoadError, WeightsFormatError, ExportFormatError, FileNotFoundError,
            ValueError, RunLockError, InputsChangedError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
