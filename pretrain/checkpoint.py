"""Checkpoints: atomic writes, safe loads, rotation, and the RNG state needed for an exact resume.

load_checkpoint() is the ONE place in the project that calls torch.load, always with weights_only=True:
a file holding arbitrary Python objects (a malicious pickle) is refused with a clear error, never retried unsafely.
A checkpoint holds tensors and primitives only (no numpy / argparse objects), so weights_only always suffices.

Run layout: <run>/checkpoints/step_00000120.pt ... (the keep_last newest) and last.pt (a hard link to, or a copy
of, the newest). Every file is written to a temp file + fsync + os.replace, so a crash (even SIGKILL) mid-write
leaves the previous checkpoint in place and loadable.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.fileio import atomic_write

CKPT_VERSION = 1
_NUMBERED = re.compile(r"^step_(\d{8,})\.pt$")
_TEMP = re.compile(r"^\.(last\.pt|step_\d{8,}\.pt)\..+\.(tmp|lnk)$")   # atomic_write / link temps of a killed writer


class CheckpointError(RuntimeError):
    """A checkpoint that cannot (or must not) be loaded; the message names the file and why."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """torch.save(state) atomically: readers see the old file or the new one, never a torn write."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """torch.load(path, weights_only=True), with clear errors for missing, corrupt and unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _torch_reason(str(e))
        if "GLOBAL" not in str(e):
            raise CheckpointError(f"{path}: not a readable checkpoint (corrupt, or not written by torch.save): "
                                  f"{reason}") from None
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain containers "
            f"(loaded with weights_only=True; the file may be malicious or written by another tool; "
            f"no unsafe fallback is attempted). torch said: {reason}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                              f"{_torch_reason(str(e))}") from None
    return obj


def state_dict_mismatch(model: torch.nn.Module, state: dict, limit: int = 8) -> str:
    """Why `state` does not load into `model`, naming the keys: "missing [...]; unexpected [...]; shape a.w:
    checkpoint (3,) vs model (4,)". For messages where load_state_dict's own error would be cut to its first line
    ('Error(s) in loading state_dict for X:'), which names no key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]

    def part(name, items):
        more = f" ... +{len(items) - limit} more" if len(items) > limit else ""
        return f"{len(items)} {name} {items[:limit]}{more}" if items else ""
    parts = [part("missing", missing), part("unexpected", unexpected), part("shape-mismatched", shapes)]
    return "; ".join(p for p in parts if p) or "keys and shapes agree"


def _torch_reason(msg: str) -> str:
    """The informative part of torch's long, advice-heavy load error (e.g. 'GLOBAL io.open was not allowed')."""
    m = re.search(r"(Unsupported global: GLOBAL \S+ was not an allowed global by default"
                  r"|Trying to load unsupported GLOBAL \S+(?: whose module \S+ is blocked)?"
                  r"|Unsupported operand \d+)", msg)
    if m:
        return m.group(1)
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


# ---- RNG state (python, numpy, torch CPU, CUDA): stored as tensors/primitives so weights_only loads it
def capture_rng() -> dict:
    py = random.getstate()                       # (version, tuple of 625 ints, gauss_next)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) != torch.cuda.device_count():
            warnings.warn(f"checkpoint has CUDA RNG states for {len(cuda)} devices, this process sees "
                          f"{torch.cuda.device_count()}; restoring the common ones", stacklevel=2)
        for i, s in enumerate(cuda[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


# ---- rotation
class CheckpointDir:
    """<run>/checkpoints: numbered files (the keep_last newest are kept) + last.pt."""

    def __init__(self, folder: str | os.PathLike, keep_last: int = 3):
        self.folder = Path(folder)
        self.keep_last = keep_last

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    def numbered(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        out = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _NUMBERED.match(p.name))]
        return sorted(out)

    def save(self, state: dict, step: int) -> Path:
        """Write the numbered file (if keep_last > 0) then point last.pt at it; prune old numbered files."""
        if self.keep_last == 0:
            return save_checkpoint(self.last, state)
        path = save_checkpoint(self.folder / f"step_{step:08d}.pt", state)
        _atomic_link_or_copy(path, self.last)
        for _, old in self.numbered()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def remove_stale_temps(self) -> list[Path]:
        """Delete temp files a killed writer left behind (a crash mid-save cannot clean up); returns them."""
        stale = [p for p in self.folder.iterdir() if _TEMP.match(p.name)] if self.folder.is_dir() else []
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            warnings.warn(f"removed {len(stale)} partial checkpoint file(s) of an interrupted save: "
                          f"{[p.name for p in stale]}", stacklevel=2)
        return stale

    def load_latest(self, map_location: Any = "cpu") -> tuple[dict, Path] | None:
        """The newest loadable checkpoint (last.pt, else numbered ones newest first); None if there is none.
        Called when a run starts (no writer is active): partial temp files of a killed save are removed first."""
        self.remove_stale_temps()
        candidates = ([self.last] if self.last.is_file() else []) + [p for _, p in reversed(self.numbered())]
        errors = []
        for p in candidates:
            try:
                return load_checkpoint(p, map_location), p
            except CheckpointError as e:
                if "refused to load" in str(e):
                    raise
                errors.append(str(e))
                warnings.warn(f"skipping unreadable checkpoint: {e}", stacklevel=2)
        if errors:
            raise CheckpointError(f"{self.folder}: no readable checkpoint among {len(errors)}: {errors}")
        return None


def _atomic_link_or_copy(src: Path, dst: Path) -> None:
    """Make dst an atomic hard link to src (same data, no second write); copy where links are unsupported."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".lnk", dir=dst.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        data = src.read_bytes()
        atomic_write(dst, lambda f: f.write(data))
