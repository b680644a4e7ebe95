"""The statistics of the leaderboard: per-cell mean ± sample std, and differences between two cells with Welch's
95 % confidence interval (unequal variances; the runs of two methods are independent, seeds are not paired
measurements of one thing).

    diff = mean_a - mean_b,  se = sqrt(s_a^2 / n_a + s_b^2 / n_b)
    df   = se^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1))     (Welch-Satterthwaite)
    CI   = diff -/+ t_{0.975, df} * se
With n < 2 on either side there is no interval (a spread cannot be estimated from one run). When both cells have
zero spread (identical runs), se = 0 and the interval is the point itself; that is reported, not hidden.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    n: int
    mean: float
    std: float | None          # sample std (ddof = 1); None for n = 1

    @classmethod
    def of(cls, values: list[float]) -> "Cell":
        if not values:
            raise ValueError("a cell needs at least one value")
        return cls(len(values), statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


@dataclass(frozen=True)
class Diff:
    diff: float
    low: float | None          # None: no interval (n < 2 on a side)
    high: float | None
    df: float | None

    @property
    def significant(self) -> bool:
        """The 95 % interval excludes 0."""
        return self.low is not None and (self.low > 0 or self.high < 0)


def t_quantile(p: float, df: float) -> float:
    from scipy.stats import t
    return float(t.ppf(p, df))


def welch(a: Cell, b: Cell, level: float = 0.95) -> Diff:
    """a - b with Welch's interval at `level`."""
    d = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return Diff(d, None, None, None)
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Diff(d, d, d, float(a.n + b.n - 2))
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    h = t_quantile(0.5 + level / 2, df) * se
    return Diff(d, d - h, d + h, df)


def fmt_cell(c: Cell) -> str:
    return f"{c.mean:.2f}" if c.std is None else f"{c.mean:.2f} ± {c.std:.2f}"


def fmt_diff(d: Diff) -> str:
    """'+5.10 [+3.20, +7.00] ✓' (✓: the interval excludes 0), or '+5.10 (n<2: no interval)'."""
    if d.low is None:
        return f"{d.diff:+.2f} (n<2: no interval)"
    return f"{d.diff:+.2f} [{d.low:+.2f}, {d.high:+.2f}]" + (" ✓" if d.significant else "")
