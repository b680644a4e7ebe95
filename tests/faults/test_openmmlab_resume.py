"""MUST-SHOW: mmdet and mmseg runs resume from their own checkpoints (read with weights_only=True) to the
same final weights as an uninterrupted run: interrupted by SIGTERM (a checkpoint at the end of the iteration,
exit 75, no iteration redone) and by SIGKILL after a periodic checkpoint. Real `python -m transfer.<fw>.train`
processes, the R50 configs shrunk by --tiny, checkpoints every iteration through --cfg-options (applied after
--tiny, so they hold)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain.checkpoint import load_checkpoint

from faultutil import logged_steps, start, transfer_fixtures, wait_until
from imgfactory import child_env

pytestmark = [pytest.mark.slow, pytest.mark.openmmlab]
REPO = Path(__file__).resolve().parents[2]
ITERS = 6
CONFIGS = {"mmdet": "transfer/mmdet/configs/mask_rcnn_r50_fpn_1x.py",
           "mmseg": "transfer/mmseg/configs/upernet_r50_160k.py"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    fx = transfer_fixtures()
    tmp = tmp_path_factory.mktemp("openmmlab_resume")
    weights = fx.export(tmp, "resnet50")
    return {"mmdet": fx.make_coco(tmp / "coco", 4, 1), "mmseg": fx.make_ade(tmp / "ade", 4, 1).parent}, weights


def _cmd(fw, data, weights, work):
    return [sys.executable, "-m", f"transfer.{fw}.train", str(REPO / CONFIGS[fw]), "--weights", str(weights),
            "--work-dir", str(work), "--data-root", str(data), "--tiny", "64", "--iters", str(ITERS),
            "--cfg-options", "default_hooks.checkpoint.interval=1", "default_hooks.checkpoint.by_epoch=False",
            "default_hooks.checkpoint.max_keep_ckpts=-1"]


def _final(work: Path) -> dict:
    return load_checkpoint(work / f"iter_{ITERS}.pth")["state_dict"]


@pytest.fixture(scope="module")
def straight(inputs, tmp_path_factory):
    data, weights = inputs
    out = {}
    for fw in CONFIGS:
        work = tmp_path_factory.mktemp(f"straight_{fw}")
        subprocess.run(_cmd(fw, data[fw], weights, work), env=child_env(), check=True, capture_output=True, cwd=REPO)
        out[fw] = _final(work)
    return out


@pytest.mark.parametrize("fw,sig", [("mmdet", signal.SIGTERM), ("mmseg", signal.SIGTERM), ("mmseg", signal.SIGKILL)])
def test_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, inputs, straight, fw, sig):
    data, weights = inputs
    work = tmp_path / "run"
    proc = start(_cmd(fw, data[fw], weights, work), cwd=REPO)
    wait_until(lambda: (work / "iter_2.pth").is_file(), proc, what="the checkpoint of iteration 2")
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=300)
    if sig == signal.SIGTERM:
        assert proc.returncode == 75 and "SIGTERM: stopped at step" in err and "Traceback" not in err, err[-3000:]
    done = logged_steps(work, "iter")
    assert not (work / "result.json").exists() and done and max(done) < ITERS
    k = int((work / "last_checkpoint").read_text().strip().rsplit("iter_", 1)[1].split(".")[0])
    res = subprocess.run(_cmd(fw, data[fw], weights, work), env=child_env(), capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"Advance dataloader {k} steps" in res.stdout + res.stderr
    iters = logged_steps(work, "iter")
    if sig == signal.SIGTERM:           # the signal's checkpoint is the last iteration run: none is redone
        assert iters == list(range(1, ITERS + 1))
    a, b = _final(work), straight[fw]
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert (work / "result.json").is_file()
