"""slurm/transfer.sbatch on the real local SLURM: each kind reaches its entry point with the right launch.

The entry points are asked for --help (a full transfer run is tested in tests/transfer): mmdet runs one rank per
GPU with `--launcher pytorch` added; detectron2 runs one process per node given detectron2's own launch flags;
an unknown kind fails with the usage line.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from slurm_testutil import REPO, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def _sbatch(root, name, *args) -> str:
    cmd = ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=2", "--cpus-per-task=1",
           "--partition=debug", "--time=10", f"--output={root}/{name}-%j.out", "slurm/transfer.sbatch", *args]
    out = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def test_transfer_sbatch_launches_each_kind(slurm_cluster, tmp_path):
    jobs = {"mmdet": _sbatch(tmp_path, "mmdet", "mmdet", "--help"),
            "detectron2": _sbatch(tmp_path, "detectron2", "detectron2", "--help"),
            "bogus": _sbatch(tmp_path, "bogus", "bogus", "x")}
    for name, jid in jobs.items():
        wait_until(lambda: slurm_cluster.sacct(jid)[0].startswith(FINAL), 600, f"{name} job {jid}", interval=1)
    logs = {name: (tmp_path / f"{name}-{jid}.out").read_text() for name, jid in jobs.items()}

    assert slurm_cluster.sacct(jobs["mmdet"]) == ("COMPLETED", "0:0")
    for rank in (0, 1):   # two ranks, each told to initialise torch.distributed from the env
        assert f"[slurm.tasks] rank {rank}/2: transfer.mmdet.train.main(['--help', '--launcher', 'pytorch'])" \
            in logs["mmdet"]
    assert logs["mmdet"].count("usage: python -m transfer.mmdet.train") == 2

    assert slurm_cluster.sacct(jobs["detectron2"]) == ("COMPLETED", "0:0")
    port = 15000 + int(jobs["detectron2"]) % 20000
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    assert (f"[slurm.tasks] rank 0/1: transfer.detectron2.train.main(['--help', '--num-gpus', '2', "
            f"'--num-machines', '1', '--machine-rank', '0', '--dist-url', 'tcp://{host}:{port}'])") \
        in logs["detectron2"]
    assert logs["detectron2"].count("usage: python -m transfer.detectron2.train") == 1   # one process per node

    assert slurm_cluster.sacct(jobs["bogus"]) == ("FAILED", "2:0")
    assert "usage: sbatch slurm/transfer.sbatch {mmdet|mmseg|detectron2|classification} ARGS... (got 'bogus')" \
        in logs["bogus"]
