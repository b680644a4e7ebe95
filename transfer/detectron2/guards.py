"""Run-folder guards of the detectron2 entry point (transfer/detectron2/train.py).

SafeCheckpointer  detectron2's DetectionCheckpointer reads a `.pkl` with plain pickle.load and follows whatever path
                  `last_checkpoint` names: a crafted file in a shared or copied output folder runs code on resume.
                  This one loads only the run's own `.pth` checkpoints inside OUTPUT_DIR, through the project's one
                  safe loader (pretrain.checkpoint.load_checkpoint: weights_only=True, tensors and plain
                  containers only); anything else is a CheckpointError naming the file and why.
StopSignalHook    SIGTERM / SIGUSR1 / SIGINT (pretrain.signals): a checkpoint at the end of the current iteration,
                  `last_checkpoint` pointing at it, then RunInterrupted (exit 75 / 130): the resumed run continues at
                  the next iteration, no iteration redone.
"""
from __future__ import annotations

import os
from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import HookBase

from pretrain.checkpoint import CheckpointError, load_checkpoint
from pretrain.signals import RunInterrupted, StopSignals


class SafeCheckpointer(DetectionCheckpointer):
    def _load_file(self, filename: str) -> dict:
        path, out = Path(filename).resolve(), Path(self.save_dir).resolve()
        if not path.is_relative_to(out):
            raise CheckpointError(f"{filename}: refused to resume from a file outside the run folder {out} "
                                  f"(named by {out / 'last_checkpoint'})")
        if path.suffix != ".pth":
            raise CheckpointError(f"{filename}: refused to resume from a '{path.suffix}' file: a run resumes only from "
                                  f"its own .pth checkpoints (detectron2 would unpickle a .pkl with plain pickle)")
        ck = load_checkpoint(path)
        if not isinstance(ck, dict) or "model" not in ck:
            raise CheckpointError(f"{filename}: not a detectron2 checkpoint of this run (no 'model' entry)")
        return ck


def safe_resume(trainer) -> None:
    """DefaultTrainer.resume_or_load(resume=True) through a SafeCheckpointer with the trainer's checkpointables."""
    ck = SafeCheckpointer(trainer.model, trainer.cfg.OUTPUT_DIR)
    ck.checkpointables = trainer.checkpointer.checkpointables
    ck.resume_or_load(trainer.cfg.MODEL.WEIGHTS, resume=True)
    if ck.has_checkpoint():
        trainer.start_iter = trainer.iter + 1


class StopSignalHook(HookBase):
    def __init__(self, stop: StopSignals):
        self.stop = stop

    def after_step(self):
        import torch
        from detectron2.utils import comm
        flag = torch.tensor([1.0 if self.stop.requested else 0.0])
        if comm.get_world_size() > 1:
            flag = torch.tensor([max(comm.all_gather(flag.item()))])
        t = self.trainer
        if flag.item() == 0 or t.iter + 1 >= t.max_iter:
            return
        name = f"model_{t.iter:07d}"
        t.checkpointer.save(name, iteration=t.iter)     # also rewrites last_checkpoint (main process)
        raise RunInterrupted(self.stop.requested or "SIGTERM", t.iter + 1,
                             os.path.join(t.cfg.OUTPUT_DIR, name + ".pth"))
