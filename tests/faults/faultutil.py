"""Fault scenarios: real processes signalled, killed, run twice on one folder; helpers shared by tests/faults/."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pretrain"))     # imgfactory (the engine test images)

from imgfactory import child_env  # noqa: E402


def logged_steps(run: Path, key: str = "step") -> list[int]:
    path = run / "metrics.jsonl"
    out = []
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if key in row and row.get("split", "train") == "train":
            out.append(row[key])
    return out


def start(cmd: list[str], **kw) -> subprocess.Popen:
    """A child in its own session (so a signal to its process group reaches it and its workers, as SLURM's does)."""
    return subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def wait_until(cond, proc: subprocess.Popen | None = None, timeout: float = 240, what: str = "") -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def transfer_fixtures():
    """tests/transfer/conftest.py's dataset makers (make_coco, make_ade, export) as a plain module."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "transfer" / "conftest.py"
    spec = importlib.util.spec_from_file_location("transfer_fixture_makers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
