"""Backbone weights into downstream models, with a load report and a hard gate.

Sources (all end as a timm-named backbone state dict):
  * exported backbones (pretrain.export_format: `<stem>.safetensors` + `<stem>.json`), timm key names
    (ResNet = torchvision names `conv1`, `bn1`, `layer1.0.conv1` ...; ViT = timm Beit names);
  * official A²MIM / openmixup checkpoints (`.pth`, `state_dict` with keys under `backbone.`): ResNet keys
    equal torchvision's; the ViT (openmixup `SimMIMViT`, mmcls style) is renamed to timm Beit names.
Targets: the backbone contract (transfer.backbones.FeatureBackbone, loaded by transfer.backbones.load_exported:
the timm names under `body.`), or a framework's NATIVE ResNet where a stock config needs it: an OpenMMLab model
whose `backbone` is mmdet/mmseg `ResNet` (plus, for Mask R-CNN C4, the RoI shared head
`roi_head.shared_head.layer4` = res5; openmmlab_plan here), detectron2's ResNet (transfer/detectron2/gate.py).

`load_with_report` copies tensors only after the whole check passed: every target parameter/buffer must be
matched (or allow-listed as missing), every source tensor must land somewhere (or be allow-listed as
unexpected) and shapes must agree; otherwise `IncompleteLoadError` with a table, and load_report.json is
written either way. Silent half-loads are the usual reason MIM transfer numbers come out low.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
import torch.nn as nn

from pretrain.fileio import atomic_write_json, sha256_file

# tensors that exist only for pre-training: dropped on reading, listed in the report
PRETRAIN_ONLY = ("mask_token", "mask_gamma")
# BN step counters carry no learned state (momentum is set); an export may omit them
COUNTER_KEYS = ("*.num_batches_tracked",)


class IncompleteLoadError(RuntimeError):
    """Backbone weights did not load completely (missing / unexpected / shape-mismatched tensors)."""


class WeightsFormatError(ValueError):
    """A weights file that is not an exported backbone nor an official A²MIM checkpoint."""


@dataclass
class LoadReport:
    source: str = ""
    prefixes: list[str] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)            # target tensors with no source (gate: fail)
    unexpected: list[str] = field(default_factory=list)         # source tensors with no target (gate: fail)
    shape_mismatched: list[dict] = field(default_factory=list)  # {key, target, source} (gate: fail)
    non_finite: list[dict] = field(default_factory=list)        # {key, nan, inf}: source tensors (gate: fail)
    allowed_missing: list[str] = field(default_factory=list)
    allowed_unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)               # renames, resizes, dropped pre-training keys

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatched or self.non_finite)

    @property
    def counts(self) -> dict[str, int]:
        return {"matched": len(self.matched), "missing": len(self.missing), "unexpected": len(self.unexpected),
                "shape_mismatched": len(self.shape_mismatched), "non_finite": len(self.non_finite),
                "allowed_missing": len(self.allowed_missing),
                "allowed_unexpected": len(self.allowed_unexpected)}

    def to_dict(self) -> dict:
        return {"ok": self.ok, "counts": self.counts, **asdict(self)}

    def table(self, limit: int = 25) -> str:
        rows = [("missing", k, "") for k in self.missing] + [("unexpected", k, "") for k in self.unexpected]
        rows += [("shape", d["key"], f"target {d['target']} vs source {d['source']}") for d in self.shape_mismatched]
        rows += [("non-finite", d["key"], f"{d['nan']} NaN, {d['inf']} inf values") for d in self.non_finite]
        width = max([len(r[1]) for r in rows] + [10])
        lines = [f"  {kind:<10}  {key:<{width}}  {extra}".rstrip() for kind, key, extra in rows[:limit]]
        if len(rows) > limit:
            lines.append(f"  ... and {len(rows) - limit} more (see load_report.json)")
        return "\n".join(lines)


def _match_any(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_with_report(model_or_module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                     allow_missing: Iterable[str] = (), allow_unexpected: Iterable[str] = (),
                     report_path: str | Path | None = None, prefixes: Iterable[str] | None = None,
                     source: str = "", notes: Iterable[str] = ()) -> LoadReport:
    """Load `state_dict` into `model_or_module` (names as in its state_dict()) only if it covers the target.

    prefixes: restrict the target to the module's tensors under these name prefixes (e.g. 'backbone.');
    allow_missing / allow_unexpected: fnmatch patterns that may stay unloaded / unused (reported as such).
    Writes `report_path` (load_report.json) before raising IncompleteLoadError.
    """
    allow_missing, allow_unexpected = tuple(allow_missing), tuple(allow_unexpected)
    prefixes = list(prefixes) if prefixes is not None else []
    target = {k: v for k, v in model_or_module.state_dict(keep_vars=True).items()
              if not prefixes or any(k.startswith(p) for p in prefixes)}
    if not target:
        raise IncompleteLoadError(f"{type(model_or_module).__name__} has no tensors under prefixes {prefixes}")
    rep = LoadReport(source=str(source), prefixes=prefixes, notes=list(notes))
    for key, dst in target.items():
        src = state_dict.get(key)
        if src is None:
            (rep.allowed_missing if _match_any(key, allow_missing) else rep.missing).append(key)
        elif tuple(src.shape) != tuple(dst.shape):
            rep.shape_mismatched.append({"key": key, "target": list(dst.shape), "source": list(src.shape)})
        else:
            rep.matched.append(key)
            if src.is_floating_point() and not bool(torch.isfinite(src).all()):
                rep.non_finite.append({"key": key, "nan": int(torch.isnan(src).sum()), "inf": int(torch.isinf(src).sum())})
    for key in state_dict:
        if key not in target:
            (rep.allowed_unexpected if _match_any(key, allow_unexpected) else rep.unexpected).append(key)
    if report_path is not None:
        atomic_write_json(report_path, rep.to_dict())
    if not rep.ok:
        c = rep.counts
        raise IncompleteLoadError(
            f"backbone weights from {source or 'state dict'} failed the load gate: {c['missing']} missing, "
            f"{c['unexpected']} unexpected, {c['shape_mismatched']} shape-mismatched, {c['non_finite']} with NaN/inf "
            f"values of {len(target)} target tensors (prefixes {prefixes or 'all'}); nothing was loaded\n{rep.table()}"
            + (f"\nfull report: {report_path}" if report_path else ""))
    with torch.no_grad():
        for key in rep.matched:
            target[key].copy_(state_dict[key].to(dtype=target[key].dtype))
    return rep


# ----------------------------------------------------------------------------- reading sources
def _openmixup_vit_to_timm(key: str) -> str:
    """openmixup/mmcls VisionTransformer name -> timm Beit name (rules checked against openmixup
    `vision_transformer.py` + `layers/attention.py` MultiheadAttentionWithRPE + mmcv FFN)."""
    rules = ((r"^patch_embed\.projection\.", "patch_embed.proj."),
             (r"^layers\.(\d+)\.ln1\.", r"blocks.\1.norm1."),
             (r"^layers\.(\d+)\.ln2\.", r"blocks.\1.norm2."),
             (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
             (r"^layers\.(\d+)\.ffn\.layers\.1\.", r"blocks.\1.mlp.fc2."),
             (r"^layers\.(\d+)\.gamma_?([12])$", r"blocks.\1.gamma_\2"),
             (r"^layers\.(\d+)\.attn\.", r"blocks.\1.attn."),
             (r"^ln1\.", "norm."))
    for pat, rep in rules:
        new, n = re.subn(pat, rep, key)
        if n:
            return new
    return key


def _from_openmixup(ckpt: Mapping, path: Path) -> tuple[dict[str, torch.Tensor], dict, list[str]]:
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping):
        raise WeightsFormatError(f"{path}: expected a dict with 'state_dict' (openmixup checkpoint)")
    keys = [k for k in sd if k.startswith("backbone.")]
    if keys:
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    elif not any(k.startswith(("conv1.", "layer1.", "layers.0.", "patch_embed.")) for k in sd):
        raise WeightsFormatError(f"{path}: no keys under 'backbone.' in state_dict (openmixup format expected); "
                                 f"first keys: {list(sd)[:5]}")
    notes, out = [], {}
    kind = "vit" if any(k.startswith("layers.") for k in sd) else "cnn"
    for k, v in sd.items():
        if k.split(".")[-1] in PRETRAIN_ONLY or k.endswith("relative_position_index"):
            notes.append(f"dropped {k} (pre-training only or recomputed buffer)")
            continue
        new = _openmixup_vit_to_timm(k) if kind == "vit" else k
        out[new] = v
    if kind == "vit":
        notes.append("renamed openmixup ViT keys to timm Beit names")
    return out, {"kind": kind, "format": "openmixup"}, notes


def read_backbone_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, list[str]]:
    """-> (timm-named backbone state dict, meta, notes). `.safetensors` = exported; `.pth` = official A²MIM."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    if path.suffix == ".safetensors":
        from pretrain.export_format import read_backbone
        sd, meta = read_backbone(path)
        check_sidecar(dict(sd), meta, path)
        return dict(sd), meta, []
    if path.suffix in (".pth", ".pt", ".ckpt"):
        try:
            from pretrain.checkpoint import load_checkpoint
        except ImportError as e:
            raise RuntimeError(f"{path}: reading .pth checkpoints needs pretrain.checkpoint.load_checkpoint "
                               f"(safe weights_only loader), which is not available ({e})") from e
        sd, meta, notes = _from_openmixup(load_checkpoint(path), path)
        return sd, {**meta, "sha256": sha256_file(path)}, notes
    raise WeightsFormatError(f"{path}: unknown weights format '{path.suffix}'; expected an exported "
                             f".safetensors (python -m pretrain.export) or an official A²MIM .pth")


