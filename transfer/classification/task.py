"""Fine-tuning / linear probing as a task of the shared loop (pretrain/loop.py: resume, AMP, logging, NaN guard).

Per step: a batch of (img (B,3,S,S), label (B,)) -> timm Mixup/CutMix (numpy drawn from a generator seeded by
(run.seed, step, rank, micro-batch), so a resumed run mixes exactly as the uninterrupted one) -> model -> loss
(timm BinaryCrossEntropy for RSB, SoftTargetCrossEntropy with mixing, label smoothing CE, or plain CE) ->
optimizer (timm create_optimizer_v2: LAMB / AdamW with layer decay / LARS / SGD) -> timm ModelEmaV3 update.
The EMA weights are saved in every checkpoint. Top-1/top-5 on the val split every run.eval_interval epochs and
at the end (raw model and EMA), then result.json (task in1k_finetune | in1k_linear, metrics in percent).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from pretrain import distributed as D
from pretrain.config import ConfigError
from pretrain.export_format import IMAGENET_MEAN, IMAGENET_STD
from pretrain.loop import DTYPES, Loop
from transfer.classification.config import ClsConfig, changed_keys, mixup_active, to_yaml
from transfer.classification.data import (ClassificationDataset, RepeatAugSampler, class_folders, collate,
                                          eval_transform, labelled_images, train_transform)
from transfer.classification.model import backbone_spec, build_classifier, load_backbone
from transfer.weights import read_backbone_weights

log = logging.getLogger("transfer.classification")
TASKS = {"finetune": "in1k_finetune", "linear": "in1k_linear"}


def build_optimizer(model: nn.Module, cfg: ClsConfig, lr: float) -> torch.optim.Optimizer:
    """timm optimizer over trainable parameters, grouped by the one downstream rule (transfer.param_groups: no weight
    decay on 1-D tensors and position tables / tokens; optional layer-wise lr decay as lr_scale, which timm's
    scheduler applies). LARS (MAE's linear probe): trust ratio on weight matrices only (always_adapt), never on 1-D
    tensors."""
    from timm.optim import create_optimizer_v2

    from transfer.param_groups import param_groups

    o = cfg.optim
    groups = [g for g in param_groups(model, o.weight_decay, o.layer_decay) if g["params"]]
    for g in groups:
        g.pop("param_names", None)
        g.pop("group_name", None)
        if o.layer_decay is None:
            g.pop("lr_scale")
    if o.name in ("adamw", "lamb"):
        kw = dict(betas=tuple(o.betas), eps=o.eps)
    else:
        kw = dict(momentum=o.momentum)
    if o.name == "lars":   # split each group: weight matrices adapt (even with wd 0), 1-D tensors never
        groups = [{**g, "params": ps, "always_adapt": adapt} for g in groups for adapt in (True, False)
                  if (ps := [p for p in g["params"] if (p.ndim > 1) == adapt])]
    return create_optimizer_v2(groups, opt=o.name, lr=lr, weight_decay=o.weight_decay, **kw)


def build_criterion(cfg: ClsConfig) -> nn.Module:
    """timm train.py's choice: with mixing the targets are already soft (Mixup applied the smoothing)."""
    from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    ls, bce, thresh = cfg.loss.label_smoothing, cfg.loss.name == "bce", cfg.loss.bce_target_thresh
    if mixup_active(cfg):
        return BinaryCrossEntropy(smoothing=0.0, target_threshold=thresh) if bce else SoftTargetCrossEntropy()
    if bce:
        return BinaryCrossEntropy(smoothing=ls, target_threshold=thresh)
    return LabelSmoothingCrossEntropy(ls) if ls > 0 else nn.CrossEntropyLoss()


class ClassificationLoop(Loop):
    tb_prefix = "classification"       # TensorBoard tags classification/*
    markers: list = []                 # train.py: override markers (transfer.results.override_markers)

    def __init__(self, cfg: ClsConfig):
        super().__init__(cfg, changed_keys, to_yaml)

    def input_weights(self) -> str:
        return self.cfg.model.weights

    # ---- data lists (before setup)
    def count_train_samples(self) -> int:
        d = self.cfg.data
        self.classes = class_folders(d.root, d.train_split)
        self.num_classes = self.cfg.model.num_classes or len(self.classes)
        if self.num_classes < len(self.classes):
            raise ConfigError(f"config key 'model.num_classes' = {self.num_classes}; expected >= the "
                              f"{len(self.classes)} class folders of {d.root}/{d.train_split}")
        self.train_list = labelled_images(d.root, d.train_split, self.classes)
        self.val_list = labelled_images(d.root, d.val_split, self.classes)
        return len(self.train_list[0])

    # ---- model, optimizer, EMA
    def build_model(self) -> nn.Module:
        cfg = self.cfg
        self.loaded = read_backbone_weights(cfg.model.weights)
        self.meta = self.loaded[1]
        self.spec = backbone_spec(cfg, self.meta)
        model = build_classifier(cfg, self.spec, self.num_classes)
        report = self.run_dir / "load_report.json" if self.env.is_main else None
        self.load_report = load_backbone(model, cfg, self.spec, self.loaded, report)
        log.info("loaded %d backbone tensors from %s (%s)", len(self.load_report.matched), cfg.model.weights,
                 "; ".join(self.load_report.notes) or "no renames")
        del self.loaded
        return model

    def build_optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        return build_optimizer(model, self.cfg, lr)

    def on_model_ready(self) -> None:
        from timm.data import Mixup
        from timm.utils import ModelEmaV3

        cfg = self.cfg
        self.ema = (ModelEmaV3(self.model, decay=cfg.ema.decay, use_warmup=cfg.ema.warmup)
                    if cfg.ema.decay is not None else None)
        m = cfg.mixup
        self.mixup = (Mixup(mixup_alpha=m.mixup_alpha, cutmix_alpha=m.cutmix_alpha, prob=m.prob,
                            switch_prob=m.switch_prob, mode="batch", label_smoothing=cfg.loss.label_smoothing,
                            num_classes=self.num_classes) if mixup_active(cfg) else None)
        self.criterion = build_criterion(cfg)

    def extra_state(self) -> dict:
        return {"ema": self.ema.module.state_dict()} if self.ema is not None else {}

    def load_extra_state(self, ck: dict) -> None:
        if self.ema is not None:
            if "ema" not in ck:
                raise KeyError("the checkpoint has no EMA weights (written without ema.decay)")
            self.ema.module.load_state_dict(ck["ema"])

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)

    # ---- data
    def build_dataset(self):
        d, seed = self.cfg.data, self.cfg.run.seed
        mean, std = self.meta.get("mean", IMAGENET_MEAN), self.meta.get("std", IMAGENET_STD)
        common = dict(seed=seed, skip_budget=d.skip_budget, max_image_pixels=d.max_image_pixels)
        self.val_dataset = ClassificationDataset(*self.val_list, eval_transform(d, mean, std), **common)
        return ClassificationDataset(*self.train_list, train_transform(d, mean, std), **common), collate

    def build_sampler(self, length: int):
        if self.cfg.data.repeated_aug > 1:
            return RepeatAugSampler(length, self.env.world_size, self.env.rank, self.cfg.run.seed,
                                    self.cfg.data.repeated_aug)
        return super().build_sampler(length)

    # ---- one micro-batch
    def _mix(self, img: torch.Tensor, target: torch.Tensor, micro: int):
        seed = np.random.SeedSequence([self.cfg.run.seed, self.step, self.env.rank, micro]).generate_state(1)[0]
        state = np.random.get_state()           # timm's Mixup draws from the global numpy RNG
        np.random.seed(int(seed))
        try:
            return self.mixup(img, target)
        finally:
            np.random.set_state(state)

    def compute_loss(self, batch, micro: int):
        img, target, skipped = batch
        img, target = self.batch_to_device(img, target)
        if self.mixup is not None:
            img, target = self._mix(img, target, micro)
        return self.criterion(self.net(img), target), {}, skipped

    # ---- evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict:
        """Top-1 / top-5 (percent) over the whole val split, sharded over the ranks and summed."""
        from tqdm import tqdm

        r, d = self.cfg.run, self.cfg.data
        keys = [(i, 0) for i in range(self.env.rank, len(self.val_dataset), self.env.world_size)]
        loader = DataLoader(Subset(self.val_dataset, keys), batch_size=r.eval_batch_per_gpu or r.batch_per_gpu,
                            num_workers=d.num_workers, collate_fn=collate, generator=torch.Generator())
        k = min(5, self.num_classes)
        c1 = c5 = n = skipped = 0
        was_training = model.training
        model.eval()
        devices = [self.device.index] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for img, label, sk in tqdm(loader, desc="eval", disable=not self.env.is_main, leave=False):
                with torch.autocast(self.device.type, dtype=DTYPES[r.precision], enabled=r.precision != "fp32"):
                    out = model(img.to(self.device, non_blocking=True))
                hit = out.float().topk(k, dim=1).indices == label.to(self.device)[:, None]   # (B, k)
                c1, c5 = c1 + int(hit[:, 0].sum()), c5 + int(hit.any(dim=1).sum())
                n, skipped = n + len(label), skipped + len(sk)
        model.train(was_training)
        counts = torch.tensor([c1, c5, n, skipped], dtype=torch.float64, device=self.device)
        if D.is_dist():
            torch.distributed.all_reduce(counts)
        c1, c5, n, skipped = counts.tolist()
        return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "images": int(n), "skipped": int(skipped)}

    def evaluate_and_log(self) -> dict:
        res = {f"val_{k}": v for k, v in self.evaluate(self.model).items()}
        if self.ema is not None:
            res.update({f"ema_{k}": v for k, v in self.evaluate(self.ema.module).items()
                        if k in ("top1", "top5")})
        self.log_row({"step": self.step, "epoch": self.step / self.plan.steps_per_epoch, **res})
        return res

    def periodic(self) -> None:
        spe, every = self.plan.steps_per_epoch, self.cfg.run.eval_interval
        if every and self.step % spe == 0 and self.step < self.plan.target_steps and (self.step // spe) % every == 0:
            self.evaluate_and_log()

    def write_outputs(self, last: dict) -> None:
        res = self.evaluate_and_log()
        if not self.env.is_main:
            return
        from transfer.results import write_result

        metrics = {"top1": res["val_top1"], "top5": res["val_top5"], "steps": self.step,
                   "epochs": self.step / self.plan.steps_per_epoch}
        metrics.update({k: res[k] for k in ("ema_top1", "ema_top5") if k in res})
        if "loss" in last:
            metrics["train_loss"] = last["loss"]
        from transfer.results import identity, pretrain_label, pretrain_seed, result_dataset
        ident = identity(task=TASKS[self.cfg.model.mode], dataset=result_dataset(self.cfg.data.root, "imagenet1k"),
                         framework="a2mim-suite", recipe=self.cfg.run.protocol or "unnamed",
                         backbone=self.spec["preset"] or self.spec["timm_name"],
                         method=self.meta.get("method") or "unknown", pretrain=pretrain_label(self.meta),
                         markers=self.markers)
        write_result(self.run_dir, **ident, data_root=str(self.cfg.data.root), seed=self.cfg.run.seed,
                     pretrain_seed=pretrain_seed(self.meta), num_classes=self.num_classes,
                     weights=self.cfg.model.weights, config=str(self.run_dir / "config.yaml"), metrics=metrics)
