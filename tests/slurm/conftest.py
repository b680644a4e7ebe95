"""The local SLURM cluster for the `slurm` tests: one per session, under a temp folder, stopped by PID.

slurm/cluster/start.sh brings up munged, mariadbd, slurmdbd, slurmctld and slurmd on free localhost ports, with
2 fake GRES GPUs and 8 advertised CPUs (tiny jobs run side by side on a 2-core machine). SLURM_CONF is exported
for the session, and tests/slurm is put on PYTHONPATH so that jobs can import the test probe (slurm_probe.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from slurm_testutil import CLUSTER_SCRIPTS, HERE, LocalCluster, free_ports


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> LocalCluster:
    base = tmp_path_factory.mktemp("slurm")
    ctld, slurmd, dbd, db = free_ports(4)
    env = dict(os.environ, SLURM_FAKE_GPUS="2", SLURM_NODE_CPUS="8", SLURM_ACCOUNTING="1", SLURM_CRED_EXPIRE="10",
               SLURM_PORT_CTLD=str(ctld), SLURM_PORT_SLURMD=str(slurmd), SLURM_PORT_DBD=str(dbd),
               SLURM_PORT_DB=str(db))
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(CLUSTER_SCRIPTS / "start.sh"), str(base)], env=env,
                          capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        subprocess.run(["bash", str(CLUSTER_SCRIPTS / "stop.sh"), str(base)], capture_output=True, timeout=120)
        pytest.fail(f"slurm/cluster/start.sh {base} failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PYTHONPATH")}
    os.environ["SLURM_CONF"] = str(base / "etc" / "slurm.conf")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), saved["PYTHONPATH"]) if p)
    try:
        yield LocalCluster(base=base, conf=base / "etc" / "slurm.conf", start_seconds=elapsed)
    finally:
        stop = subprocess.run(["bash", str(CLUSTER_SCRIPTS / "stop.sh"), str(base)],
                              capture_output=True, text=True, timeout=180)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert stop.returncode == 0, f"slurm/cluster/stop.sh failed:\n{stop.stdout}\n{stop.stderr}"
        shutil.rmtree(base / "mysql", ignore_errors=True)   # the accounting DB (~150 MB); logs and config stay
