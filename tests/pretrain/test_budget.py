"""schedule.budget_s (pretrain/budget.py): the step count is measured once, stored in budget.json and kept on resume;
the calibration leaves no trace (a calibrated run equals one told the same step count); a budget too small for the
warm-up is refused naming the key."""
from __future__ import annotations

import json

import pytest
import torch

from imgfactory import CONFIGS, make_images
from pretrain import budget as B
from pretrain import loop as L
from pretrain.checkpoint import load_checkpoint
from pretrain.config import ConfigError, load_config
from pretrain.engine import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(data, out, *extra):
    return load_config(CONFIGS / "tiny_r18.yaml", [
        f"data.root={data}", f"run.out_dir={out}", "run.batch_per_gpu=4", "run.log_interval=1", "run.image_interval=0",
        "run.tensorboard=false", "run.ckpt_interval=2", "schedule.budget_s=1000", "schedule.warmup_epochs=0.5",
        *extra])


def test_calibrated_count_is_kept_and_calibration_leaves_no_trace(tmp_path, monkeypatch):
    data = make_images(tmp_path / "imgs", n=16)
    monkeypatch.setattr(B, "steps_for", lambda budget_s, step_s: 7)          # the machine's speed, fixed for the test
    calibrated = train(_cfg(data, tmp_path / "a"))
    rec = json.loads((calibrated / "budget.json").read_text())
    assert rec["total_steps"] == 7 and rec["measured_steps"] == B.MEASURED_STEPS and rec["step_cpu_s"] > 0
    assert rec["budget_s"] == 1000.0 and len(rec["measured_cpu_s"]) == B.MEASURED_STEPS
    assert json.loads((calibrated / "done").read_text()) == {"step": 7, "total_steps": 7}
    steps = [json.loads(x)["step"] for x in (calibrated / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 8)), "calibration steps are neither logged nor counted"

    # the same run told the count without measuring anything: bit-identical weights, optimizer and RNG states
    fixed = {**rec, "measured_cpu_s": []}
    monkeypatch.setattr(L, "calibrate", lambda loop: fixed)
    plain = train(_cfg(data, tmp_path / "b"))
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (calibrated, plain))
    for key in ("model", "optimizer", "scaler", "rng", "step"):
        assert _equal(a[key], b[key]), key


def _equal(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return torch.equal(x, y)
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_equal(a, b) for a, b in zip(x, y))
    return x == y


def test_resume_reads_budget_json_and_never_measures_again(tmp_path, monkeypatch):
    data = make_images(tmp_path / "imgs", n=16)
    monkeypatch.setattr(B, "steps_for", lambda budget_s, step_s: 6)
    cfg = _cfg(data, tmp_path / "r", "run.max_steps=4")          # stop early: a partial run with checkpoints
    train(cfg)
    assert json.loads((tmp_path / "r" / "budget.json").read_text())["total_steps"] == 6

    def boom(loop):
        raise AssertionError("a resumed budget run must not calibrate again")
    monkeypatch.setattr(L, "calibrate", boom)
    train(_cfg(data, tmp_path / "r"))
    assert json.loads((tmp_path / "r" / "done").read_text())["step"] == 6
    info = json.loads((tmp_path / "r" / "run_info.json").read_text())
    assert info["start_step"] == 4 and info["total_steps"] == 6


def test_budget_smaller_than_warmup_is_refused_naming_the_key(tmp_path, monkeypatch):
    data = make_images(tmp_path / "imgs", n=16)
    monkeypatch.setattr(B, "steps_for", lambda budget_s, step_s: 1)
    with pytest.raises(ConfigError, match=r"schedule\.warmup_epochs.*budget_s=1000\.0 buys 1 steps"):
        train(_cfg(data, tmp_path / "w"))
    with pytest.raises(ConfigError, match=r"schedule\.budget_s"):
        _cfg(data, tmp_path / "x", "schedule.budget_s=-5")
