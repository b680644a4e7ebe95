"""Stop requests: SIGTERM / SIGUSR1 / SIGINT end a run at the next step boundary, after a checkpoint.

    with StopSignals() as stop:          # handlers installed for the duration of the run, restored afterwards
        while ...:
            one_step()
            if stop.requested:           # (all ranks agree first: pretrain/loop.py reduces the flag with the loss)
                save(); raise RunInterrupted(stop.requested)

Who sends what: SLURM sends SIGTERM on preemption / scancel / the end of the time limit (then SIGKILL after
KillWait), and `#SBATCH --signal=B:USR1@T` + slurm/srun_requeue.sh forwards SIGUSR1 ahead of the limit; a terminal
sends SIGINT (Ctrl-C). A second SIGINT while the first is being honoured stops at once, without saving.
Exit status after a saved stop: 75 (EX_TEMPFAIL, "saved; run me again") for SIGTERM / SIGUSR1 — slurm/srun_requeue.sh
requeues on it, and `RequeueExit=75` in slurm.conf makes SLURM do so by itself — and 130 (128 + SIGINT) for Ctrl-C.

DataLoader workers ignore all three (ignore_in_worker, their worker_init_fn): they end with their parent, so a
signal that reaches the whole process group (Ctrl-C, `scancel --signal`) cannot kill a worker under the step that
is about to be saved.
"""
from __future__ import annotations

import logging
import signal
import sys

log = logging.getLogger("pretrain")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
EXIT_REQUEUE = 75          # EX_TEMPFAIL: stopped by the scheduler after a checkpoint; resumable
EXIT_INTERRUPTED = 130     # 128 + SIGINT


class RunInterrupted(BaseException):
    """A run stopped on request after saving its state; .code is the process exit status to end with.
    A BaseException (like KeyboardInterrupt): the frameworks' `except Exception` handlers (detectron2's trainer
    logs every Exception with its traceback) let it pass; the entry points catch it and exit with .code."""

    def __init__(self, signame: str, step: int | None = None, where: str = ""):
        self.signame, self.step = signame, step
        self.code = EXIT_INTERRUPTED if signame == "SIGINT" else EXIT_REQUEUE
        at = f" at step {step}" if step is not None else ""
        super().__init__(f"{signame}: stopped{at} after saving {where or 'a checkpoint'}; run the same command "
                         f"again to resume (exit status {self.code})")


class StopSignals:
    """Install stop handlers (main thread only; elsewhere a no-op) and remember the first signal's name."""

    def __init__(self, signals=STOP_SIGNALS):
        self.signals, self.requested, self._old = tuple(signals), None, {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested == "SIGINT" and name == "SIGINT":
            print("\ninterrupted again: exiting without saving", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_INTERRUPTED)
        if self.requested is None:
            self.requested = name
            log.warning("%s received: saving a checkpoint at the end of this step, then exiting", name)

    def __enter__(self) -> "StopSignals":
        import threading
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()


def ignore_in_worker(worker_id: int | None = None) -> None:
    """worker_init_fn of the DataLoaders: stop signals are the main process's business."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
