"""MUST-SHOW: SIGTERM / SIGUSR1 / SIGINT mid-run save a checkpoint at the next step boundary and exit (75, 75, 130,
no traceback); the resumed run redoes no step and ends equal to the uninterrupted run. The signal goes to the
whole process group (as SLURM and a terminal send it), DataLoader worker included."""
from __future__ import annotations

import os
import signal

import pytest
import torch

from faultutil import logged_steps, start, wait_until
from imgfactory import make_images, train_cmd
from pretrain.checkpoint import load_checkpoint
from pretrain.config import load_config
from pretrain.engine import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STEPS = 12


def _common(data):
    return [f"data.root={data}", f"run.max_steps={STEPS}", "run.log_interval=1", "run.image_interval=0",
            "run.tensorboard=false", "run.ckpt_interval=1000", "run.batch_per_gpu=4", "data.num_workers=1"]


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 75), (signal.SIGUSR1, 75), (signal.SIGINT, 130)])
def test_signal_saves_and_the_resume_redoes_no_step(tmp_path, sig, code):
    from imgfactory import CONFIGS
    data = make_images(tmp_path / "imgs", n=16)
    run = tmp_path / "run"
    proc = start(train_cmd("tiny_r18.yaml", *_common(data), f"run.out_dir={run}"))
    wait_until(lambda: max(logged_steps(run), default=0) >= 3, proc, what="step 3")
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and f"{sig.name}: stopped at step" in err and "run the same command again" in err
    k = load_checkpoint(run / "checkpoints" / "last.pt")["step"]      # the only checkpoint: the signal's
    assert 3 <= k < STEPS and logged_steps(run) == list(range(1, k + 1)) and not (run / "done").exists()
    cfg = load_config(CONFIGS / "tiny_r18.yaml", [*_common(data), f"run.out_dir={run}"])
    train(cfg)                                                           # resume, in this process
    assert logged_steps(run) == list(range(1, STEPS + 1))               # steps k+1.. only: none redone
    assert (run / "done").is_file()
    if sig == signal.SIGTERM:            # and it ends where the uninterrupted run ends
        train(load_config(CONFIGS / "tiny_r18.yaml", [*_common(data), f"run.out_dir={tmp_path / 'straight'}"]))
        a = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
        b = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
