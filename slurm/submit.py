"""Submit pre-training and transfer entry points as SLURM jobs through submitit (dinov2 `run/submit.py` style).

    python -m slurm.submit pretrain --config pretrain/configs/a2mim_r50_ep300.yaml data.root=/data/in1k \\
        run.out_dir=runs/r50 --nodes 2 --gpus-per-node 8 --partition gpu --time 3-00:00:00
    python -m slurm.submit mmdet CONFIG --weights runs/r50/backbone.safetensors --gpus-per-node 8
    python -m slurm.submit pretrain --config C.yaml run.out_dir=runs/lr{sweep} --sweep optim.lr=1e-4,3e-4 --dry-run

Every argument that is not an option below (and everything after `--`) goes to the entry point's `main(argv)`
unchanged. One rank per GPU (`--tasks-per-node` defaults to `--gpus-per-node`, at least 1); each rank gets
torch.distributed's env from submitit. On the time-limit/preemption signal the task requeues a fresh copy of itself
and the entry point resumes from its run folder (slurm/tasks.py).
Sweeps: each `--sweep KEY=V1,V2,...` multiplies the jobs (cartesian product) and appends `KEY=Vn` to each job's
argv; `{i}` (the job's index) and `{sweep}` (e.g. `optim.lr-1e-4`) in the argv are filled in per job. Several
jobs go out as one job array. A flag as KEY needs the `=` form: `--sweep=--weights=a.safetensors,b.safetensors`.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from slurm.jobs import JobFailed, wait_results
from slurm.options import add_cluster_args, local_parameters, slurm_parameters
from slurm.tasks import TASKS, EntryPointTask, ModuleTask


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m slurm.submit", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Submit an entry point of the suite as SLURM job(s).", epilog=__doc__)
    p.add_argument("task", choices=sorted(TASKS), help="the entry point to run")
    add_cluster_args(p)
    g = p.add_argument_group("launcher")
    g.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="one job per value (cartesian product over several --sweep), as a job array")
    g.add_argument("--array-parallelism", type=int, default=64, help="sweep jobs running at once")
    g.add_argument("--local", action="store_true", help="run here with submitit's LocalExecutor and wait")
    g.add_argument("--wait", action="store_true", help="wait for the SLURM jobs and print their results")
    g.add_argument("--dry-run", action="store_true", help="print what would be submitted; submit nothing")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Our options into the namespace; everything else (and all after `--`) into `args.entry_argv`."""
    parser = get_parser()
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if "--" in rest:
        rest.remove("--")
    args.entry_argv = rest
    if args.local and args.nodes != 1:
        parser.error("--local runs on this machine only: --nodes must be 1")
    if args.array_parallelism < 1:
        parser.error("--array-parallelism must be at least 1")
    return args


# ---------------------------------------------------------------- jobs and sweeps
def expand_sweep(argv: Sequence[str], sweeps: Sequence[str]) -> list[list[str]]:
    """One argv per point of the cartesian product of the sweeps, with `{i}` and `{sweep}` filled in."""
    axes = []
    for item in sweeps:
        key, eq, values = item.partition("=")
        vals = [v for v in values.split(",") if v != ""]
        if not eq or not key or not vals:
            raise ValueError(f"--sweep {item!r}: expected KEY=V1,V2,... (e.g. optim.lr=1e-4,3e-4)")
        axes.append([(key, v) for v in vals])
    out = []
    for i, point in enumerate(itertools.product(*axes)):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(f"{k.lstrip('-')}-{v}" for k, v in point) or "0")
        job = [a.replace("{i}", str(i)).replace("{sweep}", slug) for a in argv]
        out.append(job + [f"{k}={v}" for k, v in point])
    return out


def make_tasks(task_cls: type[EntryPointTask], args: argparse.Namespace) -> list[EntryPointTask]:
    """The task of every job; refuses sweeps whose jobs would be identical or share a run folder."""
    tasks = [task_cls(a) for a in expand_sweep(args.entry_argv, args.sweep)]
    if len({tuple(t.args) for t in tasks}) < len(tasks):
        raise ValueError("the sweep produces identical jobs: check the --sweep values")
    dirs = [d for d in (t.out_dir() for t in tasks) if d is not None]
    if len(tasks) > 1 and len(set(dirs)) < len(dirs):
        raise ValueError(f"the {len(tasks)} sweep jobs share the run folder {task_cls.out_dir_key}={dirs[0]}: "
                         "put {i} or {sweep} into it, e.g. run.out_dir=runs/sweep/{sweep}")
    return tasks


