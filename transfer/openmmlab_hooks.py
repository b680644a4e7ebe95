"""The mmengine hooks and checkpoint rules of the mmdet / mmseg entry points (transfer/openmmlab_common.py).

MetricsJsonlHook   training losses/lr and every validation's metrics -> <work_dir>/metrics.jsonl
FiniteLossHook     a NaN/inf loss stops the run at that iteration (detectron2's FloatingPointError wording)
ExactResumeHook    every RNG (python, numpy, torch, CUDA) saved in each checkpoint and restored when a resumed
                   IterBasedTrainLoop has replayed its data iterator: a resumed run equals the uninterrupted one
StopSignalHook     SIGTERM / SIGUSR1 / SIGINT: a checkpoint at the end of the current iteration, then exit
                   (pretrain.signals: exit status 75 for the scheduler's signals, 130 for Ctrl-C)
PlainCheckpointHook  mmengine's checkpoints hold objects (the message hub's HistoryBuffers, whose pickles call
                   builtins.getattr, and numpy arrays / scalars), which the weights-only loader rightly refuses
                   and no allow-list can admit safely (getattr): they are saved as tensors + plain containers and
                   rebuilt on load, so resume reads the project's own checkpoints with the default safe loader.
worker_init_fn     mmengine's worker seeding + the workers ignore the stop signals (the main process saves).
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import FUNCTIONS

from pretrain.checkpoint import capture_rng, restore_rng
from pretrain.loader import _stop_workers_at_exit  # noqa: F401  (registered at import: workers ignore SIGTERM)
from pretrain.signals import RunInterrupted, StopSignals, ignore_in_worker

_TAG = "__a2mim_plain__"


def to_plain(obj):
    """mmengine's checkpoint objects -> tensors and plain containers (the weights-only loader reads them):
    HistoryBuffer -> {tag, log, count, max_length}, numpy arrays -> {tag, tensor}, numpy scalars -> python."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if isinstance(obj, HistoryBuffer):
        return {_TAG: "HistoryBuffer", "log": torch.from_numpy(np.array(obj._log_history, dtype=np.float64)),
                "count": torch.from_numpy(np.array(obj._count_history, dtype=np.int64)), "max_length": obj.max_length}
    if isinstance(obj, np.ndarray):
        return {_TAG: "ndarray", "data": torch.from_numpy(obj.copy())} if obj.dtype != object else \
            [to_plain(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def from_plain(obj):
    """The inverse of to_plain (in place of the loaded checkpoint's parts)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if isinstance(obj, dict):
        tag = obj.get(_TAG)
        if tag == "HistoryBuffer":
            return HistoryBuffer(obj["log"].numpy().tolist(), obj["count"].numpy().tolist(), obj["max_length"])
        if tag == "ndarray":
            return obj["data"].numpy()
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_plain(v) for v in obj)
    return obj


PLAIN_KEYS = ("message_hub", "meta")


@FUNCTIONS.register_module(name="a2mim_worker_init_fn")
def worker_init_fn(worker_id: int, num_workers: int, seed: int, rank: int | None = None) -> None:
    from mmengine.dataset import worker_init_fn as seeding
    from mmengine.dist import get_rank
    seeding(worker_id, num_workers, get_rank() if rank is None else rank, seed)
    ignore_in_worker()


def _is_number(v) -> bool:
    try:
        float(v)            # python and numpy scalars (IoUMetric returns numpy float32)
        return not isinstance(v, (str, bytes))
    except (TypeError, ValueError):
        return False


class MetricsJsonlHook(Hook):
    """Appends training losses/lr and every validation's metrics to <work_dir>/metrics.jsonl; keeps the last
    validation metrics for result.json."""
    priority = "LOW"

    def __init__(self, path: Path, interval: int = 50):
        self.path, self.interval, self.last_val, self._lr = Path(path), interval, None, None

    def _write(self, rec: dict) -> None:
        from mmengine.dist import is_main_process
        if is_main_process():
            with open(self.path, "a") as f:
                f.write(json.dumps(rec, default=float) + "\n")

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._lr = float(runner.optim_wrapper.get_lr()["lr"][0])    # the lr this step uses (1st group)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        it = runner.iter + 1
        if it % self.interval and it != runner.max_iters:
            return
        rec = {"split": "train", "iter": it, "epoch": runner.epoch, "lr": self._lr}
        for k, v in (outputs or {}).items():
            rec[k] = float(v.detach().mean()) if hasattr(v, "detach") else v
        self._write(rec)

    def after_val_epoch(self, runner, metrics=None):
        self.last_val = {k: float(v) for k, v in (metrics or {}).items() if _is_number(v)}
        self._write({"split": "val", "iter": runner.iter, "epoch": runner.epoch, **self.last_val})


class FiniteLossHook(Hook):
    """Every iteration: a non-finite total loss raises FloatingPointError naming the iteration and the losses (the
    optimizer already stepped on it, so no checkpoint of this state is written: the CheckpointHook runs later)."""
    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        vals = {k: float(v.detach().float().mean()) if hasattr(v, "detach") else v for k, v in (outputs or {}).items()}
        loss = vals.get("loss")
        if loss is not None and _is_number(loss) and not math.isfinite(float(loss)):
            raise FloatingPointError(f"Loss became infinite or NaN at iteration={runner.iter + 1}; no checkpoint of "
                                     f"this state is written. Losses: {vals}")


class PlainCheckpointHook(Hook):
    """Checkpoints of tensors and plain containers only (see to_plain); rebuilt before mmengine's resume uses them."""
    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for k in PLAIN_KEYS:
            if k in checkpoint:
                checkpoint[k] = to_plain(checkpoint[k])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        for k in PLAIN_KEYS:
            if k in checkpoint:
                checkpoint[k] = from_plain(checkpoint[k])


class ExactResumeHook(Hook):
    """RNG states in every checkpoint (as tensors/primitives: weights_only loads them), restored on resume.

    mmengine's IterBasedTrainLoop replays `iter` batches of its data iterator after a resume (so the data order
    continues), which draws on the RNGs again (transforms in the main process when num_workers=0); the states
    are therefore restored right after that replay: the iterator is wrapped so that its first fetch past the
    replayed ones restores them. EpochBasedTrainLoop resumes at an epoch start, where the restore happens at once.
    """
    priority = "VERY_LOW"

    def __init__(self):
        self._state = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["a2mim_rng"] = capture_rng()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._state = checkpoint.get("a2mim_rng")

    def before_train(self, runner) -> None:
        if self._state is None:
            return
        loop = runner.train_loop
        if hasattr(loop, "dataloader_iterator") and getattr(loop, "_iter", 0) > 0:
            loop.dataloader_iterator = _RestoreAfter(loop.dataloader_iterator, loop._iter, self._state)
        else:
            restore_rng(self._state)
        self._state = None


class _RestoreAfter:
    """Iterator proxy: the first `skip` fetches pass through (mmengine's replay), then the RNGs are restored."""

    def __init__(self, it, skip: int, state: dict):
        self._it, self._skip, self._state = it, skip, state

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip == 0 and self._state is not None:
            restore_rng(self._state)
            self._state = None
        self._skip -= 1
        return next(self._it)

    def __getattr__(self, name):
        return getattr(self._it, name)


class StopSignalHook(Hook):
    """A stop signal ends the run after the current iteration with a checkpoint mmengine's resume finds."""
    priority = "LOWEST"

    def __init__(self, stop: StopSignals):
        self.stop = stop

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        from mmengine.dist import all_reduce, is_main_process
        flag = torch.tensor([1.0 if self.stop.requested else 0.0])
        with contextlib.suppress(Exception):
            all_reduce(flag)                     # every rank stops at the same iteration
        if flag.item() == 0 or runner.iter + 1 >= runner.max_iters:
            return
        name = f"iter_{runner.iter + 1}.pth"
        runner.save_checkpoint(runner.work_dir, name, save_optimizer=True, save_param_scheduler=True,
                               by_epoch=False)
        if is_main_process():
            (Path(runner.work_dir) / "last_checkpoint").write_text(str(Path(runner.work_dir) / name))
        raise RunInterrupted(self.stop.requested or "SIGTERM", runner.iter + 1, str(Path(runner.work_dir) / name))
