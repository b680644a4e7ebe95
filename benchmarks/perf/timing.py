"""Side-by-side timing of train steps in ONE process (shared by the perf benchmarks).

Variants are stepped alternately and the order is flipped every iteration, so load from other processes on a
shared host hits all of them alike. Medians of wall-clock and of process CPU time are reported (on a shared
CPU the CPU-time ratio is the steadier estimate of the work; on a quiet host the two agree).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable


def time_alternating(steps: dict[str, Callable[[], object]], warmup: int, iters: int,
                     check: Callable[[str, int, object], None] | None = None) -> dict:
    """steps: name -> fn() running one full step (synchronised). -> per name: '<name>_s' (median wall s),
    '<name>_cpu_s' (median process-CPU s), '<name>_all_s' (every timed wall time); warm-up iterations excluded.
    `check(name, iteration, fn's return value)` may raise (e.g. on a non-finite loss)."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    names = list(steps)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for it in range(warmup + iters):
        for n in (names if it % 2 == 0 else names[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            out = steps[n]()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if check is not None:
                check(n, it, out)
            if it >= warmup:
                wall[n].append(dt)
                cpu[n].append(dc)
    res = {}
    for n in names:
        res[f"{n}_s"] = statistics.median(wall[n])
        res[f"{n}_cpu_s"] = statistics.median(cpu[n])
        res[f"{n}_all_s"] = [round(t, 4) for t in wall[n]]
    return res


def ratios(res: dict, num: str, den: str, prefix: str = "") -> dict:
    """time_ratio (medians), time_ratio_min (best-of: the least disturbed steps) and cpu_time_ratio of num/den."""
    return {f"{prefix}time_ratio": res[f"{num}_s"] / res[f"{den}_s"],
            f"{prefix}time_ratio_min": min(res[f"{num}_all_s"]) / min(res[f"{den}_all_s"]),
            f"{prefix}cpu_time_ratio": res[f"{num}_cpu_s"] / res[f"{den}_cpu_s"]}
