"""One writer per run folder: an advisory lock every entry point takes before it touches the folder.

    with RunLock(run_dir, what="pretrain"):      # RunLockError at once if another live process holds it
        ...

The lock is `fcntl.flock(LOCK_EX | LOCK_NB)` on `.<run name>.lock` beside the folder (outside it, so a folder
moved aside by --force-new keeps no lock and the fresh folder is covered at once); the kernel releases it when the holder exits, however
it exits (SIGKILL included), so a stale lock file never blocks anyone. The file holds the holder's PID, host and
command line, which the error of a second writer names. flock is per open file description: a second RunLock on
the same folder in the same process also fails (a run that re-enters its own folder is a bug too).
On NFS, flock is emulated with POSIX locks (Linux >= 2.6.12), which the NFS lock manager shares across machines.

holder(run_dir) -> the holder's record (dict) while the lock is held, None when free: `run_all` uses it to find an
orphaned step of a killed driver before it launches that step again.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path



def lock_path(run_dir: str | os.PathLike) -> Path:
    run_dir = Path(os.path.abspath(run_dir))
    return run_dir.parent / f".{run_dir.name}.lock"


class RunLockError(RuntimeError):
    """The run folder is in use by another live process; the message names its PID, host and command."""


def _describe(rec: dict | None) -> str:
    if not rec:
        return "another process (its record could not be read)"
    cmd = " ".join(rec.get("argv") or [])[:200]
    return f"PID {rec.get('pid')} on {rec.get('host')} (since {rec.get('since')}: {cmd})"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, json.JSONDecodeError):
        return None


_HELD: set[int] = set()       # lock fds of this process


def _close_in_child() -> None:
    """A forked child (DataLoader worker, process pool) drops its copies of the lock fds: the lock then lives and
    dies with the process that took it. (Closing a copy never releases a flock held through another copy.)"""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLock:
    def __init__(self, run_dir: str | os.PathLike, what: str = ""):
        self.run_dir, self.what = Path(run_dir), what
        self.path = lock_path(self.run_dir)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockError(f"{self.run_dir} is in use by {_describe(_read(self.path))}; one writer per run "
                               f"folder: wait for it to end (or stop it), or use another output folder") from None
        rec = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what, "argv": sys.argv,
               "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(rec) + "\n").encode(), 0)
        self._fd = fd
        _HELD.add(fd)
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD.discard(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(run_dir: str | os.PathLike) -> dict | None:
    """The record of the live process holding `run_dir`'s lock, or None when nobody holds it."""
    path = lock_path(run_dir)
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(path) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_holder(run_dir: str | os.PathLike) -> str | None:
    rec = holder(run_dir)
    return None if rec is None else _describe(rec)
