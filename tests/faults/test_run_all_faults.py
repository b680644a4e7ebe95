"""MUST-SHOW (run_all): each step runs in its own process group and is stopped with run_all (SIGTERM to run_all:
the step saves and exits, nothing is left running); after SIGKILL of run_all the orphaned step still holds its
folder's lock and the next run_all refuses to run beside it, naming its PID; a done step whose command changed is
refused as 'made from other inputs' until --force-new re-runs it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faultutil import logged_steps, start, wait_until
from imgfactory import child_env, make_images
from pretrain.runlock import holder

REPO = Path(__file__).resolve().parents[2]


def _suite(tmp_path: Path, data: Path, steps: int, extra: str = "") -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(f"""name: faults
out: {tmp_path / 'runs'}
data: {{root: {data}}}
pretrain:
  a:
    config: pretrain/configs/tiny_r18.yaml
    kind: cnn
    overrides: ["data.root={data}", "run.max_steps={steps}", "run.log_interval=1", "run.image_interval=0",
                "run.tensorboard=false", "data.num_workers=0", "run.batch_per_gpu=4", "run.ckpt_interval=1000",
                "schedule.epochs=1000"{extra}]
tasks: {{}}
""")
    return p


def _run_all(suite: Path, *args):
    return [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--suite", str(suite), "--jobs", "1", *args]


@pytest.fixture
def data(tmp_path):
    return make_images(tmp_path / "imgs", n=8)


def test_sigterm_to_run_all_stops_its_step_after_a_checkpoint(tmp_path, data):
    suite = _suite(tmp_path, data, 400)
    run = tmp_path / "runs" / "pretrain" / "a"
    proc = start(_run_all(suite), cwd=REPO)
    wait_until(lambda: max(logged_steps(run), default=0) >= 2, proc, what="the step's step 2")
    os.kill(proc.pid, signal.SIGTERM)                  # run_all only (not its group): it must stop its step itself
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:] + err[-2000:]
    assert "run_all stopped by SIGTERM" in err and holder(run) is None     # nothing left running in the folder
    assert "SIGTERM: stopped at step" in (run / "pretrain.log").read_text()
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "done").exists()


def test_after_sigkill_of_run_all_the_orphan_is_found_through_its_lock(tmp_path, data):
    suite = _suite(tmp_path, data, 400)
    run = tmp_path / "runs" / "pretrain" / "a"
    proc = start(_run_all(suite), cwd=REPO)
    wait_until(lambda: max(logged_steps(run), default=0) >= 2, proc, what="the step's step 2")
    proc.kill()                                        # SIGKILL: no handler runs, the step lives on in its session
    proc.wait(30)
    orphan = holder(run)
    try:
        assert orphan is not None and orphan["pid"] != proc.pid
        again = subprocess.run(_run_all(suite), env=child_env(), capture_output=True, text=True, cwd=REPO,
                               timeout=120)
        assert again.returncode == 1
        assert f"is in use by PID {orphan['pid']}" in again.stdout and "orphan of an earlier run_all" in again.stdout
        steps = logged_steps(run)
        assert steps == list(range(1, len(steps) + 1))          # nobody wrote beside it
    finally:
        os.kill(orphan["pid"], signal.SIGKILL)


def test_a_done_step_with_a_changed_command_is_refused_until_force_new(tmp_path, data):
    suite = _suite(tmp_path, data, 2)
    run = tmp_path / "runs" / "pretrain" / "a"
    ok = subprocess.run(_run_all(suite), env=child_env(), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert ok.returncode == 0, ok.stdout[-2000:]
    again = subprocess.run(_run_all(suite), env=child_env(), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "pretrain/a: done already, skipped" in again.stdout
    changed = _suite(tmp_path, data, 2, extra=', "optim.base_lr=1e-2"')
    refused = subprocess.run(_run_all(changed), env=child_env(), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert refused.returncode == 1
    assert "made from other inputs (command changed: now ['optim.base_lr=1e-2']" in refused.stdout
    t0 = time.time()
    forced = subprocess.run(_run_all(changed, "--force-new"), env=child_env(), capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert forced.returncode == 0 and "running (--force-new)" in forced.stdout, forced.stdout[-2000:]
    assert (run / "done").stat().st_mtime > t0
    assert any(p.name.startswith("a.replaced-") for p in run.parent.iterdir())