def make_executor(args: argparse.Namespace, job_name: str, folder: str | Path, local: bool = False,
                  array_parallelism: int | None = None, per_node: bool = False):
    """submitit AutoExecutor for SLURM (or LocalExecutor) with the cluster options of `args`."""
    import submitit

    if not local and shutil.which("sbatch") is None:
        raise RuntimeError("sbatch not found: this is not a SLURM submit host (use --local to run here, "
                           "or --dry-run to see what would be submitted)")
    ex = submitit.AutoExecutor(folder=folder, cluster="local" if local else "slurm",
                               slurm_max_num_timeout=args.max_requeues)
    if local:
        ex.update_parameters(**local_parameters(args, per_node))
    else:
        params = slurm_parameters(args, job_name, per_node)
        if array_parallelism:
            params["array_parallelism"] = array_parallelism
        ex.update_parameters(**{f"slurm_{k}": v for k, v in params.items()})
    return ex


def describe(job_name: str, tasks: Sequence[EntryPointTask], args: argparse.Namespace, per_node: bool = False) -> str:
    """What --dry-run prints: the sbatch file submitit would write, and each job's command (one per rank)."""
    from submitit.slurm.slurm import _make_sbatch_string   # the renderer SlurmExecutor itself uses

    lines = [f"# {len(tasks)} job(s) {job_name}, executor: {'local' if args.local else 'slurm'}"]
    if args.local:
        lines.append(f"# local parameters: {local_parameters(args, per_node)}")
    else:
        params: dict[str, Any] = {**slurm_parameters(args, job_name, per_node),
                                  "array_parallelism": args.array_parallelism}
        if len(tasks) > 1:
            params["map_count"] = len(tasks)
        folder = Path(args.job_dir).expanduser().absolute()   # as submitit resolves it
        submit_cmd = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
        lines.append(_make_sbatch_string(command=submit_cmd, folder=folder, **params).rstrip())
    for i, t in enumerate(tasks):
        lines.append(f"# job {i}: {shlex.join(t.command(sys.executable))}")
    return "\n".join(lines)


def submit_jobs(task_cls: type[EntryPointTask], args: argparse.Namespace) -> list:
    """Submit one job (or a job array for a sweep) of `task_cls` over `args.entry_argv`; return submitit jobs."""
    task_name = next((k for k, v in TASKS.items() if v is task_cls), task_cls.__name__)
    job_name = f"a2mim-{task_name}"
    tasks = make_tasks(task_cls, args)
    if args.dry_run:
        print(describe(job_name, tasks, args, task_cls.per_node))
        return []
    module = tasks[0].entry()[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:   # a parent package is missing
        found = False
    if not found:
        raise ModuleNotFoundError(f"entry point {module} of task {task_name!r} is not importable here")
    ex = make_executor(args, job_name, args.job_dir, local=args.local, array_parallelism=args.array_parallelism,
                       per_node=task_cls.per_node)
    return [ex.submit(tasks[0])] if len(tasks) == 1 else ex.submit_array(tasks)


class SuiteStepExecutor:
    """benchmarks/run_all.py --slurm: runs each suite step (`python -m MODULE ...`) as one SLURM job and waits."""

    def __init__(self, args: argparse.Namespace, folder: str | Path):
        self.args = args
        self.folder = Path(folder)

    def run(self, step) -> tuple[bool, str]:
        """(True, "") when the step's job succeeded, else (False, what failed: state, exit code, stderr tail)."""
        job_name = self.args.job_name or f"a2mim-{step.kind}"
        ex = make_executor(self.args, job_name, self.folder / "%j")
        job = ex.submit(ModuleTask(step.argv))
        try:
            wait_results([job])
        except JobFailed as e:
            return False, str(e)
        return True, ""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        jobs = submit_jobs(TASKS[args.task], args)
    except (ValueError, RuntimeError, ModuleNotFoundError) as e:
        print(f"slurm.submit: error: {e}", file=sys.stderr)
        return 2
    for job in jobs:
        print(f"submitted {args.task} job {job.job_id}: logs in {Path(job.paths.stdout).parent}", flush=True)
    if jobs and (args.local or args.wait):
        try:
            results = wait_results(jobs)
        except JobFailed as e:
            print(f"slurm.submit: {e}", file=sys.stderr)
            return 1
        for job, result in zip(jobs, results):
            print(f"job {job.job_id} result: {result!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
