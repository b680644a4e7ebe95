"""What a suite step was run with, so `run_all` never reports a step "done already" that was made from other inputs.

When a step starts, run_all records its identity in <step run_dir>/step-<id>.json: the command (the step's argv,
which holds every override of the suite) and the sha256 of every weights file the command reads (an upstream
export: a re-trained pre-training changes its downstream steps' inputs without changing their commands). A done
step whose identity changed is refused (reported, not re-run) unless run_all is told --force-new, which re-runs it
with `--force-new` passed to its entry point (the old run folder is moved aside there, nothing is deleted).
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.suite import Step
from pretrain.fileio import atomic_write_json
from pretrain.fingerprint import weights_digest

WEIGHT_SUFFIXES = (".safetensors", ".pth")
# entry points that take --force-new (the others overwrite their outputs atomically anyway)
FORCE_NEW = ("pretrain.train", "transfer.classification.train", "transfer.mmdet.train", "transfer.mmseg.train",
             "transfer.detectron2.train", "transfer.frozen.train")


def record_path(step: Step) -> Path:
    return step.run_dir / f"step-{step.id.replace('/', '_')}.json"


def identity(step: Step) -> dict:
    """{argv, weights: {path: sha256}} of the files named in the command (as an argument or as key=path)."""
    paths = []
    for a in step.argv:
        cand = a.split("=", 1)[1] if "=" in a and not a.startswith("-") else a
        if cand.endswith(WEIGHT_SUFFIXES):
            paths.append(cand)
    return {"argv": list(step.argv), "weights": {p: weights_digest(p) for p in paths if Path(p).is_file()}}


def record(step: Step) -> None:
    atomic_write_json(record_path(step), identity(step))


def changes(step: Step) -> list[str]:
    """What differs between the recorded identity and now ([] when nothing, or when there is no record yet: the
    record is then written, for a step done by an older run_all)."""
    path = record_path(step)
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        record(step)
        return []
    now = identity(step)
    out = []
    if old.get("argv") != now["argv"]:
        a, b = old.get("argv") or [], now["argv"]
        out.append(f"command changed: now {[x for x in b if x not in a][:4]}, was {[x for x in a if x not in b][:4]}")
    for p in sorted(set(old.get("weights", {})) | set(now["weights"])):
        if old.get("weights", {}).get(p) != now["weights"].get(p):
            out.append(f"weights {Path(p).name} changed")
    return out


def with_force_new(step: Step) -> Step:
    """The step's command with --force-new right after the module (before any trailing override list)."""
    if step.argv and step.argv[0] in FORCE_NEW and "--force-new" not in step.argv:
        return Step(step.id, step.kind, [step.argv[0], "--force-new", *step.argv[1:]], step.run_dir, step.done,
                    step.deps, step.meta)
    return step
