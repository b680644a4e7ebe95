"""The one DataLoader of a run (pretrain.loop.Loop.build_loader): built once, moved per epoch by its sampler.

Settings read: run.batch_per_gpu, data.{num_workers, prefetch_factor, pin_memory, persistent_workers}. Batches are
pinned only when training on CUDA; workers ignore stop signals (the main process saves and stops them).
"""
from __future__ import annotations

import atexit
import contextlib
import weakref

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


_ITERATORS: "weakref.WeakSet" = weakref.WeakSet()    # every multi-process iterator of a loader built here


class _Loader(DataLoader):
    """A DataLoader whose multi-process iterators are tracked, so that the exit hook below can stop their workers."""

    def _get_iterator(self):
        it = super()._get_iterator()
        if self.num_workers > 0:
            _ITERATORS.add(it)
        return it


def _stop_workers_at_exit() -> None:
    """Workers ignore SIGTERM (the main process saves on it), so multiprocessing's own exit handler (terminate =
    SIGTERM, then join) would wait for a live one forever: stop them the DataLoader's way first (end marker on the
    index queues, joined), then end every daemonic child still there (any DataLoader's: mmengine's workers ignore
    SIGTERM too, a2mim_worker_init_fn). Registered at import, after multiprocessing.util registered its handler, so it runs
    before that one (atexit runs last-registered first)."""
    import multiprocessing

    for it in list(_ITERATORS):
        with contextlib.suppress(Exception):
            it._shutdown_workers()
    # what multiprocessing's handler does to daemonic children (terminate, join), with a kill for one that ignores
    # SIGTERM (a started Process no longer knows its target, so every daemonic child is treated alike)
    for p in multiprocessing.active_children():
        if p.daemon:
            p.terminate()
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join(5)


import multiprocessing.util  # noqa: E402,F401  (registers multiprocessing's exit handler now, so that ours runs first)

atexit.register(_stop_workers_at_exit)


def build_loader(dataset: Dataset, sampler: Sampler, collate_fn, cfg, device: torch.device) -> DataLoader:
    """drop_last batches of run.batch_per_gpu over `sampler`; data.prefetch_factor batches ahead per worker."""
    from pretrain.signals import ignore_in_worker

    d, workers = cfg.data, cfg.data.num_workers
    return _Loader(dataset, batch_size=cfg.run.batch_per_gpu, sampler=sampler,
                   drop_last=True, num_workers=workers, collate_fn=collate_fn,
                   pin_memory=device.type == "cuda" and getattr(d, "pin_memory", True),
                   persistent_workers=workers > 0 and getattr(d, "persistent_workers", True),
                   prefetch_factor=getattr(d, "prefetch_factor", 2) if workers > 0 else None,
                   worker_init_fn=ignore_in_worker if workers > 0 else None,
                   generator=torch.Generator())  # a private generator: the global RNG stays untouched
