"""The tiny pre-training preset on the real local SLURM: sbatch to completion, and requeues that resume exactly.

Four runs of the same config go out together (the node advertises 8 CPUs, so they overlap):
  plain   sbatch slurm/pretrain.sbatch, never interrupted: the reference
  requeue sbatch, `scontrol requeue` once its first checkpoint exists (the job is killed and restarts)
  signal  sbatch, USR1 to the batch shell once its first checkpoint exists: what `#SBATCH --signal=B:USR1@120`
          delivers before the time limit; the script forwards it to the ranks and requeues the job itself
  submitit  python -m slurm.submit's PretrainTask, USR2 to its ranks (submitit's time-limit signal): checkpoint()
          returns a fresh task, submitit requeues the job
Each interrupted run must end with bit-identical model and optimizer tensors (and exported backbone) to `plain`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from slurm_testutil import REPO, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CONFIG = "pretrain/configs/tiny_r18.yaml"
if not (REPO / "pretrain" / "train.py").is_file() or not (REPO / CONFIG).is_file():
    pytest.skip("pretrain/train.py or pretrain/configs/tiny_r18.yaml does not exist yet", allow_module_level=True)

STEPS, CKPT_EVERY = 8, 2
OVERRIDES = [f"run.max_steps={STEPS}", f"run.ckpt_interval={CKPT_EVERY}", "run.keep_last=1",
             "run.tensorboard=false", "run.image_interval=0"]
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _images(folder: Path, n: int = 16) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def _sbatch(cluster, root: Path, name: str, images: Path) -> str:
    """Submit slurm/pretrain.sbatch as a user would, with the cluster-specific lines overridden."""
    env = dict(os.environ, PYTHON=sys.executable)
    cmd = ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=0", "--cpus-per-task=1",
           "--partition=debug", "--time=10", f"--job-name={name}", f"--output={root}/{name}-%j.out",
           "slurm/pretrain.sbatch", CONFIG, f"data.root={images}", f"run.out_dir={root / name}", *OVERRIDES]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"sbatch failed: {out.stderr}"
    return out.stdout.strip().split(";")[0]


def _first_checkpoint(run: Path) -> bool:
    return (run / "checkpoints" / "last.pt").is_file()


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory):
    """Submit the four runs, interrupt three of them mid-training, return their job ids and folders."""
    from slurm.submit import parse_args, submit_jobs
    from slurm.tasks import PretrainTask

    root = tmp_path_factory.mktemp("pretrain-runs")
    images = _images(root / "images")
    old_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"   # every run the same thread count (and less contention on 2 cores)
    try:
        ids = {name: _sbatch(slurm_cluster, root, name, images) for name in ("plain", "requeue", "signal")}
        args = parse_args(["pretrain", "--job-dir", str(slurm_cluster.job_dir("pretrain") / "%j"), "--time", "10",
                           "--cpus-per-task", "1", "--config", CONFIG, f"data.root={images}",
                           f"run.out_dir={root / 'submitit'}", *OVERRIDES])
        [job] = submit_jobs(PretrainTask, args)
    finally:
        if old_threads is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = old_threads
    ids["submitit"] = job.job_id
    interrupt = {"requeue": ["scontrol", "requeue", ids["requeue"]],
                 "signal": ["scancel", "--batch", "--signal=USR1", ids["signal"]],
                 "submitit": ["scancel", "--signal=USR2", ids["submitit"]]}
    pending = dict(interrupt)
    while pending:   # interrupt each run right after its first checkpoint, long before its last step
        ready = wait_until(lambda: [n for n in pending if _first_checkpoint(root / n)], 600,
                           f"a first checkpoint of {sorted(pending)}")
        for name in ready:
            assert not (root / name / "done").exists(), f"{name} finished before it could be interrupted"
            subprocess.run(pending.pop(name), check=True, timeout=60)
    for name, jid in ids.items():
        if name != "submitit":
            wait_until(lambda: slurm_cluster.sacct(jid)[0].startswith(FINAL), 900, f"sbatch job {name} ({jid})",
                       interval=1)
    assert job.result() == 0   # pretrain.train.main's exit status, through the requeued submitit job
    yield {"root": root, "ids": ids, "job": job}
    for name in ids:   # ~150 MB per checkpoint: keep the logs, drop the tensors
        shutil.rmtree(root / name / "checkpoints", ignore_errors=True)


def _final(run: Path) -> dict:
    from pretrain.checkpoint import load_checkpoint

    return load_checkpoint(run / "checkpoints" / "last.pt")


def _assert_same_final_state(run: Path, ref: Path) -> None:
    from pretrain.export_format import read_backbone

    a, b = _final(run), _final(ref)
    assert a["step"] == b["step"] == STEPS
    assert a["model"].keys() == b["model"].keys()
    assert [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])] == []
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    for p in sa:
        assert sa[p].keys() == sb[p].keys()
        assert all(torch.equal(sa[p][k], sb[p][k]) for k in sa[p]), f"optimizer state of param {p} differs"
    wa, _ = read_backbone(run / "backbone.safetensors")
    wb, _ = read_backbone(ref / "backbone.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _resumed(run: Path) -> int:
    """The step the run's last start resumed from (0 for a run that never restarted)."""
    info = json.loads((run / "run_info.json").read_text())
    return info["start_step"] if info["resumed_from"] else 0


def test_sbatch_tiny_preset_runs_to_completion(runs, slurm_cluster):
    run = runs["root"] / "plain"
    assert slurm_cluster.sacct(runs["ids"]["plain"]) == ("COMPLETED", "0:0")
    assert json.loads((run / "done").read_text())["step"] == STEPS
    assert _resumed(run) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == STEPS
    assert json.loads((run / "result.json").read_text())["task"] == "pretrain"


@pytest.mark.parametrize("name", ["requeue", "signal"])
def test_sbatch_requeued_run_ends_with_the_same_weights(runs, slurm_cluster, name):
    run, jid = runs["root"] / name, runs["ids"][name]
    assert slurm_cluster.sacct(jid) == ("COMPLETED", "0:0")
    assert CKPT_EVERY <= _resumed(run) < STEPS    # it did restart mid-training, from a checkpoint
    log = (runs["root"] / f"{name}-{jid}.out").read_text()
    assert f"job {jid} run 1 on" in log and f"job {jid} run 2 on" in log
    if name == "signal":
        assert "USR1: time limit near; forwarding to the ranks, then requeue" in log
        assert f"scontrol requeue {jid}" in log
    _assert_same_final_state(run, runs["root"] / "plain")


def test_submitit_timeout_signal_requeues_and_ends_with_the_same_weights(runs, slurm_cluster):
    run, job = runs["root"] / "submitit", runs["job"]
    assert slurm_cluster.sacct(job.job_id) == ("COMPLETED", "0:0")
    assert CKPT_EVERY <= _resumed(run) < STEPS
    assert "[slurm.tasks] requeueing PretrainTask(" in job.stderr()   # our checkpoint() ran on the signal
    _assert_same_final_state(run, runs["root"] / "plain")
