"""Task wrappers that submitit pickles and runs on every rank of a job (dinov2 `run/` style).

A task holds only the entry point's argv. On the node it exports the torch.distributed environment
(MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) and calls `<module>.main(argv)`, adding the
launch flags the entry point needs for a multi-process run (mmengine `--launcher pytorch`; detectron2's own
per-node launch flags). When submitit receives the time-limit/preemption signal (USR2) it calls `checkpoint()` on
rank 0: we return a fresh copy of the task, submitit requeues the job, and the entry point auto-resumes from its
own run folder (nothing is saved here: the signal handler runs on rank 0 only, while the other ranks may be in a
collective). Entry points are imported lazily, inside the job, so `slurm` imports without the frameworks.

`python -m slurm.tasks KIND ARGS...` runs one rank of KIND in the current process (the sbatch scripts' srun target).
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Mapping, Sequence


class EntryPointFailed(RuntimeError):
    """The entry point returned a non-zero exit status."""


class EntryPointTask:
    """Run `<module>.main(argv)` as one rank (or, with per_node, one process per node) of a job."""

    module: str = ""                 # the entry point, e.g. "pretrain.train"
    out_dir_key: str | None = None   # the argv `key=` that names the run folder, where the entry point has one
    per_node = False                 # True: one process per node that starts its per-GPU workers itself

    def __init__(self, args: Sequence[str]):
        self.args = [str(a) for a in args]

    def entry(self) -> tuple[str, list[str]]:
        """(module, argv) of the entry point."""
        return self.module, list(self.args)

    def launch_args(self, environ: Mapping[str, str]) -> list[str]:
        """Flags added at run time from the job's environment (none by default)."""
        return []

    def command(self, python: str = "python") -> list[str]:
        """The equivalent shell command of one rank (what --dry-run prints)."""
        module, argv = self.entry()
        return [python, "-m", module, *argv]

    def out_dir(self) -> str | None:
        """The run folder this task writes to, if its argv names one (the last `out_dir_key=` wins)."""
        if self.out_dir_key is None:
            return None
        prefix = self.out_dir_key + "="
        values = [a[len(prefix):] for a in self.args if a.startswith(prefix)]
        return values[-1] if values else None

    def run_here(self) -> Any:
        """Call the entry point in this process; a non-zero exit status it returns becomes an error."""
        module, argv = self.entry()
        argv += self.launch_args(os.environ)
        print(f"[slurm.tasks] rank {os.environ.get('RANK', '0')}/{os.environ.get('WORLD_SIZE', '1')}: "
              f"{module}.main({argv})", file=sys.stderr, flush=True)
        rc = importlib.import_module(module).main(argv)
        if isinstance(rc, int) and not isinstance(rc, bool) and rc != 0:
            raise EntryPointFailed(f"{module}.main({argv}) returned exit status {rc} (its stderr says why)")
        return rc

    def __call__(self) -> Any:
        export_distributed_env()
        return self.run_here()

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on rank 0 at USR2: requeue a fresh copy; the run resumes from its folder."""
        import submitit

        print(f"[slurm.tasks] requeueing {self!r}", file=sys.stderr, flush=True)
        return submitit.helpers.DelayedSubmission(type(self)(self.args))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args!r})"


def export_distributed_env() -> dict[str, str]:
    """torchrun-style env of this rank from submitit's job environment (SLURM or local executor).

    All of the node's GPUs stay visible (CUDA_VISIBLE_DEVICES is not narrowed): the entry point selects
    `cuda:LOCAL_RANK`, exactly as under torchrun or the sbatch scripts. Values from an outer launcher
    (a RANK inherited from the submitting shell) are overwritten: the job environment is the truth.
    """
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    keys = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    return {k: os.environ[k] for k in keys}


def gpus_on_node(environ: Mapping[str, str]) -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES' entries (as SLURM's GRES sets it), else 0."""
    visible = environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return len([d for d in visible.split(",") if d.strip()]) if visible else 0


class ModuleTask(EntryPointTask):
    """Any `python -m MODULE ARGS...` whose module has `main(argv)`: args[0] is the module (benchmark steps)."""

    def entry(self) -> tuple[str, list[str]]:
        if not self.args:
            raise ValueError("ModuleTask needs the module name as its first argument")
        return self.args[0], list(self.args[1:])


class PretrainTask(EntryPointTask):
    """`python -m pretrain.train --config pretrain/configs/X.yaml key=value ...` (reads RANK/WORLD_SIZE itself)"""
    module = "pretrain.train"
    out_dir_key = "run.out_dir"


class _MMEngineTask(EntryPointTask):
    def launch_args(self, environ: Mapping[str, str]) -> list[str]:
        multi = int(environ.get("WORLD_SIZE", "1")) > 1
        return ["--launcher", "pytorch"] if multi and "--launcher" not in self.args else []


class MMDetTask(_MMEngineTask):
    """`python -m transfer.mmdet.train CONFIG --weights W ...` (COCO Mask R-CNN)"""
    module = "transfer.mmdet.train"


class MMSegTask(_MMEngineTask):
    """`python -m transfer.mmseg.train CONFIG --weights W ...` (ADE20K UperNet)"""
    module = "transfer.mmseg.train"


class Detectron2Task(EntryPointTask):
    """`python -m transfer.detectron2.train --config C --weights W --data-root R ...` (MoCo COCO protocol).

    detectron2's `launch` starts one worker per GPU itself: one process per node, given the node's GPU count,
    the node count, this node's rank and the rendezvous URL (unless the argv already sets --num-machines)."""
    module = "transfer.detectron2.train"
    per_node = True

    def launch_args(self, environ: Mapping[str, str]) -> list[str]:
        gpus, nodes = max(1, gpus_on_node(environ)), int(environ.get("SLURM_NNODES", "1"))
        if "--num-machines" in self.args or (gpus == 1 and nodes == 1):
            return []
        url = f"tcp://{environ.get('MASTER_ADDR', '127.0.0.1')}:{environ.get('MASTER_PORT', '29500')}"
        return ["--num-gpus", str(gpus), "--num-machines", str(nodes),
                "--machine-rank", environ.get("SLURM_NODEID", "0"), "--dist-url", url]


class ClassificationTask(EntryPointTask):
    """`python -m transfer.classification.train ...` (ImageNet-1K fine-tuning / linear probing)"""
    module = "transfer.classification.train"


TASKS: dict[str, type[EntryPointTask]] = {
    "pretrain": PretrainTask,
    "mmdet": MMDetTask,
    "mmseg": MMSegTask,
    "detectron2": Detectron2Task,
    "classification": ClassificationTask,
}


def main(argv: Sequence[str] | None = None) -> int:
    """python -m slurm.tasks KIND ARGS...: one rank of KIND here (RANK etc. already exported by the launcher)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TASKS:
        print(f"usage: python -m slurm.tasks {{{'|'.join(TASKS)}}} ARGS...", file=sys.stderr)
        return 2
    try:
        TASKS[argv[0]](argv[1:]).run_here()
    except EntryPointFailed as e:
        print(f"slurm.tasks: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
