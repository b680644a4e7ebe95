"""torch.distributed set-up from torchrun's or SLURM's environment (gloo on CPU, nccl on GPU).

Precedence: torchrun / submitit (RANK + WORLD_SIZE set) > SLURM with more than one task (SLURM_PROCID,
SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR = first host of the step's node list via `scontrol show hostnames`)
> a single process (no process group).
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"        # single | torchrun | slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def scontrol_hostnames(nodelist: str) -> list[str]:
    """Expand a SLURM node list ('node[01-03],gpu7') with `scontrol show hostnames`."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"cannot expand SLURM node list {nodelist!r} with `scontrol show hostnames` ({e}); "
                           f"set MASTER_ADDR yourself") from None
    if not out:
        raise RuntimeError(f"`scontrol show hostnames {nodelist}` printed no host")
    return out


def env_from(environ: Mapping[str, str], expand: Callable[[str], list[str]] = scontrol_hostnames) -> DistEnv:
    """The process's place in the job, from environment variables (pure apart from `expand`)."""
    def geti(key: str, default: int | None = None) -> int:
        val = environ.get(key)
        if val is None:
            if default is None:
                raise RuntimeError(f"environment variable {key} is not set")
            return default
        try:
            return int(val)
        except ValueError:
            raise RuntimeError(f"environment variable {key}={val!r} is not an integer") from None

    if "RANK" in environ and "WORLD_SIZE" in environ:
        return DistEnv(geti("RANK"), geti("WORLD_SIZE"), geti("LOCAL_RANK", 0), environ.get("MASTER_ADDR", "127.0.0.1"),
                       geti("MASTER_PORT", 29500), "torchrun")
    ntasks = geti("SLURM_NTASKS", 1)
    if ntasks > 1 and "SLURM_PROCID" in environ:
        addr = environ.get("MASTER_ADDR")
        if not addr:
            nodelist = next((environ[k] for k in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
                             if environ.get(k)), None)
            if not nodelist:
                raise RuntimeError("SLURM_NTASKS > 1 but no SLURM_STEP_NODELIST/SLURM_JOB_NODELIST to find the master")
            addr = expand(nodelist)[0]
        # a port derived from the job id, so two jobs sharing a node do not collide
        port = geti("MASTER_PORT", 15000 + geti("SLURM_JOB_ID", 0) % 20000)
        return DistEnv(geti("SLURM_PROCID"), ntasks, geti("SLURM_LOCALID", 0), addr, port, "slurm")
    return DistEnv()


def init_distributed(device: str = "auto") -> tuple[DistEnv, torch.device]:
    """Initialise the process group when the environment names more than one process; pick the device."""
    env = env_from(os.environ)
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if env.world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", env.master_addr)
        os.environ.setdefault("MASTER_PORT", str(env.master_port))
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://",
                                rank=env.rank, world_size=env.world_size)
    return env, dev


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_gather_object(obj) -> list:
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
