"""Where a suite step runs: a local subprocess, or a SLURM job through slurm/ (submitit)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from benchmarks.suite import Step, python_cmd

REPO = Path(__file__).resolve().parent.parent


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join("    | " + x for x in lines[-n:])


class LocalExecutor:
    """Runs each step as `python -m ...` in a subprocess; output goes to <run_dir>/<kind>.log."""

    def __init__(self, timeout_s: int | None = None):
        self.timeout_s = timeout_s

    def run(self, step: Step) -> tuple[bool, str]:
        step.run_dir.mkdir(parents=True, exist_ok=True)
        log = step.run_dir / f"{step.kind}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        timeout = step.meta.get("timeout_s") or self.timeout_s
        with open(log, "ab") as f:
            f.write(f"\n$ {' '.join(python_cmd(step))}\n".encode())
            f.flush()
            try:
                rc = subprocess.run(python_cmd(step), stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                    timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                return False, f"timed out after {timeout} s; log {log}:\n{_tail(log)}"
        if rc != 0:
            return False, f"exit code {rc}; log {log}:\n{_tail(log)}"
        return True, ""


def make_slurm_executor(args, out: Path):
    from slurm.submit import SuiteStepExecutor   # imported lazily: needs submitit
    return SuiteStepExecutor(args, folder=out / "slurm")

