"""benchmarks/stats.py: cells and Welch differences against hand-computed values and scipy's own Welch test."""
from __future__ import annotations

import math

import pytest
from scipy import stats as sst

from benchmarks.stats import Cell, fmt_cell, fmt_diff, welch


def test_cell_is_mean_and_sample_std():
    c = Cell.of([21.0, 22.0, 23.0])
    assert (c.n, c.mean, c.std) == (3, 22.0, 1.0)           # sample std: sqrt(((-1)^2 + 0 + 1^2) / 2) = 1
    assert Cell.of([5.0]).std is None and fmt_cell(Cell.of([5.0])) == "5.00"
    with pytest.raises(ValueError):
        Cell.of([])


def test_welch_by_hand_and_against_scipy():
    a, b = [21.0, 22.0, 23.0], [15.0, 17.0, 19.0]             # means 22 / 17, sample stds 1 / 2
    d = welch(Cell.of(a), Cell.of(b))
    # by hand: se^2 = 1/3 + 4/3 = 5/3; df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17
    assert d.diff == 5.0 and d.df == pytest.approx(50 / 17)
    half = sst.t.ppf(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert (d.low, d.high) == pytest.approx((5 - half, 5 + half))
    ci = sst.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)     # scipy's own Welch interval
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high))
    assert d.significant and fmt_diff(d).endswith("✓") and fmt_diff(d).startswith("+5.00 [+0.8")


def test_no_interval_from_one_run_and_overlap_is_not_a_result():
    assert welch(Cell.of([3.0]), Cell.of([1.0, 2.0])).low is None
    assert fmt_diff(welch(Cell.of([3.0]), Cell.of([1.0, 2.0]))) == "+1.50 (n<2: no interval)"   # 3 - mean(1, 2)
    close = welch(Cell.of([10.0, 12.0, 14.0]), Cell.of([9.0, 11.0, 13.0]))   # +1 with spreads of 2: includes 0
    assert close.low < 0 < close.high and not close.significant and "✓" not in fmt_diff(close)
    below = welch(Cell.of([1.0, 1.1, 0.9]), Cell.of([5.0, 5.1, 4.9]))
    assert below.significant and below.diff < 0
