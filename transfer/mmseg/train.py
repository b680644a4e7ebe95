"""python -m transfer.mmseg.train CONFIG --weights EXPORTED [--work-dir D] [--data-root R] [--cfg-options ...]
[--launcher none|pytorch|slurm] [--tiny [SIZE]] [--seed N]: semantic segmentation on ADE20K (or the toy world) ->
result.json with task 'ade20k_seg' (mIoU, aAcc in %), dataset and protocol from the config's `benchmark`.

A config may name a class file instead of listing classes (`classes_json = 'classes.json'`, as the toy world
writes it next to ADEChallengeData2016): it is looked up in the dataset root and the folder above, and gives
every dataset its metainfo (classes, palette) and reduce_zero_label; the heads' num_classes must agree.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from transfer.datacheck import config_datasets
from transfer.openmmlab_common import ConfigError, DataLayoutError, Framework, cli, run


def apply_classes_json(cfg) -> None:
    """cfg.classes_json (a file name) -> metainfo + reduce_zero_label of every dataset and its LoadAnnotations."""
    name = cfg.get("classes_json")
    if not name:
        return
    roots = {Path(ds.get("data_root") or ".") for _, ds in config_datasets(cfg)}
    cands = [c for r in sorted(roots) for c in (r / name, r.parent / name)]
    path = next((c for c in cands if c.is_file()), None)
    if path is None:
        raise DataLayoutError(f"classes_json '{name}' not found; looked for " + ", ".join(map(str, cands)))
    try:
        spec = json.loads(path.read_text())
        classes, palette = list(spec["classes"]), spec.get("palette")
        reduce_zero = bool(spec.get("reduce_zero_label", False))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: expected a JSON object with 'classes' (list), optional 'palette' and "
                          f"'reduce_zero_label' ({type(e).__name__}: {e})") from e
    if palette is not None and len(palette) != len(classes):
        raise ConfigError(f"{path}: {len(palette)} palette colours for {len(classes)} classes")
    for head in ("decode_head", "auxiliary_head"):
        h = cfg.model.get(head)
        for one in (h if isinstance(h, (list, tuple)) else [h] if h else []):
            if one.get("num_classes") != len(classes):
                raise ConfigError(f"model.{head}.num_classes is {one.get('num_classes')}, but {path} lists "
                                  f"{len(classes)} classes")
    meta = dict(classes=classes, **({"palette": palette} if palette is not None else {}))
    for _, ds in config_datasets(cfg):
        ds["metainfo"] = meta
        ds["reduce_zero_label"] = reduce_zero
        for t in ds.get("pipeline") or []:
            if t.get("type") == "LoadAnnotations":
                t["reduce_zero_label"] = reduce_zero


MMSEG = Framework(
    name="mmseg", task="ade20k_seg", dataset="ade20k",
    layout="the ADEChallengeData2016 layout: images/training/*.jpg, images/validation/*.jpg, "
           "annotations/training/*.png, annotations/validation/*.png (uint8 labels, 0 = ignore)",
    metrics={"mIoU": ("mIoU", 1.0), "aAcc": ("aAcc", 1.0)},     # IoUMetric already reports percent
    root_subdir="ADEChallengeData2016", configure=apply_classes_json)


def main(argv=None) -> dict:
    return run(MMSEG, argv)


if __name__ == "__main__":
    sys.exit(cli(MMSEG, sys.argv[1:]))