def check_sidecar(sd: Mapping[str, torch.Tensor], meta: dict, path: Path) -> None:
    """The sidecar describes these tensors, before anything is labelled with it: its preset names its timm model, and
    that model (built on the meta device: no memory, no init) has exactly these keys and shapes. WeightsFormatError
    otherwise (an R18 export whose sidecar says resnet50 would be reported as a ResNet-50)."""
    from pretrain.models.presets import PRESETS
    name, preset = meta.get("timm_name"), meta.get("preset")
    if not name:
        return
    hand = ((meta.get("pretrain_config") or {}).get("model") or {}).get("timm_name")
    if preset in PRESETS and not hand and PRESETS[preset].timm_name != name:
        raise WeightsFormatError(f"{path}: its sidecar says preset {preset!r} (timm {PRESETS[preset].timm_name}) but "
                                 f"timm_name {name!r}; the sidecar contradicts itself")
    from transfer.timm_body import build_timm_body
    try:
        with torch.device("meta"):
            body = build_timm_body(name, meta.get("timm_kwargs") or {}, meta.get("kind", "cnn"), meta.get("input_size"))
    except Exception as e:      # noqa: BLE001  (timm: unknown model / bad kwargs)
        raise WeightsFormatError(f"{path}: its sidecar names timm model {name!r} with {meta.get('timm_kwargs')}, "
                                 f"which timm cannot build ({type(e).__name__}: {e})") from None
    own = {k: tuple(v.shape) for k, v in body.state_dict().items() if not _match_any(k, COUNTER_KEYS)}
    got = {k: tuple(v.shape) for k, v in sd.items() if not _match_any(k, COUNTER_KEYS)}
    missing, extra = [k for k in own if k not in got], [k for k in got if k not in own]
    shapes = [f"{k} {got[k]} vs {own[k]}" for k in own if k in got and got[k] != own[k]]
    if missing or extra or shapes:
        what = "; ".join(f"{n} {kind} e.g. {items[:3]}" for kind, items, n in (
            ("missing", missing, len(missing)), ("unexpected", extra, len(extra)), ("shape-mismatched", shapes, len(shapes)))
            if items)
        raise WeightsFormatError(f"{path}: the tensors do not fit the architecture its sidecar names ({name}, preset "
                                 f"{preset}): {what}; the sidecar does not describe these weights")


