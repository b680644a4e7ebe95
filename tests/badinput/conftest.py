"""Tally of the bad-input corpus: every test records each case it drove through an entry point and how it ended
(a clear error, a counted skip, or a correct decode); the terminal summary prints the totals:
    badinput: N cases, E clear errors, S counted skips, D decoded correctly
"""
from __future__ import annotations

import pytest

_CASES: dict[str, str] = {}          # case name -> 'error' | 'skip' | 'decoded'


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

    def decoded(self, *cases: str) -> None:
        for c in cases:
            self._add(c, "decoded")


@pytest.fixture(scope="session")
def tally() -> Tally:
    return Tally()


def summary_line() -> str:
    n = {k: sum(v == k for v in _CASES.values()) for k in ("error", "skip", "decoded")}
    return (f"badinput: {len(_CASES)} cases, {n['error']} clear errors, {n['skip']} counted skips, "
            f"{n['decoded']} decoded correctly")


def pytest_terminal_summary(terminalreporter):
    if _CASES:
        terminalreporter.write_line(summary_line())
