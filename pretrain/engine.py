"""Pre-training as a task of the shared loop (pretrain/loop.py): the A2MIM model, masked-image data, the loss,
reconstruction PNGs, and the export + result.json of a finished run. Resume exactness is the loop's (see there).
Data: pretrain/backends.py (data.kind x data.backend); uint8 pixels reach the device and are normalised there.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from pretrain.a2mim import build_model
from pretrain.config import PretrainConfig, changed_keys, to_dict, to_yaml
from pretrain import backends
from pretrain.fileio import atomic_write_text
from pretrain.loop import Loop, Plan, build_scheduler, make_plan, seed_all
from pretrain.runner import run_loop
from pretrain.runlog import save_reconstruction

log = logging.getLogger("pretrain")


def build_optimizer(model: nn.Module, cfg: PretrainConfig, lr: float) -> torch.optim.Optimizer:
    """timm AdamW / LAMB over the model's own parameter groups (wd exclusions, token lr multiplier). Each group's
    own peak lr is lr x lr_mult (as mmcv's constructor sets it), so timm's schedulers, which anneal every group
    from its own initial lr to schedule.min_lr, end every group at the same absolute floor (openmixup's rule)."""
    from timm.optim import create_optimizer_v2

    groups = model.param_groups(weight_decay=cfg.optim.weight_decay, token_lr_mult=cfg.optim.token_lr_mult,
                                paramwise=cfg.optim.paramwise)
    for g in groups:
        g["lr"] = lr * g.pop("lr_mult")
    return create_optimizer_v2(groups, opt=cfg.optim.name, lr=lr, weight_decay=cfg.optim.weight_decay,
                               betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)


class Trainer(Loop):
    """A2MIM pre-training: batches are (img: uint8 (B,3,S,S) | pretrain.gpu_data.EncodedBatch, mask (B,h,w) uint8,
    skipped messages)."""

    def __init__(self, cfg: PretrainConfig, model_fn: Callable[[PretrainConfig], nn.Module] = build_model):
        self.model_fn = model_fn
        super().__init__(cfg, changed_keys, to_yaml)

    def count_train_samples(self) -> int:
        self.source = backends.open_source(self.cfg.data)     # image paths, or a shard index
        return len(self.source)

    def build_model(self) -> nn.Module:
        return self.model_fn(self.cfg)

    def build_optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        return build_optimizer(model, self.cfg, lr)

    def build_dataset(self):
        cfg = self.cfg
        ds, collate_fn = backends.build_dataset(cfg.data, self.source, cfg.model.input_size,
                                                self.model.mask_generator(), cfg.run.seed)
        self.device_augment = backends.build_device_augment(cfg.data, ds, self.device, cfg.run.batch_per_gpu)
        return ds, collate_fn

    def build_sampler(self, length: int):
        return backends.build_sampler(self.source, self.env.world_size, self.env.rank, self.cfg.run.seed)

    def build_loader(self):
        """The loop's one DataLoader; on the device backends wrapped so that decoding runs one step ahead."""
        loader = super().build_loader()
        return loader if self.device_augment is None else backends.DevicePrefetcher(loader, self.device_augment)

    def _model_input(self, img, mask):
        return backends.model_input(img, mask, self.device, self.device_augment, self.cfg.run.channels_last)

    def compute_loss(self, batch, micro: int):
        img, mask, skipped = batch
        img, mask, more = self._model_input(img, mask)     # decoded (device backends) and normalised on the device
        loss, logs = self.net(img, mask)
        return loss, logs, skipped + more

    def periodic(self) -> None:
        if self.cfg.run.image_interval and self.step % self.cfg.run.image_interval == 0:
            self._visualize()

    def _visualize(self) -> None:
        if not self.env.is_main:
            return
        n = min(self.cfg.run.num_vis, len(self.dataset))
        img, mask, _ = self.collate_fn([self.dataset[(i, 0)] for i in range(n)])
        img, mask, _ = self._model_input(img, mask)
        path = save_reconstruction(self.run_dir / "recon" / f"step_{self.step:08d}.png", self.model, img, mask)
        atomic_write_text(self.run_dir / "recon" / "latest.txt", path.name + "\n")

    def write_outputs(self, last: dict) -> None:
        if not self.env.is_main:
            return
        self._visualize()
        weights = None
        if self.cfg.run.export_at_end:
            from pretrain.export import export_model
            weights = export_model(self.model, self.cfg, self.run_dir / "backbone.safetensors",
                                   step=self.step, epoch=self.step // self.plan.steps_per_epoch)
        from pretrain.results import write_result
        metrics = {k: last[k] for k in ("loss", "images_per_s") if k in last}
        if "loss" not in metrics:
            raise RuntimeError(f"{self.run_dir}: no training loss logged (metrics.jsonl); no result.json is written")
        write_result(self.run_dir, task="pretrain", framework="a2mim-suite", dataset=str(self.cfg.data.root),
                     backbone=self.cfg.model.preset, method=self.cfg.model.method, weights=weights,
                     config=str(self.run_dir / "config.yaml"), metrics={**metrics, "steps": self.step})


def train(cfg: PretrainConfig, model_fn: Callable[[PretrainConfig], nn.Module] = build_model,
          force_new: bool = False) -> Path:
    """Run (or resume, or skip if complete) the pre-training described by cfg; returns the run folder.
    force_new: a folder holding a run is moved aside first (pretrain/fingerprint.py)."""
    trainer = Trainer(cfg, model_fn)
    trainer.force_new = force_new
    return run_loop(trainer)


__all__ = ["Plan", "Trainer", "build_model", "build_optimizer", "build_scheduler", "make_plan", "seed_all", "train",
           "to_dict"]
