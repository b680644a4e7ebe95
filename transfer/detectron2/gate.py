"""Load a converted `.pkl` into a BUILT detectron2 model with DetectionCheckpointer, then apply the suite's gate.

DetectionCheckpointer (installed code, checkpoint/detection_checkpoint.py + c2_model_loading.py) reads a `.pkl`
with `matching_heuristics: True` by suffix-matching every model key against the file's keys (longest match
wins), skips shape mismatches with only a warning, and loads with strict=False. So after it ran we check, tensor
by tensor, that each file tensor arrived where the protocol says it must:

    R50-C4   res5.*           -> roi_heads.res5.*        (the RoI head's res5), everything else -> backbone.*
    R50-FPN  *                -> backbone.bottom_up.*
    ViT      backbone.net.vit.* (full names)              -> itself
A tensor counts as loaded only if DetectionCheckpointer did not report the key missing AND the model now holds
exactly the file's values. The result goes through transfer.weights.load_with_report over the backbone (+ res5
head) scope: nothing missing (except the extra res5 norm, which is new, and BN step counters), nothing unused
(except BN step counters), no shape mismatch; load_report.json is written either way, IncompleteLoadError raised
on failure.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid
from detectron2.modeling.roi_heads import Res5ROIHeads

from transfer.detectron2.convert import VIT_PREFIX, read_pkl
from transfer.weights import COUNTER_KEYS, LoadReport, load_with_report

EXTRA_RES5_NORM = "roi_heads.res5.norm.*"   # Res5ROIHeadsExtraNorm's norm after res5: not pre-trained


class _RecordingCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that keeps the incompatible-keys record fvcore only logs."""
    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def expected_targets(model: nn.Module, keys) -> tuple[dict[str, str], list[str], tuple[str, ...]]:
    """-> ({file key: model key}, gate prefixes, allow_missing patterns) for this model's architecture."""
    c4 = isinstance(getattr(model, "roi_heads", None), Res5ROIHeads)
    bb = model.backbone
    if isinstance(bb, SimpleFeaturePyramid):
        return {k: k for k in keys}, [VIT_PREFIX], COUNTER_KEYS
    if isinstance(bb, FPN):
        return {k: f"backbone.bottom_up.{k}" for k in keys}, ["backbone.bottom_up."], COUNTER_KEYS
    if c4:
        plan = {k: (f"roi_heads.{k}" if k.startswith("res5.") else f"backbone.{k}") for k in keys}
        return plan, ["backbone.", "roi_heads.res5."], COUNTER_KEYS + (EXTRA_RES5_NORM,)
    return {k: f"backbone.{k}" for k in keys}, ["backbone."], COUNTER_KEYS


def load_pkl_with_gate(model: nn.Module, pkl: str | Path, report_path: str | Path | None = None) -> LoadReport:
    """DetectionCheckpointer.load(pkl) into `model` (or its DDP .module), then the load gate (see module doc)."""
    model = getattr(model, "module", model)
    src = read_pkl(pkl)["model"]              # numpy-only unpickling, before detectron2 unpickles the file
    ckpt = _RecordingCheckpointer(model)
    ckpt.load(str(pkl))
    inc = ckpt.incompatible
    d2_missing = set(inc.missing_keys) if inc is not None else set()
    plan, prefixes, allow_missing = expected_targets(model, src.keys())
    state = model.state_dict()
    arrived, notes = {}, []
    for key, target in plan.items():
        value = torch.as_tensor(src[key])
        have = state.get(target)
        if have is None or tuple(have.shape) != tuple(value.shape):
            arrived[target] = value               # the gate reports it as unexpected / shape-mismatched
        elif target not in d2_missing and torch.equal(have.detach().cpu(), value.to(have.dtype)):
            arrived[target] = value
        else:
            notes.append(f"{key}: DetectionCheckpointer did not put it into {target}")
    if inc is not None:
        notes.append(f"DetectionCheckpointer: {len(inc.missing_keys)} model keys without weights (whole model), "
                     f"{len(inc.unexpected_keys)} unused file keys, {len(inc.incorrect_shapes)} shape skips")
    # a BN step counter may find no target (FrozenBatchNorm2d has none, with MODEL.BACKBONE.FREEZE_AT > 0)
    return load_with_report(model, arrived, allow_missing=allow_missing, allow_unexpected=COUNTER_KEYS,
                            report_path=report_path, prefixes=prefixes, source=str(pkl), notes=notes)
