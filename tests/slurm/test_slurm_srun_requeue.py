"""slurm/srun_requeue.sh on the real local SLURM: per-rank env, USR1 forwarding, and the requeue after the grace
period even when the ranks ignore the signal (as NCCL-holding processes may)."""
from __future__ import annotations

import subprocess

import pytest
from slurm_testutil import REPO, wait_until

pytestmark = pytest.mark.slurm

SCRIPT = """#!/bin/bash
source "$SLURM_SUBMIT_DIR/slurm/srun_requeue.sh"
REQUEUE_GRACE_S=3 run_ranks_with_requeue bash -c '
  trap "echo rank $RANK ignores USR1" USR1
  echo "rank $RANK/$WORLD_SIZE local $LOCAL_RANK/$LOCAL_WORLD_SIZE master $MASTER_ADDR:$MASTER_PORT"
  for i in $(seq 600); do sleep 0.1; done'
"""


def test_usr1_is_forwarded_and_the_job_requeued_after_the_grace_period(slurm_cluster, tmp_path):
    script = tmp_path / "ignore_usr1.sbatch"
    script.write_text(SCRIPT)
    log = tmp_path / "out.log"
    jid = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--cpus-per-task=1", "--requeue",
                          "--open-mode=append", f"--output={log}", str(script)],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    try:
        ranks = [f"rank {r}/2 local {r}/2 master {host}:{15000 + int(jid) % 20000}" for r in (0, 1)]
        wait_until(lambda: log.is_file() and all(r in log.read_text() for r in ranks), 60, "both ranks to start")
        subprocess.run(["scancel", "--batch", "--signal=USR1", jid], check=True)
        wait_until(lambda: "Restarts=1" in subprocess.run(["scontrol", "show", "job", "-o", jid],
                                                          capture_output=True, text=True).stdout,
                   60, f"job {jid} to be requeued")
        text = log.read_text()
        assert "rank 0 ignores USR1" in text and "rank 1 ignores USR1" in text
        assert "ranks still running 3 s after USR1" in text
        assert f"scontrol requeue {jid}" in text
    finally:
        subprocess.run(["scancel", jid], check=False)
