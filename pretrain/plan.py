"""The plan of a run (sizes, lr, step count), its lr schedule and seeding: shared by every Loop (pretrain/loop.py).

Steps: schedule.epochs x steps per epoch, or the count a CPU-seconds budget bought (pretrain/budget.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pretrain.config import ConfigError
from pretrain.imageio import DataError


@dataclass(frozen=True)
class Plan:
    """Derived sizes of a run (written to run_info.json)."""
    world_size: int
    global_batch: int
    lr: float
    num_images: int
    steps_per_epoch: int
    total_steps: int
    target_steps: int     # total_steps, or run.max_steps if smaller


def make_plan(cfg, num_images: int, world_size: int, total_steps: int | None = None) -> Plan:
    """lr = optim.lr, or optim.base_lr * global_batch / optim.lr_ref_batch; steps from the per-rank image count
    (schedule.epochs x steps per epoch, or `total_steps` when a budget set them: pretrain/budget.py)."""
    gb = cfg.run.batch_per_gpu * world_size * cfg.run.accum_steps
    lr = cfg.optim.lr if cfg.optim.lr is not None else cfg.optim.base_lr * gb / cfg.optim.lr_ref_batch
    spe = (num_images // world_size) // (cfg.run.batch_per_gpu * cfg.run.accum_steps)
    if spe < 1:
        raise DataError(f"{num_images} images cannot fill one optimizer step of {gb} images "
                        f"(run.batch_per_gpu={cfg.run.batch_per_gpu} x {world_size} processes x "
                        f"run.accum_steps={cfg.run.accum_steps}); use a smaller batch or more data")
    total = cfg.schedule.epochs * spe if total_steps is None else int(total_steps)
    target = min(total, cfg.run.max_steps) if cfg.run.max_steps else total
    return Plan(world_size, gb, lr, num_images, spe, total, target)


def build_scheduler(opt: torch.optim.Optimizer, cfg, spe: int, total_steps: int | None = None):
    """Warm-up + cosine (to min_lr) or step (x gamma at absolute epochs), in optimizer steps or epochs; the horizon
    is schedule.epochs, or `total_steps` optimizer steps (a budget run)."""
    from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler

    s = cfg.schedule
    unit = spe if s.per_iteration else 1
    horizon = s.epochs * spe if total_steps is None else int(total_steps)         # optimizer steps
    warm, total = round(s.warmup_epochs * unit), horizon if s.per_iteration else math.ceil(horizon / spe)
    if warm >= total:
        raise ConfigError(f"config key 'schedule.warmup_epochs' = {s.warmup_epochs}: {warm} warm-up "
                          f"{'steps' if s.per_iteration else 'epochs'} do not fit the run's {total}"
                          + (f" (schedule.budget_s={s.budget_s} buys {horizon} steps)" if total_steps else ""))
    common = dict(warmup_t=warm, warmup_lr_init=s.warmup_lr_init, t_in_epochs=not s.per_iteration)
    if s.kind == "cosine":
        return CosineLRScheduler(opt, t_initial=total - warm, lr_min=s.min_lr, warmup_prefix=True, **common)
    # timm decays when t + 1 >= decay_t: +1 makes the decay start exactly at the first step of epoch e
    return MultiStepLRScheduler(opt, decay_t=[e * unit + 1 for e in s.step_epochs], decay_rate=s.step_gamma,
                                warmup_prefix=False, **common)


def seed_all(seed: int) -> None:
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
