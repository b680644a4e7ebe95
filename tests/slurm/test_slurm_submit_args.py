"""slurm.submit without a cluster: option parsing, argv plumbing, sweeps, --dry-run, tasks, the local executor."""
from __future__ import annotations

import argparse
import os
import sys

import pytest

from slurm.jobs import JobFailed, wait_results
from slurm.options import add_cluster_args, check_mem, parse_time_minutes, slurm_parameters
from slurm.submit import expand_sweep, main, make_tasks, parse_args, submit_jobs
from slurm.tasks import Detectron2Task, EntryPointTask, MMDetTask, PretrainTask
from slurm_testutil import HERE


@pytest.mark.parametrize("text, minutes", [("90", 90), ("90:30", 91), ("0:59", 1), ("2:00:00", 120),
                                           ("3-00:00:00", 4320), ("1-12", 2160), ("1-12:30", 2190),
                                           ("0-00:00:01", 1)])
def test_time_formats_of_sbatch(text, minutes):
    assert parse_time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["abc", "0", "1:2:3:4", "1h", "-5", "0:00"])
def test_bad_time_is_refused_naming_the_option(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"--time"):
        parse_time_minutes(text)


def test_mem_as_sbatch_takes_it():
    assert [check_mem(x) for x in ("64g", "500M", "4000", "2T")] == ["64G", "500M", "4000", "2T"]
    for bad in ("1.5G", "64GB", "lots"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"--mem"):
            check_mem(bad)


def test_cluster_options_and_entry_argv_are_split_in_order():
    args = parse_args(["mmdet", "cfg.py", "--weights", "w.safetensors", "--nodes", "2", "--cfg-options", "a=1",
                       "--gpus-per-node", "8", "--", "--time", "x"])
    assert (args.task, args.nodes, args.gpus_per_node, args.time) == ("mmdet", 2, 8, 2 * 24 * 60)
    assert args.entry_argv == ["cfg.py", "--weights", "w.safetensors", "--cfg-options", "a=1", "--time", "x"]


def test_bad_cluster_options_exit_with_a_message(capsys):
    for argv, msg in ((["pretrain", "--nodes", "0"], "--nodes"), (["pretrain", "--mem", "1.5G"], "--mem"),
                      (["pretrain", "--local", "--nodes", "2"], "--nodes must be 1"),
                      (["nosuchtask"], "invalid choice")):
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err


def test_shared_group_in_another_launcher():
    # benchmarks/run_all.py adds the same group next to its own --dry-run / --slurm flags
    p = argparse.ArgumentParser()
    p.add_argument("--dry-run", action="store_true")
    add_cluster_args(p)
    args = p.parse_args(["--gpus-per-node", "4", "--time", "1:00:00", "--partition", "p", "--dry-run"])
    params = slurm_parameters(args, "a2mim-step")
    assert params == {"job_name": "a2mim-step", "time": 60, "nodes": 1, "ntasks_per_node": 4, "gpus_per_node": 4,
                      "cpus_per_task": 8, "partition": "p", "signal_delay_s": 120,
                      "additional_parameters": {"requeue": True}}


def test_one_process_per_node_for_detectron2():
    args = parse_args(["detectron2", "--gpus-per-node", "8", "--cpus-per-task", "10", "--nodes", "2"])
    p = slurm_parameters(args, "x", per_node=Detectron2Task.per_node)
    assert (p["ntasks_per_node"], p["cpus_per_task"], p["gpus_per_node"], p["nodes"]) == (1, 80, 8, 2)
    t = Detectron2Task(["--config", "r50_c4_1x"])
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
           "MASTER_ADDR": "node01", "MASTER_PORT": "23456"}
    assert t.launch_args(env) == ["--num-gpus", "8", "--num-machines", "2", "--machine-rank", "1",
                                  "--dist-url", "tcp://node01:23456"]
    assert t.launch_args({"CUDA_VISIBLE_DEVICES": "0"}) == []                 # one GPU, one node: in-process
    assert Detectron2Task(["--num-machines", "3"]).launch_args(env) == []     # the user's own launch flags win
    assert MMDetTask(["cfg.py"]).launch_args({"WORLD_SIZE": "16"}) == ["--launcher", "pytorch"]
    assert MMDetTask(["cfg.py"]).launch_args({"WORLD_SIZE": "1"}) == []
    assert MMDetTask(["cfg.py", "--launcher", "slurm"]).launch_args({"WORLD_SIZE": "16"}) == []


def test_sweep_is_a_cartesian_product_with_placeholders():
    jobs = expand_sweep(["--config", "c.yaml", "run.out_dir=runs/{sweep}", "tag={i}"],
                        ["optim.lr=1e-4,3e-4", "run.seed=0,1"])
    assert jobs == [
        ["--config", "c.yaml", "run.out_dir=runs/optim.lr-1e-4_run.seed-0", "tag=0", "optim.lr=1e-4", "run.seed=0"],
        ["--config", "c.yaml", "run.out_dir=runs/optim.lr-1e-4_run.seed-1", "tag=1", "optim.lr=1e-4", "run.seed=1"],
        ["--config", "c.yaml", "run.out_dir=runs/optim.lr-3e-4_run.seed-0", "tag=2", "optim.lr=3e-4", "run.seed=0"],
        ["--config", "c.yaml", "run.out_dir=runs/optim.lr-3e-4_run.seed-1", "tag=3", "optim.lr=3e-4", "run.seed=1"]]
    assert expand_sweep(["a"], []) == [["a"]]
    assert expand_sweep(["w={sweep}"], ["--weights=a/b.st,c.st"]) == [["w=weights-a-b.st", "--weights=a/b.st"],
                                                                       ["w=weights-c.st", "--weights=c.st"]]