# ----------------------------------------------------------------------------- converting to a target model
def openmmlab_plan(model: nn.Module, sd: Mapping[str, torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], list[str], tuple[str, ...], list[str]]:
    """Map a torchvision/timm-named ResNet state dict onto an OpenMMLab detector/segmentor with a native ResNet.

    Returns (state dict with the model's names, target prefixes, allow_unexpected patterns, notes).
    """
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise TypeError(f"{type(model).__name__} has no `backbone` to load into")
    notes: list[str] = []
    # Mask R-CNN C4: the ResNet stage after the backbone (res5 = layer4) is the RoI shared head; it is part of
    # the target whatever the source holds, so a file without it fails the gate instead of leaving res5 random
    own = {k.split(".")[0] for k in backbone.state_dict()}
    shared = getattr(getattr(model, "roi_head", None), "shared_head", None)
    moved = [n for n, _ in shared.named_children() if re.fullmatch(r"layer\d+", n) and n not in own] \
        if shared is not None else []
    out = {(f"roi_head.shared_head.{k}" if k.split(".")[0] in moved else f"backbone.{k}"): v for k, v in sd.items()}
    if moved:
        notes.append(f"{', '.join(moved)} -> roi_head.shared_head (C4 RoI head)")
    return out, ["backbone."] + [f"roi_head.shared_head.{m}." for m in moved], (), notes


def load_backbone_into(model: nn.Module, weights: str | Path, report_path: str | Path | None = None,
                       allow_missing: Iterable[str] = COUNTER_KEYS, loaded: tuple | None = None) -> LoadReport:
    """Read `weights` (exported or official; or pass `loaded` = read_backbone_weights(weights) to avoid a second
    read), convert for `model`, load through the gate."""
    sd, meta, notes = loaded if loaded is not None else read_backbone_weights(weights)
    mapped, prefixes, allow_unexpected, more = openmmlab_plan(model, sd)
    return load_with_report(model, mapped, allow_missing=allow_missing, allow_unexpected=allow_unexpected,
                            report_path=report_path, prefixes=prefixes, source=str(weights), notes=notes + more)
