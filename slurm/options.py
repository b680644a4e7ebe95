"""The one shared set of cluster options (argparse), and its translation into submitit executor parameters.

Every launcher of the suite adds the same group: slurm.submit's CLI, benchmarks/run_all.py --slurm.
"""
from __future__ import annotations

import argparse
import re
from typing import Any

_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)


def parse_time_minutes(text: str) -> int:
    """sbatch --time formats -> whole minutes, rounded up.

    "90" (M), "90:30" (M:S), "2:00:00" (H:M:S), "3-00:00:00" (D-H:M:S), "1-12" (D-H), "1-12:30" (D-H:M)."""
    m = _SLURM_TIME.match(str(text).strip())
    if not m:
        raise argparse.ArgumentTypeError(
            f"--time {text!r}: expected minutes or [D-]HH:MM:SS (sbatch formats: 90, 90:30, 2:00:00, 3-00:00:00)")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:    # D-H | D-H:M | D-H:M:S
        h, mi, s = a, b or 0, c or 0
    elif c is not None:     # H:M:S
        h, mi, s = a, b, c
    else:                   # M | M:S
        h, mi, s = 0, a, b or 0
    seconds = (((days or 0) * 24 + h) * 60 + mi) * 60 + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"--time {text!r}: must be positive")
    return -(-seconds // 60)


def check_mem(text: str) -> str:
    """sbatch --mem: an integer with an optional K/M/G/T suffix (a bare number is MB, as in sbatch)."""
    if not _MEM.match(text.strip()):
        raise argparse.ArgumentTypeError(f"--mem {text!r}: expected e.g. 64G, 500M or 4000 (MB), as sbatch --mem")
    return text.strip().upper()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 0")
    return value


def add_cluster_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the cluster options (resources, placement, time limit, requeue) to `parser`; returns the group."""
    g = parser.add_argument_group("cluster (SLURM through submitit)")
    g.add_argument("--nodes", "--nnodes", type=_positive, default=1, help="nodes per job")
    g.add_argument("--gpus-per-node", "--ngpus", type=_non_negative, default=0, help="GPUs per node (0: CPU job)")
    g.add_argument("--tasks-per-node", type=_positive, default=None,
                   help="ranks per node (default: one per GPU, at least 1)")
    g.add_argument("--cpus-per-task", type=_positive, default=8, help="CPUs per rank (data-loader workers + 1..2)")
    g.add_argument("--mem", type=check_mem, default=None, help="memory per node as sbatch --mem (64G, 500M)")
    g.add_argument("--partition", default=None)
    g.add_argument("--account", default=None)
    g.add_argument("--qos", default=None)
    g.add_argument("--constraint", default=None, help="node features, e.g. 'volta32gb'")
    g.add_argument("--time", type=parse_time_minutes, default=parse_time_minutes("2-00:00:00"),
                   help="time limit of each run of a job (minutes or [D-]HH:MM:SS; default 2 days)")
    g.add_argument("--exclude", default=None, help="nodes to avoid, e.g. 'node[01-03]'")
    g.add_argument("--comment", default=None)
    g.add_argument("--job-name", default=None, help="default: a2mim-<task>")
    g.add_argument("--job-dir", default="runs/slurm/%j",
                   help="submitit's folder for logs and pickles (%%j: the job id), on a shared filesystem")
    g.add_argument("--signal-delay-s", type=_positive, default=120,
                   help="seconds before the time limit at which a job is signalled to requeue itself")
    g.add_argument("--max-requeues", type=_positive, default=30, help="time-limit requeues allowed per job")
    return g


def tasks_and_cpus(args: argparse.Namespace, per_node: bool = False) -> tuple[int, int]:
    """(processes per node, CPUs per process): one rank per GPU (at least 1) with --cpus-per-task each; for an
    entry point that starts its own per-GPU workers (per_node), one process with the CPUs of all its ranks."""
    ranks = args.tasks_per_node or max(1, args.gpus_per_node)
    return (1, ranks * args.cpus_per_task) if per_node else (ranks, args.cpus_per_task)


def slurm_parameters(args: argparse.Namespace, job_name: str, per_node: bool = False) -> dict[str, Any]:
    """sbatch parameters in submitit's SlurmExecutor names (options left unset are left out)."""
    tasks, cpus = tasks_and_cpus(args, per_node)
    params: dict[str, Any] = {
        "job_name": args.job_name or job_name,
        "time": args.time,
        "nodes": args.nodes,
        "ntasks_per_node": tasks,
        "gpus_per_node": args.gpus_per_node or None,   # no --gpus-per-node line for CPU jobs
        "cpus_per_task": cpus,
        "mem": args.mem,
        "partition": args.partition,
        "account": args.account,
        "qos": args.qos,
        "constraint": args.constraint,
        "exclude": args.exclude,
        "comment": args.comment,
        "signal_delay_s": args.signal_delay_s,
        "additional_parameters": {"requeue": True},   # #SBATCH --requeue: submitit requeues with scontrol
    }
    return {k: v for k, v in params.items() if v is not None}


def local_parameters(args: argparse.Namespace, per_node: bool = False) -> dict[str, Any]:
    """LocalExecutor parameters (submitit's generic names; it runs on this machine, one node)."""
    return {"timeout_min": args.time, "tasks_per_node": tasks_and_cpus(args, per_node)[0],
            "gpus_per_node": args.gpus_per_node}
