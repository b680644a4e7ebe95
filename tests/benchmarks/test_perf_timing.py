"""Side-by-side step timing: alternation order, warm-up exclusion, medians and ratios."""
import pytest

from benchmarks.perf.timing import ratios, time_alternating


def test_steps_alternate_with_flipped_order_and_warmup_is_excluded():
    calls = []
    steps = {"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}
    seen = []
    res = time_alternating(steps, warmup=1, iters=3, check=lambda n, it, out: seen.append((n, it, out)))
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert seen[:2] == [("a", 0, 1.0), ("b", 0, 2.0)] and len(seen) == 8
    assert len(res["a_all_s"]) == len(res["b_all_s"]) == 3          # the warm-up iteration is not timed
    assert res["a_s"] > 0 and res["a_cpu_s"] >= 0


def test_check_can_stop_the_run():
    def check(n, it, out):
        if out != out:
            raise FloatingPointError(f"{n} at {it}")
    with pytest.raises(FloatingPointError, match="b at 0"):
        time_alternating({"a": lambda: 0.0, "b": lambda: float("nan")}, 0, 2, check)
    with pytest.raises(ValueError, match="iters must be >= 1"):
        time_alternating({"a": lambda: 0.0}, 0, 0)


def test_ratios_of_medians_best_of_and_cpu_time():
    res = {"x_s": 3.0, "x_all_s": [3.0, 2.0, 4.0], "x_cpu_s": 6.0,
           "y_s": 2.0, "y_all_s": [2.0, 1.0, 2.5], "y_cpu_s": 4.0}
    assert ratios(res, "x", "y", prefix="p_") == {"p_time_ratio": 1.5, "p_time_ratio_min": 2.0,
                                                  "p_cpu_time_ratio": 1.5}
