"""submitit through slurm.submit on the real local SLURM cluster: results, ranks, arrays, failures."""
from __future__ import annotations

import socket

import pytest
import submitit

from slurm.jobs import JobFailed, wait_results
from slurm.submit import parse_args, submit_jobs
from slurm_probe import ProbeTask

pytestmark = pytest.mark.slurm
HOST = socket.gethostname().split(".")[0]   # the node's name, as slurm.conf has it


def _args(cluster, name, entry_argv, *opts):
    args = parse_args(["pretrain", "--job-dir", str(cluster.job_dir(name) / "%j"), "--time", "5",
                       "--cpus-per-task", "1", *opts, "--", *entry_argv])
    return args


def test_job_returns_result_on_every_rank(slurm_cluster):
    # 2 fake GPUs -> 2 ranks (one per GPU), each sees both GPUs (CUDA_VISIBLE_DEVICES from GRES, not narrowed)
    args = _args(slurm_cluster, "ranks", ["env", "--flag", "a=1"], "--gpus-per-node", "2")
    [job] = submit_jobs(ProbeTask, args)
    results = job.results()
    assert len(results) == 2
    envs = [r["env"] for r in results]
    assert [r["argv"] for r in results] == [["env", "--flag", "a=1"]] * 2
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1"]
    assert [e["SLURM_PROCID"] for e in envs] == ["0", "1"]
    assert all(e["WORLD_SIZE"] == "2" and e["LOCAL_WORLD_SIZE"] == "2" for e in envs)
    assert all(e["SLURM_JOB_ID"] == job.job_id for e in envs)
    assert all(e["MASTER_ADDR"] == HOST for e in envs)
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"] and 20000 <= int(envs[0]["MASTER_PORT"]) <= 60000
    assert all(e["CUDA_VISIBLE_DEVICES"] == "0,1" for e in envs)
    assert all(e["SLURM_JOB_NAME"] == "a2mim-ProbeTask" and e["SLURM_CPUS_PER_TASK"] == "1" for e in envs)
    assert slurm_cluster.sacct(job.job_id) == ("COMPLETED", "0:0")
    sbatch = job.paths.submission_file.read_text()
    assert "#SBATCH --requeue" in sbatch and "#SBATCH --signal=USR2@120" in sbatch
    assert "#SBATCH --gpus-per-node=2" in sbatch and "#SBATCH --ntasks-per-node=2" in sbatch


def test_job_array_returns_all_results(slurm_cluster):
    args = _args(slurm_cluster, "array", ["env", "out=runs/{sweep}"], "--sweep", "lr=1,2,3")
    jobs = submit_jobs(ProbeTask, args)
    assert len(jobs) == 3
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(3)]
    results = wait_results(jobs)
    assert [r["argv"] for r in results] == [["env", f"out=runs/lr-{v}", f"lr={v}"] for v in (1, 2, 3)]
    assert [r["env"]["SLURM_ARRAY_TASK_ID"] for r in results] == ["0", "1", "2"]
    assert {r["env"]["SLURM_ARRAY_JOB_ID"] for r in results} == {array_id}


def test_failing_jobs_surface_exit_code_exception_and_stderr(slurm_cluster):
    [raising] = submit_jobs(ProbeTask, _args(slurm_cluster, "raise", ["raise", "boom-17"]))
    [exiting] = submit_jobs(ProbeTask, _args(slurm_cluster, "exit", ["exit", "3"]))

    # submitit's own error carries the exception and its traceback
    with pytest.raises(submitit.core.utils.FailedJobError) as exc:
        raising.result()
    assert "ValueError: probe failure boom-17" in str(exc.value)
    assert "slurm_probe.py" in str(exc.value)   # the traceback names the failing file

    with pytest.raises(JobFailed) as failed:
        wait_results([raising])
    [f] = failed.value.failures
    assert (f["job_id"], f["task"], f["state"], f["exit_code"]) == (raising.job_id, 0, "FAILED", "1:0")
    assert "probe failure boom-17" in f["error"]
    tail = f["stderr_tail"].splitlines()
    assert len(tail) == 20   # the last 20 lines: the traceback's end, then srun's report of the exit status
    assert tail[-2:] == ["ValueError: probe failure boom-17", f"srun: error: {HOST}: task 0: Exited with exit code 1"]
    assert f"job {raising.job_id} task 0: FAILED, exit code 1:0" in str(failed.value)

    # a process that dies without a result: no exception object, but the exit status and stderr
    with pytest.raises(JobFailed) as failed:
        wait_results([exiting])
    [f] = failed.value.failures
    assert (f["state"], f["exit_code"]) == ("FAILED", "3:0")
    assert f["error"].startswith("UncompletedJobError")
    assert f["stderr_tail"].splitlines()[-3:] == ["probe: stderr line one", "probe: failing on purpose with 3",
                                                  f"srun: error: {HOST}: task 0: Exited with exit code 3"]
    assert "probe: failing on purpose with 3" in str(failed.value)


def test_suite_step_executor_runs_a_benchmark_step(slurm_cluster):
    # benchmarks/run_all.py --slurm: a step is `python -m MODULE ARGS` as one job; the cluster options come from
    # the shared group inside run_all's own parser
    import argparse
    from types import SimpleNamespace

    from slurm.options import add_cluster_args
    from slurm.submit import SuiteStepExecutor

    p = argparse.ArgumentParser()
    add_cluster_args(p)
    ex = SuiteStepExecutor(p.parse_args(["--cpus-per-task", "1", "--time", "5"]), slurm_cluster.job_dir("suite"))
    assert ex.run(SimpleNamespace(kind="probe", argv=["slurm_probe", "env"])) == (True, "")
    ok, detail = ex.run(SimpleNamespace(kind="probe", argv=["slurm_probe", "raise", "step-9"]))
    assert not ok
    assert detail.splitlines()[0].endswith("task 0: FAILED, exit code 1:0")
    assert "ValueError: probe failure step-9" in detail
