"""Atomic file writes and hashing shared by every stage (checkpoints, exports, results).

Write to a temp file in the same folder, fsync, os.replace, fsync the folder: a reader (or a crash)
sees either the old file or the new one, never a torn write.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call write(fileobj) on a temp file beside `path`, then atomically move it into place.

    On any failure the temp file is removed and `path` is untouched. A full disk (ENOSPC, EDQUOT, EFBIG) raises
    OSError naming `path`, also when the writer swallowed the OSError (torch.save reports it as a RuntimeError)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    rec = None
    try:
        os.fchmod(fd, 0o666 & ~_umask())     # mkstemp creates 0600; give the file the mode open() would
        with os.fdopen(fd, mode) as f:
            rec = _WriteRecorder(f)
            write(rec)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        err = e if isinstance(e, OSError) else (rec.error if rec is not None else None)
        if err is not None and err.errno in _FULL:
            raise OSError(err.errno, f"{_FULL[err.errno]} while writing {path}; the previous {path.name} (if any) is "
                                     f"untouched and the partial temp file was removed") from e
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
         errno.EFBIG: "file too large (file-size limit, e.g. ulimit -f)"}


class _WriteRecorder:
    """File proxy that remembers the first OSError of write() (torch.save turns it into an opaque RuntimeError)."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
