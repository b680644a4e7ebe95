"""Tally of the bad-input corpus: every test records each case it drove through an entry point and how it ended
(a clear error, a counted skip, a counted warning, or a correct decode); the terminal summary prints the totals:
    badinput: N cases, E clear errors, S counted skips, D decoded correctly[, W counted warnings]
"""
from __future__ import annotations

import pytest

_CASES: dict[str, str] = {}          # case name -> 'error' | 'skip' | 'warn' | 'decoded'


class Tally:
    def _add(self, case: str, outcome: str) -> None:
        prev = _CASES.setdefault(case, outcome)
        assert prev == outcome, f"case {case!r} recorded as {prev} and {outcome}"

    def error(self, *cases: str) -> None:
        for c in cases:
            self._add(c, "error")

    def skip(self, *cases: str) -> None:
        for c in cases:
            self._add(c, "skip")

    def warned(self, *cases: str) -> None:
        for c in cases:
            self._add(c, "warn")

    def decoded(self, *cases: str) -> None:
        for c in cases:
            self._add(c, "decoded")


@pytest.fixture(scope="session")
def tally() -> Tally:
    return Tally()


@pytest.fixture(scope="session")
def coco80():
    """mmdet's 80 COCO class names as json categories (ids 1..80), for the real mmdet configs."""
    from mmdet.datasets import CocoDataset
    return tuple({"id": i + 1, "name": n} for i, n in enumerate(CocoDataset.METAINFO["classes"]))


def summary_line() -> str:
    n = {k: sum(v == k for v in _CASES.values()) for k in ("error", "skip", "warn", "decoded")}
    return (f"badinput: {len(_CASES)} cases, {n['error']} clear errors, {n['skip']} counted skips, "
            f"{n['decoded']} decoded correctly" + (f", {n['warn']} counted warnings" if n["warn"] else ""))


def pytest_terminal_summary(terminalreporter):
    if _CASES:
        terminalreporter.write_line(summary_line())
