"""MUST-SHOW: one writer per run folder. A second trainer on a busy folder fails at once naming the first's PID and
the first finishes unharmed; the lock dies with its holder (SIGKILL included), also when a forked DataLoader worker
outlives it for a moment; RunLock semantics by hand."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from faultutil import logged_steps, start, wait_until
from imgfactory import child_env, make_images, train_cmd
from pretrain.runlock import RunLock, RunLockError, describe_holder, holder


def test_second_trainer_fails_naming_the_first_and_the_first_finishes(tmp_path):
    data = make_images(tmp_path / "imgs", n=16)
    run = tmp_path / "run"
    args = [f"data.root={data}", "run.max_steps=25", "run.log_interval=1", "run.image_interval=0",
            "run.tensorboard=false", "run.ckpt_interval=5", "run.batch_per_gpu=4", "data.num_workers=1",
            f"run.out_dir={run}"]
    first = start(train_cmd("tiny_r18.yaml", *args))
    wait_until(lambda: max(logged_steps(run), default=0) >= 2, first, what="the first run's step 2")
    second = subprocess.run(train_cmd("tiny_r18.yaml", *args, "run.max_steps=30"), env=child_env(),
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert f"is in use by PID {first.pid}" in second.stderr and "one writer per run folder" in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert logged_steps(run) == list(range(1, 26)) and (run / "done").is_file()   # no interleaved writer


def test_lock_by_hand(tmp_path):
    run = tmp_path / "r"
    with RunLock(run, what="test") as lock:
        assert lock.held and holder(run)["pid"] == os.getpid()
        with pytest.raises(RunLockError, match=rf"in use by PID {os.getpid()} on .* one writer per run folder"):
            RunLock(run).acquire()
    assert holder(run) is None and describe_holder(run) is None
    code = ("import sys, time; from pretrain.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "import os; pid = os.fork()\n"
            "if pid == 0: time.sleep(30)\n"          # a forked child (as a DataLoader worker) ...
            "else: print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], env=child_env(), stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "locked"
    assert holder(run)["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)          # ... the holder dies: the lock goes with it, the child keeps no copy
    proc.wait(10)
    wait_until(lambda: holder(run) is None, timeout=10, what="the lock's release")
    with RunLock(run):
        pass
    os.killpg(proc.pid, signal.SIGKILL)