def test_sweeps_that_would_collide_are_refused():
    args = parse_args(["pretrain", "run.out_dir=runs/x", "--sweep", "optim.lr=1,2"])
    with pytest.raises(ValueError, match=r"share the run folder run.out_dir=runs/x.*\{i\} or \{sweep\}"):
        make_tasks(PretrainTask, args)
    with pytest.raises(ValueError, match="identical jobs"):
        make_tasks(PretrainTask, parse_args(["pretrain", "--sweep", "a=1,1"]))
    with pytest.raises(ValueError, match=r"--sweep 'lr': expected KEY=V1,V2"):
        make_tasks(PretrainTask, parse_args(["pretrain", "--sweep", "lr"]))


def test_cli_reports_bad_sweep_without_traceback(capsys):
    assert main(["pretrain", "--sweep", "x=", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("slurm.submit: error: --sweep 'x=': expected KEY=V1,V2")


def test_dry_run_prints_the_sbatch_file_and_commands_and_submits_nothing(tmp_path, capsys):
    job_dir = tmp_path / "jobs"
    rc = main(["pretrain", "--config", "pretrain/configs/a2mim_r50_ep300.yaml", "run.out_dir=runs/r50",
               "--nodes", "2", "--gpus-per-node", "8", "--cpus-per-task", "10", "--mem", "480G",
               "--partition", "gpu", "--account", "acc", "--qos", "high", "--constraint", "volta32gb",
               "--exclude", "node[01-02]", "--comment", "a2mim r50", "--time", "3-00:00:00",
               "--job-dir", str(job_dir / "%j"), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and not job_dir.exists()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --cpus-per-task=10", "#SBATCH --mem=480G", "#SBATCH --partition=gpu",
                 "#SBATCH --account=acc", "#SBATCH --qos=high", "#SBATCH --constraint=volta32gb",
                 "#SBATCH --exclude='node[01-02]'", "#SBATCH --comment='a2mim r50'", "#SBATCH --time=4320",
                 "#SBATCH --signal=USR2@120", "#SBATCH --requeue", "#SBATCH --job-name=a2mim-pretrain",
                 f"#SBATCH --output={job_dir}/%j/%j_0_log.out"):
        assert line in out.splitlines(), line
    assert "--array" not in out
    assert f"srun --unbuffered --output {job_dir}/%j/%j_%t_log.out" in out
    assert (f"# job 0: {sys.executable} -m pretrain.train --config pretrain/configs/a2mim_r50_ep300.yaml "
            "run.out_dir=runs/r50") in out


def test_dry_run_of_a_sweep_is_one_job_array(tmp_path, capsys):
    assert main(["mmdet", "cfg.py", "--work-dir=w/{i}", "--sweep=--weights=a.st,b.st,c.st",
                 "--array-parallelism", "2", "--job-dir", str(tmp_path / "%j"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --array=0-2%2" in out.splitlines()
    assert [x.split(" -m ")[1] for x in out.splitlines() if x.startswith("# job ")] == [
        f"transfer.mmdet.train cfg.py --work-dir=w/{i} --weights={w}.st" for i, w in enumerate("abc")]


def test_checkpoint_requeues_a_fresh_copy():
    task = PretrainTask(["--config", "c.yaml", "run.out_dir=r"])
    ds = task.checkpoint()
    assert type(ds.function) is PretrainTask and ds.function is not task
    assert ds.function.args == task.args and ds.args == () and ds.kwargs == {}
    assert task.out_dir() == "r" and PretrainTask(["run.out_dir=a", "run.out_dir=b"]).out_dir() == "b"


def test_missing_entry_point_is_refused_before_submitting(tmp_path):
    class NoSuchTask(EntryPointTask):
        module = "transfer.no_such_framework.train"
    args = parse_args(["pretrain", "--local", "--job-dir", str(tmp_path / "%j")])
    with pytest.raises(ModuleNotFoundError, match="transfer.no_such_framework.train"):
        submit_jobs(NoSuchTask, args)
    assert list(tmp_path.iterdir()) == []


def test_local_executor_runs_the_task_and_reports_failures(tmp_path, monkeypatch):
    from slurm_probe import ProbeTask

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("RANK", "5")   # a stale value from the submitting shell is overwritten in the job
    ok = submit_jobs(ProbeTask, parse_args(["pretrain", "--local", "--job-dir", str(tmp_path / "a" / "%j"),
                                            "--", "env", "x=1"]))
    bad = submit_jobs(ProbeTask, parse_args(["pretrain", "--local", "--job-dir", str(tmp_path / "b" / "%j"),
                                             "--", "return", "3"]))
    [result] = wait_results(ok)
    assert result["argv"] == ["env", "x=1"]
    assert {k: result["env"][k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")} == {
        "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    with pytest.raises(JobFailed, match=r"slurm_probe.main\(\['return', '3'\]\) returned exit status 3"):
        wait_results(bad)
