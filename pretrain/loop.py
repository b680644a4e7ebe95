"""The one training loop of the suite: exact on resume, small on purpose (no framework Runner).

Pre-training (pretrain/engine.py) and ImageNet fine-tuning / linear probing (transfer/classification/task.py) are
subclasses of Loop that fill in its hooks (model, optimizer, data, loss of a batch, extra state such as an EMA,
periodic work such as evaluation, and what a finished run writes). Everything else lives here once:
process group + device, run folder, plan, timm schedule, AMP/GradScaler, accumulation, clip, NaN guard,
checkpoint/resume with every RNG of every rank, metrics.jsonl + TensorBoard, the `done` marker, and the run
folder's guards: one writer (pretrain/runlock.py), the inputs it was made from (pretrain/fingerprint.py), stop
signals that save at the next step boundary (pretrain/signals.py), no checkpoint of non-finite or exploded weights.

Position = the global optimizer step s. Everything else derives from it: epoch = s // steps_per_epoch, the
sampler offset = (s % steps_per_epoch) * batch_per_gpu * accum_steps samples of this rank, and the lr = schedule(s)
(timm schedulers evaluated at s). A checkpoint holds model, optimizer, scaler, s, the skip count, every RNG state
of every rank and the task's extra state, so a resumed run reproduces the uninterrupted one bit for bit.

The config a Loop reads (duck-typed, any structured config): run.* (pretrain.config.LoopRunConfig),
optim.{lr, base_lr, lr_ref_batch, clip_grad}, schedule.* (pretrain.config.ScheduleConfig), data.{num_workers,
skip_budget, prefetch_factor, pin_memory, persistent_workers}.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from pretrain import distributed as D
from pretrain.budget import MEASURED_STEPS, WARMUP_STEPS, calibrate, read_budget, write_budget
from pretrain.checkpoint import CKPT_VERSION, CheckpointDir, CheckpointError, capture_rng, restore_rng, state_dict_mismatch
from pretrain.compile import compile_model
from pretrain.config import to_yaml
from pretrain.data import DataError, ResumableDistributedSampler
from pretrain.fileio import atomic_write_json, atomic_write_text
from pretrain.fingerprint import record
from pretrain.plan import Plan, build_scheduler, make_plan, seed_all
from pretrain.loader import build_loader
from pretrain.runlog import RunLogger, last_logged
from pretrain.signals import RunInterrupted, StopSignals
from pretrain.weightguard import check_weights, max_abs_weight

log = logging.getLogger("pretrain")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_safe_precision(run, device: torch.device) -> None:
    """fp16/bf16 on a CPU device becomes fp32 (one warning), unless run.cpu_amp insists. Set before the config is
    dumped, so config.yaml and the checkpoints say what ran."""
    if device.type == "cpu" and run.precision != "fp32" and not getattr(run, "cpu_amp", False):
        log.warning("run.precision=%s on a CPU: running fp32 instead (CPU autocast is far slower than fp32 here: "
                    "the fp16 R50 preset took 250 s/step vs 1.16 s); run.cpu_amp=true insists", run.precision)
        run.precision = "fp32"


def _why(model: nn.Module, ck: dict, e: Exception) -> str:
    """Name the keys when the model does not fit (load_state_dict's first line names none)."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(ck.get("model"), dict):
        mism = state_dict_mismatch(model, ck["model"])
        if mism != "keys and shapes agree":
            return f"model: {mism}"
    return first


class Loop:
    """Subclasses implement the hooks between the two rulers below; `run_loop(loop)` drives a whole run."""
    tb_prefix = "pretrain"      # TensorBoard tag prefix of this kind of run
    stop: StopSignals | None = None     # set by run_loop for the duration of the run
    force_new = False                   # --force-new: move a folder made from other inputs aside

    def __init__(self, cfg, changed_keys: Callable[[str, str], list[str]],
                 config_text: Callable[[Any], str] = to_yaml):
        """changed_keys(old_text, new_text): the config schema's diff (StrictSchema.changed_keys)."""
        self.cfg = cfg
        self._config_text, self._changed_keys = config_text, changed_keys
        self.env, self.device = D.init_distributed(cfg.run.device)
        cpu_safe_precision(cfg.run, self.device)
        self.run_dir = Path(cfg.run.out_dir)
        self.ckpts = CheckpointDir(self.run_dir / "checkpoints", cfg.run.keep_last)
        self.num_train = self.count_train_samples()
        self.budget = read_budget(self.run_dir) if cfg.schedule.budget_s is not None else None
        self.plan = self._make_plan()

    def _make_plan(self) -> Plan:
        """schedule.epochs, or the budget's step count; a budget run not yet calibrated gets a provisional plan
        just long enough for its calibration steps (pretrain/budget.py), replaced once they were measured."""
        plan = make_plan(self.cfg, self.num_train, self.env.world_size)
        if self.cfg.schedule.budget_s is None:
            return plan
        total = self.budget["total_steps"] if self.budget else \
            round(self.cfg.schedule.warmup_epochs * plan.steps_per_epoch) + WARMUP_STEPS + MEASURED_STEPS + 1
        return make_plan(self.cfg, self.num_train, self.env.world_size, int(total))

    def _total_override(self) -> int | None:
        return self.plan.total_steps if self.cfg.schedule.budget_s is not None else None

    def batch_to_device(self, img: torch.Tensor, *rest: torch.Tensor) -> tuple:
        """Images (B,3,H,W) -> device (channels_last when run.channels_last), the other tensors -> device."""
        img = img.to(self.device, non_blocking=True)
        if self.cfg.run.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        return (img, *(t.to(self.device, non_blocking=True) for t in rest))

    # ------------------------------------------------------------------ hooks
    def count_train_samples(self) -> int:
        """Training images (called once, before setup: the plan and is_complete need it)."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        """The model (called right after seed_all(run.seed), so every rank builds the same initial weights)."""
        raise NotImplementedError

    def build_optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        raise NotImplementedError

    def on_model_ready(self) -> None:
        """After the model is on its device and the optimizer exists, before resume (e.g. create the EMA)."""

    def build_dataset(self) -> tuple[Dataset, Callable]:
        """(training dataset indexed by the sampler's keys, collate_fn)."""
        raise NotImplementedError

    def build_sampler(self, length: int) -> ResumableDistributedSampler:
        return ResumableDistributedSampler(length, self.env.world_size, self.env.rank, seed=self.cfg.run.seed)

    def compute_loss(self, batch, micro: int) -> tuple[torch.Tensor, dict, list[str]]:
        """(loss, {name: scalar tensor to log}, skipped-image messages) of one micro-batch (inside autocast)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """After each optimizer step (self.step already counts it), e.g. the EMA update."""

    def extra_state(self) -> dict:
        """Task state saved beside the model in every checkpoint (tensors and primitives only)."""
        return {}

    def load_extra_state(self, ck: dict) -> None:
        """Restore extra_state() from a checkpoint."""

    def periodic(self) -> None:
        """After each step's logging, before its checkpoint (evaluation, reconstruction images)."""

    def set_train_mode(self) -> None:
        """Training mode of the model (called at set-up and after anything that switched it)."""
        self.model.train()

    def write_outputs(self, last: dict) -> None:
        """Called on EVERY rank when the run completes, before the done marker (result.json on rank 0)."""

    def input_weights(self) -> str | None:
        """The weights file this run starts from (transfer runs), recorded by sha256 in inputs.json."""
        return None

    def inputs_record(self) -> dict:
        """What this run is made from (pretrain.fingerprint.record): settings, input weights, data."""
        from omegaconf import OmegaConf
        conf = OmegaConf.to_container(OmegaConf.create(self._config_text(self.cfg)))
        return record(conf, self.input_weights(), self.cfg.data.root)

    # ------------------------------------------------------------------ state
    def is_complete(self) -> bool:
        done = self.run_dir / "done"
        if not done.is_file():
            return False
        try:
            return json.loads(done.read_text()).get("step", -1) >= self.plan.target_steps
        except json.JSONDecodeError:
            return False

    def _state(self) -> dict:
        rngs = D.all_gather_object(capture_rng())
        spe, per_step = self.plan.steps_per_epoch, self.cfg.run.batch_per_gpu * self.cfg.run.accum_steps
        return {"version": CKPT_VERSION, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.step // spe,
                "offset": (self.step % spe) * per_step,   # samples of this rank already consumed this epoch
                "skipped": self.skipped, "world_size": self.env.world_size, "rng": rngs,
                "config": self._config_text(self.cfg), **self.extra_state()}

    def save(self) -> None:
        self._weight_ref = check_weights(self.model, self.step, self._weight_ref, self.cfg.run.max_weight_growth)
        state = self._state()  # every rank joins the RNG gather
        if self.env.is_main:
            self.ckpts.save(state, self.step)
        D.barrier()

    def _resume(self) -> None:
        found = self.ckpts.load_latest()
        if found is None:
            seed_all(self.cfg.run.seed + self.env.rank)
            return
        ck, path = found
        changed = self._changed_keys(ck["config"], self._config_text(self.cfg))
        try:
            self.model.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["optimizer"])
            self.scaler.load_state_dict(ck["scaler"])
            self.load_extra_state(ck)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path} does not fit this run (config keys changed since: {changed}); resume with "
                                  f"the original config or use a new run.out_dir. {_why(self.model, ck, e)}") from None
        self.step, self.skipped = int(ck["step"]), int(ck["skipped"])
        if changed:
            log.warning("resuming %s with config keys changed since that checkpoint: %s", path, changed)
        if ck["world_size"] == self.env.world_size:
            restore_rng(ck["rng"][self.env.rank])
        else:
            log.warning("checkpoint was written by %d processes, this run has %d: data order and RNG streams "
                        "continue, but not bit-exactly", ck["world_size"], self.env.world_size)
            seed_all(self.cfg.run.seed + self.env.rank + self.step)
        self.resumed_from = str(path)
        log.info("resumed from %s at step %d", path, self.step)

    def setup(self) -> None:
        cfg, env = self.cfg, self.env
        seed_all(cfg.run.seed)  # identical initial weights on every rank
        model = self.build_model()
        if cfg.run.syncbn and env.world_size > 1:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                log.warning("run.syncbn ignored: SyncBatchNorm needs CUDA (this run is on %s)", self.device)
        self.model = model.to(self.device)
        if cfg.run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = self.build_optimizer(self.model, self.plan.lr)
        self.sched = build_scheduler(self.opt, cfg, self.plan.steps_per_epoch, self._total_override())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.run.precision == "fp16")
        self.step, self.skipped, self.resumed_from = 0, 0, None
        self.stop_now = False
        self.on_model_ready()
        self._resume()
        self._weight_ref = (self.step, max_abs_weight(self.model)[0])
        self.dataset, self.collate_fn = self.build_dataset()
        self.sampler = self.build_sampler(len(self.dataset))
        self.loader = self.build_loader()
        net = self.model
        if env.world_size > 1:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.net = compile_model(net, cfg.run.compile, self.device)   # run.compile: true | false | null = auto
        self.set_train_mode()
        if cfg.schedule.budget_s is not None and self.step == 0:   # a fresh budget run: measure (again)
            self.budget = calibrate(self)
            if env.is_main:
                write_budget(self.run_dir, self.budget)
            self.plan = self._make_plan()
            self.sched = build_scheduler(self.opt, cfg, self.plan.steps_per_epoch, self._total_override())
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", self._config_text(cfg))
            atomic_write_json(self.run_dir / "run_info.json", {
                **self.plan.__dict__, "device": str(self.device), "resumed_from": self.resumed_from,
                "start_step": self.step, "torch": torch.__version__})
        self.logger = RunLogger(self.run_dir, self.step, enabled=env.is_main, tensorboard=cfg.run.tensorboard,
                                tb_prefix=self.tb_prefix)

    # ------------------------------------------------------------------ one optimizer step
    def _train_step(self, it, epoch: int) -> dict:
        cfg, accum = self.cfg, self.cfg.run.accum_steps
        if cfg.schedule.per_iteration:
            self.sched.step_update(self.step)
        else:
            self.sched.step(epoch)
        amp = cfg.run.precision != "fp32"
        loss_sum, logs_sum, skipped = 0.0, {}, []
        for micro in range(accum):
            batch = next(it)
            sync = micro == accum - 1 or not isinstance(self.net, nn.parallel.DistributedDataParallel)
            with (contextlib.nullcontext() if sync else self.net.no_sync()):
                with torch.autocast(self.device.type, dtype=DTYPES[cfg.run.precision], enabled=amp):
                    loss, logs, sk = self.compute_loss(batch, micro)
                skipped += sk
                if self.step == cfg.run.debug_nan_step:
                    loss = loss * float("nan")  # debug hook: exercises the NaN guard
                self.scaler.scale(loss / accum).backward()
            loss_sum = loss_sum + loss.detach().float()
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + torch.as_tensor(v).detach().float()
        # one all-reduce: the mean loss, the skip count and the stop requests over ranks (every rank then stops
        # together: at a skip-budget failure, and at the end of this step after a stop signal on any rank)
        stop = self.stop is not None and self.stop.requested is not None
        stats = torch.stack([loss_sum / accum, torch.tensor(float(len(skipped)), device=loss_sum.device),
                             torch.tensor(float(stop), device=loss_sum.device)])
        if D.is_dist():
            torch.distributed.all_reduce(stats)
            stats[0] /= self.env.world_size
        loss_val = stats[0].item()
        self.stop_now = stats[2].item() > 0
        logs_val = {k: v.item() / accum for k, v in logs_sum.items()}
        losses = {"loss": loss_val, **logs_val}
        if not math.isfinite(loss_val):   # detectron2's message, with the step and the loss dict
            raise FloatingPointError(f"Loss became infinite or NaN at step={self.step} (epoch {epoch}); no checkpoint "
                                     f"of this state is written. Losses: {losses}")
        self._count_skips(int(stats[1].item()), skipped)
        grad_norm = None
        log_now = (self.step + 1) % cfg.run.log_interval == 0
        if cfg.optim.clip_grad is not None or log_now:
            self.scaler.unscale_(self.opt)
            params = [p for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
            clip = cfg.optim.clip_grad
            grad_norm = (torch.nn.utils.clip_grad_norm_(params, clip) if clip is not None
                         else torch.nn.utils.get_total_norm([p.grad for p in params])).item()
            if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
                raise FloatingPointError(f"Gradient norm became infinite or NaN at step={self.step} (epoch {epoch}); "
                                         f"no checkpoint of this state is written. Losses: {losses}")
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.after_step()
        return {**losses, **({"grad_norm": grad_norm} if grad_norm is not None else {})}

    def _count_skips(self, n: int, messages: list[str]) -> None:
        self.skipped += n
        if self.skipped > self.cfg.data.skip_budget:
            raise DataError(f"{self.skipped} unreadable images skipped so far, more than the skip budget "
                            f"data.skip_budget={self.cfg.data.skip_budget}; last on this rank: {messages[-3:]}")

    # ------------------------------------------------------------------ the loop
    def build_loader(self) -> DataLoader:
        """The run's one DataLoader (pretrain.loader.build_loader), built once in setup; each epoch only moves the
        sampler (_loader), so persistent workers live for the whole run."""
        return build_loader(self.dataset, self.sampler, self.collate_fn, self.cfg, self.device)

    def _loader(self, epoch: int, offset: int) -> DataLoader:
        """The run's DataLoader positioned at (epoch, offset samples of this rank already consumed)."""
        self.sampler.set_epoch(epoch, offset)
        return self.loader

    def log_row(self, row: dict) -> None:
        """Append one row (with "step") to metrics.jsonl and TensorBoard (rank 0)."""
        self.logger.log(row)

    def fit(self) -> dict:
        from tqdm import tqdm

        cfg, plan, spe = self.cfg, self.plan, self.plan.steps_per_epoch
        bar = tqdm(total=plan.target_steps, initial=self.step, disable=not self.env.is_main, dynamic_ncols=True,
                   desc=self.run_dir.name, mininterval=2.0)
        per_step_images = plan.global_batch
        t_last, n_last, acc, last = time.perf_counter(), 0, {}, last_logged(self.run_dir, self.step)
        while self.step < plan.target_steps:
            epoch = self.step // spe
            it = iter(self._loader(epoch, (self.step % spe) * cfg.run.batch_per_gpu * cfg.run.accum_steps))
            while self.step < plan.target_steps and self.step // spe == epoch:
                row = self._train_step(it, epoch)
                for k, v in row.items():
                    acc[k] = acc.get(k, 0.0) + v if k != "grad_norm" else v
                n_last += 1
                bar.update(1)
                if self.step % cfg.run.log_interval == 0 or self.step == plan.target_steps:
                    dt = time.perf_counter() - t_last
                    last = {"step": self.step, "epoch": self.step / spe, "lr": max(
                        g["lr"] / g.get("lr_scale", 1.0) for g in self.opt.param_groups),
                        **{k: (v if k == "grad_norm" else v / n_last) for k, v in acc.items()},
                        "images_per_s": n_last * per_step_images / max(dt, 1e-9),
                        "skipped_images": self.skipped, "time": time.time()}
                    if self.scaler.is_enabled():
                        last["loss_scale"] = self.scaler.get_scale()
                    self.log_row(last)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}")
                    t_last, n_last, acc = time.perf_counter(), 0, {}
                self.periodic()
                saved = self.step % cfg.run.ckpt_interval == 0 or self.step == plan.target_steps
                if saved:
                    self.save()
                if self.stop_now and self.step < plan.target_steps:   # a stop signal: save, then leave
                    if not saved:
                        self.save()
                    bar.close()
                    raise RunInterrupted((self.stop.requested if self.stop else None) or "SIGTERM", self.step,
                                         f"{self.ckpts.last}")
        bar.close()
        return last

    def finish(self, last: dict) -> None:
        self.write_outputs(last)
        if self.env.is_main:
            atomic_write_json(self.run_dir / "done", {"step": self.step, "total_steps": self.plan.total_steps})
        D.barrier()



__all__ = ["DTYPES", "Loop", "Plan", "build_scheduler", "make_plan", "seed_all"]   # the driver: pretrain.runner
