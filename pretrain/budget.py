"""A run's length as a CPU-seconds budget (`schedule.budget_s`) instead of a number of epochs.

The step count is measured once, at the start of a fresh run: a few real optimizer steps on the run's own model,
data and batch (after warm-up steps that pay for lazy initialisation), timed with the process CPU clock
(`time.process_time`: user + system time of every thread of this process; DataLoader workers are other
processes and not counted). total_steps = floor(budget_s / CPU-seconds per step), at least 1. Everything the
calibration touched (weights, BN statistics, optimizer/scaler/task state, RNGs, the step counter) is put back, so
the run then starts exactly as one launched with that step count. The result goes to <run>/budget.json before the
first checkpoint: a resumed run reads it and never measures again, so resume stays exact. On several processes
the slowest rank's time counts (every rank must plan the same steps).

A CPU budget is for single-process CPU runs (the toy suite: one thread per process): on a GPU it measures the
host, not the device.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path

import torch

from pretrain import distributed as D
from pretrain.checkpoint import capture_rng, restore_rng
from pretrain.fileio import atomic_write_json

log = logging.getLogger("pretrain")
BUDGET_FILE = "budget.json"
WARMUP_STEPS = 2
MEASURED_STEPS = 6


def read_budget(run_dir: str | Path) -> dict | None:
    """The budget.json of a run folder, or None. A file that does not parse is an error naming it."""
    path = Path(run_dir) / BUDGET_FILE
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
        int(rec["total_steps"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a budget record with 'total_steps' ({type(e).__name__}: {e}); delete it "
                         f"only together with the run's checkpoints") from None
    return rec


def steps_for(budget_s: float, step_s: float) -> int:
    return max(1, math.floor(budget_s / max(step_s, 1e-9)))


def _batches(loop):
    """The run's own batches, epoch after epoch (a small dataset may hold fewer batches than the calibration)."""
    epoch = 0
    while True:
        yield from loop._loader(epoch, 0)
        epoch += 1


def calibrate(loop, warmup: int = WARMUP_STEPS, measured: int = MEASURED_STEPS) -> dict:
    """Time `measured` optimizer steps of `loop` (a set-up pretrain.loop.Loop at step 0) after `warmup` steps,
    restore its state, and return the budget record {budget_s, step_cpu_s, total_steps, ...}."""
    model_state = {k: v.detach().clone() for k, v in loop.model.state_dict().items()}
    opt_state = copy.deepcopy(loop.opt.state_dict())
    scaler_state = copy.deepcopy(loop.scaler.state_dict())
    extra = copy.deepcopy(loop.extra_state())
    rng = capture_rng()
    it = _batches(loop)
    times = []
    try:
        for i in range(warmup + measured):
            t0 = time.process_time()
            loop._train_step(it, 0)
            if i >= warmup:
                times.append(time.process_time() - t0)
    finally:
        del it
        loop.model.load_state_dict(model_state)
        loop.opt.load_state_dict(opt_state)
        loop.opt.zero_grad(set_to_none=True)
        loop.scaler.load_state_dict(scaler_state)
        if extra:
            loop.load_extra_state(extra)
        loop.step, loop.skipped = 0, 0
        restore_rng(rng)
    step_s = sum(times) / len(times)
    if D.is_dist():   # the slowest rank decides: every rank must run the same number of steps
        t = torch.tensor([step_s], dtype=torch.float64, device=loop.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        step_s = float(t.item())
    budget_s = float(loop.cfg.schedule.budget_s)
    rec = {"budget_s": budget_s, "step_cpu_s": round(step_s, 6), "total_steps": steps_for(budget_s, step_s),
           "clock": "process_time", "warmup_steps": warmup, "measured_steps": measured,
           "measured_cpu_s": [round(t, 6) for t in times], "world_size": loop.env.world_size}
    log.info("budget %.0f CPU-s / %.3f CPU-s per step -> %d optimizer steps", budget_s, step_s, rec["total_steps"])
    return rec


def write_budget(run_dir: str | Path, rec: dict) -> Path:
    return atomic_write_json(Path(run_dir) / BUDGET_FILE, rec)
