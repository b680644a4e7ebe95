"""result.json: the one flat record every run writes (pre-training and every evaluation) and benchmarks/collate.py
reads. The record format lives here, in the lowest layer, so that pre-training writes it without knowing transfer/;
what a transfer run's identity is (task, dataset, framework, recipe, pre-training, markers) is transfer/results.py's.

{ "schema": "a2mim-result/1", "task": "coco_det"|"ade20k_seg"|"in1k_finetune"|...|"pretrain", "framework": str,
  "dataset": str, "backbone": str, "method": str, "metrics": {name: float, in percent for evaluations}, "weights":
  path|null, "weights_sha256": str|null, "config": path, "run_dir": path, "git_commit": str|null, "time": iso8601,
  ... the run identity's fields (transfer.results.identity) and anything else the writer adds }
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
