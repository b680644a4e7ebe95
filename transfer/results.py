"""result.json: the one flat schema every evaluation writes and benchmarks/collate.py reads.

{ "schema": "a2mim-result/1", "task": "coco_det"|"ade20k_seg"|"in1k_finetune"|..., "framework": "mmdet"|...,
  "dataset": str, "backbone": preset name, "method": "a2mim"|"simmim"|"random"|..., "weights": path|null,
  "weights_sha256": str|null, "config": path, "run_dir": path, "git_commit": str|null, "time": iso8601,
  "metrics": {"bbox_mAP": .., "segm_mAP": .., "mIoU": .., "aAcc": .., "top1": .., ...},
  optional: "protocol": id|null (benchmarks/reference.yaml; 'toy' for the toy world), "seed": int, "tiny": bool }
Task names are benchmarks/reference.yaml's (coco_det, ade20k_seg, in1k_finetune, in1k_linear); 'pretrain' marks a
pre-training run (not tabled by the collator).
Metric values are floats in percent (0-100), as papers report them.
"""
from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path

from pretrain.fileio import atomic_write_json

SCHEMA = "a2mim-result/1"
REQUIRED = ("task", "framework", "dataset", "backbone", "method", "metrics")


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


DATASET_CARD = "dataset.json"     # optional identity file of a dataset root: {"name": ..., "toy": bool}


def result_dataset(root: str | Path | None, default: str) -> str:
    """The dataset a run really read: the `name` of <root>/dataset.json where the dataset says what it is (the toy
    world writes one into each of its roots), else `default` (the framework's real dataset, e.g. coco2017)."""
    if root is None:
        return default
    card = Path(root) / DATASET_CARD
    if not card.is_file():
        return default
    try:
        name = json.loads(card.read_text())["name"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{card}: expected a JSON object with a 'name' ({type(e).__name__}: {e})") from None
    if not isinstance(name, str) or not name:
        raise ValueError(f"{card}: 'name' must be a non-empty string, got {name!r}")
    return name


def pretrain_label(meta: dict) -> str:
    """What the weights went through, from their sidecar: 'scratch' (random init); 'pt<B>s' for a run trained for a
    CPU-seconds budget (schedule.budget_s: its step count is the machine's); else 'pt<epochs trained>' (the sidecar's
    own epoch count, not the configured one); 'pt?' when the sidecar does not say."""
    if meta.get("method") == "random":
        return "scratch"
    budget = ((meta.get("pretrain_config") or {}).get("schedule") or {}).get("budget_s")
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        return f"pt{budget:g}s"
    epoch = meta.get("epoch")
    if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
        return f"pt{int(epoch)}" if float(epoch).is_integer() else f"pt{epoch:g}"
    return "pt?"


def pretrain_seed(meta: dict) -> int | None:
    """The seed of the weights' own run (pre-training / supervised: run.seed; random init: the init seed)."""
    cfg = meta.get("pretrain_config") or {}
    seed = (cfg.get("run") or {}).get("seed", cfg.get("seed"))
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def identity(task: str, dataset: str, framework: str, recipe: str, backbone: str, method: str,
             pretrain: str | None, markers=()) -> dict:
    """The run identity every writer records and the collator groups on (one function, every writer).

    protocol = <recipe>[@<pretrain>][+<marker>...]: markers name whatever changed what the run measures (tiny,
    overrides, cfg-options, ...), so a marked run is never set beside a published number of the unmarked recipe.
    protocol_key = <task>/<dataset>/<framework>/<backbone>/<protocol> (benchmarks/reference.yaml uses the same)."""
    markers = sorted({str(m) for m in markers if m})
    protocol = recipe + (f"@{pretrain}" if pretrain else "") + "".join(f"+{m}" for m in markers)
    return {"task": task, "dataset": dataset, "framework": framework, "recipe": recipe, "pretrain": pretrain,
            "markers": markers, "backbone": backbone, "method": method, "protocol": protocol,
            "protocol_key": f"{task}/{dataset}/{framework}/{backbone}/{protocol}"}


def write_result(run_dir: str | Path, **fields) -> Path:
    missing = [k for k in REQUIRED if k not in fields]
    if missing:
        raise ValueError(f"result.json needs fields {missing}")
    bad = {k: v for k, v in fields["metrics"].items() if not isinstance(v, (int, float))}
    if bad:
        raise ValueError(f"result.json metrics must be numbers, got {bad}")
    if fields.get("weights"):
        from pretrain.fileio import sha256_file
        fields.setdefault("weights_sha256", sha256_file(fields["weights"]))
    rec = {"schema": SCHEMA, "weights": None, "weights_sha256": None, "config": None,
           "run_dir": str(Path(run_dir).resolve()), "git_commit": git_commit(),
           "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **fields}
    rec["metrics"] = {k: float(v) for k, v in rec["metrics"].items()}
    return atomic_write_json(Path(run_dir) / "result.json", rec)


def read_result(path: str | Path) -> dict:
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if rec.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {rec.get('schema')!r}, expected {SCHEMA!r}")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise ValueError(f"{path}: missing fields {missing}")
    return rec
