"""A tiny entry point for the cluster tests (importable in jobs: the cluster fixture puts tests/slurm on PYTHONPATH).

main(["env", ...])        -> {"argv": argv, "env": {the rank's distributed and SLURM variables}}
main(["raise", MSG])      -> writes two lines to stderr, then raises ValueError(MSG)
main(["exit", CODE])      -> writes two lines to stderr, then ends the process with exit status CODE (no result)
main(["return", CODE])    -> returns the int CODE (an entry point's exit status)
"""
from __future__ import annotations

import os
import sys

from slurm.tasks import EntryPointTask

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
            "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_NTASKS",
            "SLURM_CPUS_PER_TASK", "SLURM_JOB_NAME", "CUDA_VISIBLE_DEVICES")


def main(argv: list[str]):
    mode = argv[0]
    if mode == "env":
        return {"argv": list(argv), "env": {k: os.environ.get(k) for k in ENV_KEYS}}
    if mode == "return":
        return int(argv[1])
    print("probe: stderr line one", file=sys.stderr)
    print(f"probe: failing on purpose with {argv[1]}", file=sys.stderr, flush=True)
    if mode == "raise":
        raise ValueError(f"probe failure {argv[1]}")
    if mode == "exit":
        sys.stdout.flush()
        os._exit(int(argv[1]))
    raise SystemExit(f"slurm_probe: unknown mode {mode!r}")


class ProbeTask(EntryPointTask):
    module = "slurm_probe"
