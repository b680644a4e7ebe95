"""Helpers of the slurm tests (a module of its own, so that test files can import it by name)."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPTS = REPO / "slurm" / "cluster"
HERE = Path(__file__).resolve().parent


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class LocalCluster:
    base: Path
    conf: Path
    start_seconds: float   # how long slurm/cluster/start.sh took

    def job_dir(self, name: str) -> Path:
        """A fresh folder for submitit under this cluster (job ids restart at 1 with every new cluster)."""
        d = self.base / "jobs" / name
        assert not d.exists(), f"job folder {d} already used in this session"
        d.mkdir(parents=True)
        return d

    def sacct(self, job_id: str) -> tuple[str, str]:
        """(State, ExitCode) of the job allocation once final, e.g. ("COMPLETED", "0:0")."""
        from slurm.jobs import sacct_state
        return sacct_state(str(job_id))


def wait_until(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll `pred` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
