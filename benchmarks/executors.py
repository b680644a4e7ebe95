"""Where a suite step runs: a local subprocess, or a SLURM job through slurm/ (submitit)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.suite import Step, python_cmd

REPO = Path(__file__).resolve().parent.parent


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join("    | " + x for x in lines[-n:])


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask / cgroup-pinned set where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class LocalExecutor:
    """Runs each step as `python -m ...` in a subprocess; output goes to <run_dir>/<kind>.log.

    threads: intra-op threads per step (OMP/MKL/OpenBLAS_NUM_THREADS), so that parallel steps share the cores
    instead of oversubscribing them (two 2-thread torch processes on 2 cores spin-wait and run several times
    slower than two 1-thread ones). None leaves the environment as it is. Thread-safe: run() may be called from
    several threads at once (benchmarks/run_all.py --jobs)."""

    def __init__(self, timeout_s: int | None = None, threads: int | None = None):
        self.timeout_s = timeout_s
        self.threads = threads
        self.cpu_s: dict[str, float] = {}   # step id -> user + system CPU seconds of its process
        self._procs: dict[int, subprocess.Popen] = {}   # pid -> running step (each its own process group)
        self._lock = threading.Lock()

    def stop_all(self, sig: int = signal.SIGTERM, grace_s: float = 120.0) -> None:
        """Send `sig` to every running step's process group (the step saves and exits: pretrain/signals.py), then
        SIGKILL what is still alive after grace_s. run_all calls it on SIGTERM / SIGINT / SIGHUP."""
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        deadline = time.time() + grace_s
        for p in procs:
            while p.returncode is None and time.time() < deadline and _alive(p.pid):
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                if _alive(p.pid):
                    os.killpg(p.pid, signal.SIGKILL)

    def run(self, step: Step) -> tuple[bool, str]:
        step.run_dir.mkdir(parents=True, exist_ok=True)
        log = step.run_dir / f"{step.kind}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.threads:
            env.update({k: str(self.threads) for k in THREAD_VARS})
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        timeout = step.meta.get("timeout_s") or self.timeout_s
        with open(log, "ab") as f:
            f.write(f"\n$ {' '.join(python_cmd(step))}\n".encode())
            f.flush()
            # its own process group (session): a signal to run_all's group does not reach it behind run_all's back,
            # and stop_all / the timeout end the step with all its workers
            proc = subprocess.Popen(python_cmd(step), stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                    start_new_session=True)
            with self._lock:
                self._procs[proc.pid] = proc
            fired: list[bool] = []
            timer = threading.Timer(timeout, lambda: (fired.append(True), _killpg(proc.pid))) if timeout else None
            if timer:
                timer.start()
            try:   # wait4: the exit status and this child's own CPU time (parallel steps: per step, not summed)
                _, wstatus, usage = os.wait4(proc.pid, 0)
            finally:
                if timer:
                    timer.cancel()
                with self._lock:
                    self._procs.pop(proc.pid, None)
            proc.returncode = rc = os.waitstatus_to_exitcode(wstatus)
        self.cpu_s[step.id] = round(usage.ru_utime + usage.ru_stime, 3)
        if fired:
            return False, f"timed out after {timeout} s; log {log}:\n{_tail(log)}"
        if rc != 0:
            return False, f"exit code {rc}; log {log}:\n{_tail(log)}"
        return True, ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def make_slurm_executor(args, out: Path):
    from slurm.submit import SuiteStepExecutor   # imported lazily: needs submitit
    return SuiteStepExecutor(args, folder=out / "slurm")

