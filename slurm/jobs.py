"""Waiting for submitit jobs, with failures that say what happened: state, exit code, exception, stderr tail.

submitit alone raises FailedJobError (the traceback, no stderr) or UncompletedJobError (all of stderr, no exit
code); wait_results() raises one JobFailed per failed batch that names each failed job and task, its SLURM
state and exit code (from sacct), the exception submitit recorded, and the last lines of the task's stderr.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

_UNFINISHED = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "RESIZING", "SUSPENDED", ""}


class JobFailed(RuntimeError):
    """One or more jobs failed; `failures` holds one dict per failed task (job_id, task, state, exit_code, ...)."""

    def __init__(self, failures: list[dict[str, Any]]):
        self.failures = failures
        super().__init__("\n\n".join(_format(f) for f in failures))


def sacct_state(job_id: str, settle_s: float = 10.0) -> tuple[str, str]:
    """(State, ExitCode) of a job's allocation from sacct, e.g. ("FAILED", "3:0"); waits for a final state
    up to `settle_s` (accounting lags the job's end by a moment). ("UNKNOWN", "?") when sacct cannot tell."""
    deadline = time.monotonic() + settle_s
    state, code = "UNKNOWN", "?"
    while True:
        try:
            out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,State,ExitCode"],
                                 capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return state, code
        for line in out.splitlines():
            jid, st, ec = (line.split("|") + ["", "", ""])[:3]
            if jid == job_id:
                state, code = st.split(" ")[0], ec   # "CANCELLED by 0" -> "CANCELLED"
        if state not in _UNFINISHED or time.monotonic() > deadline:
            return state, code
        time.sleep(0.5)


def tail(path: str | Path, lines: int = 20) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return ""
    text = p.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_results(jobs: Sequence[Any], tail_lines: int = 20) -> list[Any]:
    """Wait for every job; return each job's rank-0 result, or raise JobFailed describing every failed task."""
    results, failures = [], []
    for job in jobs:
        tasks = [job.task(t) for t in range(job.num_tasks)] if job.num_tasks > 1 else [job]
        bad = [(t, e) for t, e in ((t, t.exception()) for t in tasks) if e is not None]
        if not bad:
            results.append(tasks[0].result())
            continue
        is_slurm = type(job).__module__.startswith("submitit.slurm")
        state, code = sacct_state(str(job.job_id)) if is_slurm else (str(job.state), "?")
        for t, exc in bad:
            failures.append({"job_id": str(job.job_id), "task": t.task_id or 0, "state": state, "exit_code": code,
                             "error": f"{type(exc).__name__}: {exc}", "stderr_path": str(t.paths.stderr),
                             "stderr_tail": tail(t.paths.stderr, tail_lines)})
    if failures:
        raise JobFailed(failures)
    return results


def _format(f: dict[str, Any]) -> str:
    error = f["error"].strip().splitlines()
    error = "\n".join(error[:40] + (["..."] if len(error) > 40 else []))
    return (f"job {f['job_id']} task {f['task']}: {f['state']}, exit code {f['exit_code']}\n"
            f"--- error ---\n{error}\n"
            f"--- last lines of {f['stderr_path']} ---\n{f['stderr_tail']}")
