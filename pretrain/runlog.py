"""What a run writes to its folder while it trains: metrics.jsonl, TensorBoard events, reconstruction PNGs.

metrics.jsonl: one JSON object per logged step. On resume, rows past the resumed step (logged by the
interrupted process after its last checkpoint) are dropped first, so every step appears once.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from pretrain.data import IMAGENET_MEAN, IMAGENET_STD
from pretrain.fileio import atomic_write_text

log = logging.getLogger("pretrain")


class RunLogger:
    """Rank-0 writer of metrics.jsonl + TensorBoard scalars (a no-op on other ranks)."""

    def __init__(self, run_dir: str | Path, start_step: int, enabled: bool = True, tensorboard: bool = True,
                 tb_prefix: str = "pretrain"):
        self.enabled, self.tb_prefix = enabled, tb_prefix
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self._truncate(start_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=start_step if start_step else None)
            except ImportError as e:  # tensorboard is a core dependency; degrade to jsonl only if missing
                log.warning("TensorBoard disabled (%s); metrics.jsonl is still written", e)

    def _truncate(self, start_step: int) -> None:
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= start_step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed process
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch", "time") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{self.tb_prefix}/{k}", v, row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) ImageNet-normalised -> [0,1] RGB."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() * std + mean).clamp(0, 1)


@torch.no_grad()
def save_reconstruction(path: str | Path, model, img: torch.Tensor, mask: torch.Tensor) -> Path:
    """PNG grid, one column per image; rows: original / masked input / reconstruction (de-normalised).

    Runs the model in eval mode inside a forked RNG so training (BN statistics, RNG streams) is untouched.
    """
    from torchvision.utils import save_image

    was_training = model.training
    devices = [torch.cuda.current_device()] if img.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        model.eval()
        try:
            x_in, x_rec = model.reconstruct(img, mask)
        finally:
            model.train(was_training)
    grid = torch.cat([denormalize(img), denormalize(x_in), denormalize(x_rec)]).cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path, nrow=img.shape[0], padding=2)
    return path


def last_logged(run_dir: str | Path, step: int) -> dict:
    """The last training row (one with "loss") of metrics.jsonl at or before `step`: a run resumed at its end, after
    a kill between its last checkpoint and its `done`, still reports its metrics."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue                    # a torn last line of a killed writer
            if isinstance(row, dict) and "loss" in row and row.get("step", 0) <= step:
                rows.append(row)
    return rows[-1] if rows else {}
