"""What a run folder was made from, so a folder is never silently reused for different inputs.

Every entry point records its inputs in <run>/inputs.json when it starts a fresh folder:
  config   the resolved settings (flat dotted keys), minus the keys that do not change what is computed
           (IGNORED: output folder, workers, logging / checkpoint cadence)
  weights  sha256 of the input weights (transfer runs: the export's sidecar sha256, else the file's)
  data     data_stamp(root): the dataset's file names + the annotation files' size and mtime
Starting again in a folder that holds a run (checkpoints, result.json or `done`) compares the current inputs with
the record: changed weights or data always refuse, changed settings refuse once the run is complete (a resumable
run may continue with changed settings, with a warning naming them - the loop's old rule). `--force-new` moves
the old folder aside (<run>.replaced-<time>, nothing is deleted) and starts fresh.

data_stamp reads directory listings only (no per-file stat of the images, which costs minutes for ImageNet on a
shared filesystem): an image edited in place is not a changed input here; the pre-flight (whose cache keys on
every file's size and mtime) and `python -m pretrain.verify_data` catch damaged files.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from pretrain.fileio import atomic_write_json, sha256_file

INPUTS = "inputs.json"
IGNORED = ("run.out_dir", "data.root", "model.weights", "run.log_interval", "run.ckpt_interval", "run.keep_last", "run.image_interval",
           "run.num_vis", "run.tensorboard", "data.num_workers", "data.prefetch_factor", "data.pin_memory",
           "work_dir", "OUTPUT_DIR", "default_hooks.logger.interval", "default_hooks.checkpoint.interval",
           "default_hooks.checkpoint.max_keep_ckpts", "train_dataloader.num_workers", "val_dataloader.num_workers",
           "test_dataloader.num_workers", "DATALOADER.NUM_WORKERS", "SOLVER.CHECKPOINT_PERIOD")
IGNORED_SUFFIXES = (".data_root", ".ann_file", ".num_workers", ".persistent_workers", "launcher")
ANNOTATION_SUFFIXES = (".json", ".txt", ".csv")


class InputsChangedError(RuntimeError):
    """A run folder made from other inputs than this command's; the message names what changed."""


def flatten(d: Any, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars are leaves (JSON-normalised)."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.loads(json.dumps(d, default=str))}


def weights_digest(path: str | os.PathLike | None) -> str | None:
    """The sidecar's sha256 of an export (no re-hash of a large file), else the file's own sha256."""
    if not path:
        return None
    p = Path(path)
    side = p.with_suffix(".json")
    if p.suffix == ".safetensors" and side.is_file():
        try:
            sha = json.loads(side.read_text()).get("sha256")
            if sha:
                return sha
        except (OSError, json.JSONDecodeError):
            pass
    return sha256_file(p) if p.is_file() else None


def data_stamp(root: str | os.PathLike | None, limit_files: int = 5_000_000) -> str | None:
    """sha256 over the sorted relative file names under root (+ size/mtime of annotation files)."""
    if not root:
        return None
    root = Path(root)
    if root.is_file():                       # a file list / an annotation file
        st = root.stat()
        return hashlib.sha256(f"{root.name}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    if not root.is_dir():
        return None
    h, n, stack = hashlib.sha256(), 0, [root]
    names = []
    while stack and n < limit_files:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=True):
                        stack.append(Path(e.path))
                    elif e.name not in (".lock",):
                        rel = os.path.relpath(e.path, root)
                        if e.name.endswith(ANNOTATION_SUFFIXES):
                            st = e.stat()
                            rel += f"\0{st.st_size}\0{st.st_mtime_ns}"
                        names.append(rel)
                        n += 1
        except OSError:
            continue
    for name in sorted(names):
        h.update(name.encode() + b"\n")
    return h.hexdigest()


def record(config: dict, weights: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
           extra: dict | None = None) -> dict:
    flat = {k: v for k, v in flatten(config).items() if k not in IGNORED and not k.endswith(IGNORED_SUFFIXES)}
    return {"config": flat, "weights_sha256": weights_digest(weights), "data": data_stamp(data_root),
            **(extra or {})}


def differences(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """-> (changed inputs: 'weights' / 'data' / extra keys, changed config keys)."""
    inputs = sorted(k for k in (old.keys() | new.keys()) - {"config"} if old.get(k) != new.get(k))
    a, b = old.get("config") or {}, new.get("config") or {}
    return inputs, sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def has_run(run_dir: Path) -> bool:
    """The folder holds a run (started or complete), not just logs of a failed start."""
    return any((run_dir / n).exists() for n in ("done", "result.json", "checkpoints", "last_checkpoint"))


def move_aside(run_dir: Path) -> Path:
    dest = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(run_dir, dest)
    return dest


def check_inputs(run_dir: str | os.PathLike, current: dict, complete: bool, force_new: bool = False,
                 log=None) -> bool:
    """Refuse (InputsChangedError) a folder made from other inputs. force_new: move a folder holding a run aside
    (-> True) and start fresh. Writes the record when the folder has none (a fresh run)."""
    run_dir = Path(run_dir)
    say = log.warning if log is not None else print
    if force_new and has_run(run_dir):
        say(f"--force-new: moved the old run folder to {move_aside(run_dir)}")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / INPUTS, current)
        return True
    try:
        old = json.loads((run_dir / INPUTS).read_text())
    except (OSError, json.JSONDecodeError):
        old = None
    if old is None or not has_run(run_dir):       # nothing was made here yet (e.g. a failed pre-flight)
        atomic_write_json(run_dir / INPUTS, current)
        return False
    inputs, keys = differences(old, current)
    if inputs or (keys and complete):
        what = ", ".join([*(f"{k} changed" for k in inputs), *(
            [f"settings changed: {keys[:8]}{' ...' if len(keys) > 8 else ''}"] if keys else [])])
        state = "a complete run" if complete else "a run in progress"
        raise InputsChangedError(f"{run_dir} holds {state} made from other inputs ({what}); use another output "
                                 f"folder, or pass --force-new to move this one aside and start fresh")
    if keys:
        say(f"continuing {run_dir} with settings changed since it started: {keys}")
        atomic_write_json(run_dir / INPUTS, current)
    return False
