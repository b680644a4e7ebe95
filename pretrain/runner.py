"""The driver of a training Loop (pretrain/loop.py): one run of it in its run folder, guarded.

run_loop(loop): rank 0 takes the folder's lock for the whole run (pretrain/runlock.py: a second writer fails at
once, naming this process), checks the folder's recorded inputs (pretrain/fingerprint.py) before anything is read
from it, installs the stop-signal handlers (pretrain/signals.py), then set-up -> fit -> finish, or nothing when the
folder holds the complete run. on_main(loop, fn): fn on rank 0, its exception raised on every rank.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pretrain import distributed as D
from pretrain.budget import read_budget
from pretrain.fingerprint import check_inputs
from pretrain.runlock import RunLock
from pretrain.signals import StopSignals

if TYPE_CHECKING:
    from pretrain.loop import Loop

log = logging.getLogger("pretrain")


def on_main(loop: "Loop", fn: Callable[[], Any]) -> Any:
    """fn() on rank 0; its exception (if any) is raised on every rank, so all ranks fail together, and a plain
    return value (bool, int, str, None) is returned on every rank."""
    err, out = None, None
    if loop.env.is_main:
        try:
            out = fn()
        except Exception as e:      # noqa: BLE001  (re-raised below, on every rank)
            err = e
    if D.is_dist():
        plain = out if isinstance(out, (bool, int, str, type(None))) else None
        msg, shared = D.all_gather_object((None if err is None else (type(err).__name__, str(err)), plain))[0]
        if msg is not None and err is None:
            raise RuntimeError(f"{msg[0]} on rank 0: {msg[1]}")
        out = out if loop.env.is_main else shared
    if err is not None:
        raise err
    return out


def run_loop(loop: "Loop") -> Path:
    """Run (or resume, or skip if complete) a Loop; returns its run folder. Always tears the process group down.

    Rank 0 holds the run folder's lock for the whole run (a second writer fails at once, naming this process) and
    checks the folder's recorded inputs before anything is read from it. SIGTERM / SIGUSR1 / SIGINT end the run
    at the next step boundary after a checkpoint (RunInterrupted, with the exit status to end with)."""
    lock = RunLock(loop.run_dir, what=type(loop).__name__)
    try:
        on_main(loop, lock.acquire)
        moved = on_main(loop, lambda: check_inputs(loop.run_dir, loop.inputs_record(), complete=loop.is_complete(),
                                                   force_new=loop.force_new, log=log))
        if moved:        # --force-new moved the old folder aside: plan from scratch (no budget, no checkpoints)
            loop.budget = read_budget(loop.run_dir) if loop.cfg.schedule.budget_s is not None else None
            loop.plan = loop._make_plan()
        if loop.is_complete():
            log.info("%s is complete (step %d): nothing to do", loop.run_dir, loop.plan.target_steps)
            return loop.run_dir
        with StopSignals() as stop:
            loop.stop = stop
            loop.setup()
            try:
                loop.finish(loop.fit())
            finally:
                loop.logger.close()
        return loop.run_dir
    finally:
        lock.release()
        D.cleanup()
