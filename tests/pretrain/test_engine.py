"""Engine: tiny pre-training learns and writes its run folder, NaN guard, skip budget, lr schedule, launch env."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image

from imgfactory import CONFIGS, REPO, child_env, make_images, write_corrupt
from pretrain.checkpoint import CheckpointError, load_checkpoint
from pretrain.config import load_config, to_yaml
from pretrain.data import DataError
from pretrain.distributed import env_from
from pretrain.engine import build_model, build_optimizer, build_scheduler, make_plan, train
from pretrain.fileio import sha256_file


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _cfg(config, data, out, *extra):
    return load_config(CONFIGS / config, [f"data.root={data}", f"run.out_dir={out}", "run.tensorboard=true", *extra])


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_vit_loss_goes_down_and_writes_the_run_folder(tmp_path):
    data = make_images(tmp_path / "imgs", n=32)
    run = tmp_path / "run"
    cfg = _cfg("tiny_vit.yaml", data, run, "run.max_steps=40", "run.image_interval=20", "run.ckpt_interval=100")
    train(cfg)
    rows = _rows(run)
    assert [r["step"] for r in rows] == list(range(5, 41, 5))
    first, last = rows[0]["loss"], sum(r["loss"] for r in rows[-2:]) / 2
    assert all(math.isfinite(r["loss"]) for r in rows) and last < 0.7 * first, [r["loss"] for r in rows]
    assert {"lr", "loss_spatial", "loss_freq", "images_per_s", "skipped_images", "epoch"} <= rows[-1].keys()
    assert rows[-1]["skipped_images"] == 0 and rows[-1]["images_per_s"] > 0
    # reconstruction grids: 3 rows (original / masked / reconstruction) x 4 images of 64 px, 2 px padding
    for step in (20, 40):
        with Image.open(run / "recon" / f"step_{step:08d}.png") as im:
            assert im.size == (4 * 66 + 2, 3 * 66 + 2)
    assert (run / "config.yaml").read_text() == to_yaml(cfg)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"] == to_yaml(cfg)
    assert json.loads((run / "done").read_text())["step"] == 40
    assert list((run / "tb").glob("events.out.tfevents.*"))
    result = json.loads((run / "result.json").read_text())
    assert result["task"] == "pretrain" and result["metrics"]["steps"] == 40.0
    assert (run / "backbone.safetensors").is_file()
    # complete: a second start does nothing
    before = sha256_file(run / "checkpoints" / "last.pt"), (run / "metrics.jsonl").read_text()
    train(cfg)
    assert (sha256_file(run / "checkpoints" / "last.pt"), (run / "metrics.jsonl").read_text()) == before


def test_nan_guard_names_step_and_losses_and_keeps_the_good_checkpoint(tmp_path):
    data = make_images(tmp_path / "imgs", n=16)
    run = tmp_path / "run"
    train(_cfg("tiny_vit.yaml", data, run, "run.max_steps=2", "run.export_at_end=false"))
    last = run / "checkpoints" / "last.pt"
    good = sha256_file(last)
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(FloatingPointError, match=r"Loss became infinite or NaN at step=3 \(epoch 1\).*"
                                                 r"'loss': nan.*'loss_spatial'.*'loss_freq'"):
        train(_cfg("tiny_vit.yaml", data, run, "run.max_steps=6", "run.ckpt_interval=100", "run.debug_nan_step=3"))
    assert sha256_file(last) == good and sorted(p.name for p in (run / "checkpoints").iterdir()) == files
    assert load_checkpoint(last)["step"] == 2
    assert json.loads((run / "done").read_text())["step"] == 2
    # the same folder with another model: a clear refusal, not a half-loaded state
    with pytest.raises(CheckpointError, match=r"last.pt does not fit this run \(config keys changed since: "
                                              r"\[.*'model.preset'.*\]\)"):
        train(_cfg("tiny_r18.yaml", data, run, "run.max_steps=6"))


def test_skip_budget_exceeded_is_a_clear_error(tmp_path):
    data = make_images(tmp_path / "imgs", n=4)
    write_corrupt(data / "c0", "broken.png")
    run = tmp_path / "run"
    # 5 images, batch 5: every step loads the broken one; budget 1 -> step 1 passes, step 2 fails
    cfg = _cfg("tiny_r18.yaml", data, run, "run.batch_per_gpu=5", "data.skip_budget=1", "run.log_interval=1",
               "run.max_steps=3")
    with pytest.raises(DataError, match=r"2 unreadable images skipped so far, more than the skip budget "
                                        r"data.skip_budget=1; last on this rank: \[.*broken.png: unreadable image"):
        with pytest.warns(UserWarning, match="broken.png"):
            train(cfg)
    assert [(r["step"], r["skipped_images"]) for r in _rows(run)] == [(1, 1)]


def test_lr_schedule_hand_values(tmp_path):
    cfg = load_config(CONFIGS / "a2mim_r50_ep300.yaml")
    plan = make_plan(cfg, num_images=1_281_167, world_size=8)
    assert plan.global_batch == 2048 and plan.lr == pytest.approx(1.2e-3) and plan.steps_per_epoch == 625
    cfg = _cfg("tiny_vit.yaml", "unused", "unused", "schedule.epochs=5", "schedule.warmup_epochs=1",
               "schedule.min_lr=1e-5", "optim.lr=1e-3", "optim.token_lr_mult=0.5")
    model = build_model(cfg)
    opt = build_optimizer(model, cfg, cfg.optim.lr)
    sched = build_scheduler(opt, cfg, spe=10)          # warm-up 10 steps, cosine over the other 40

    def lrs(t):
        sched.step_update(t)
        return {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs(0)["decay"] == 0.0 and lrs(5)["decay"] == pytest.approx(5e-4) and lrs(10)["decay"] == pytest.approx(1e-3)
    assert lrs(30)["decay"] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))              # cos(pi/2) = 0
    assert lrs(50)["decay"] == pytest.approx(1e-5)
    assert lrs(10)["mask_token"] == pytest.approx(0.5e-3)                                # token lr multiplier
    assert lrs(50)["mask_token"] == pytest.approx(1e-5)               # every group ends at the absolute min_lr
    wd = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert wd["decay"] == 0.05 and wd["no_decay"] == 0.0 and wd["mask_token"] == 0.0
    lamb_cfg = _cfg("tiny_vit.yaml", "unused", "unused", "optim.name=lamb", "optim.token_lr_mult=0.5")
    lamb = build_optimizer(model, lamb_cfg, 1e-3)
    assert type(lamb).__name__ == "Lamb" and [g["initial_lr"] if "initial_lr" in g else g["lr"]
                                              for g in lamb.param_groups] == [1e-3, 1e-3, 0.5e-3]
    epoch_cfg = _cfg("tiny_vit.yaml", "unused", "unused", "schedule.epochs=5", "schedule.warmup_epochs=2",
                     "optim.lr=1e-3", "schedule.min_lr=0", "schedule.per_iteration=false")
    sched = build_scheduler(opt, epoch_cfg, spe=10)          # epoch units: warm-up 2 epochs, cosine over 3
    sched.step(1)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    sched.step(3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-3 * (1 + math.cos(math.pi / 3)))
    step_cfg = _cfg("tiny_vit.yaml", "unused", "unused", "schedule.epochs=5", "schedule.warmup_epochs=1",
                    "optim.lr=1e-3", "schedule.kind=step", "schedule.step_epochs=[3]")
    sched = build_scheduler(opt, step_cfg, spe=10)
    assert lrs(29)["decay"] == pytest.approx(1e-3) and lrs(30)["decay"] == pytest.approx(1e-4)   # at epoch 3 exactly


def test_launch_environment(tmp_path, monkeypatch):
    assert env_from({}).world_size == 1
    e = env_from({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1234"})
    fields = lambda e: (e.rank, e.world_size, e.local_rank, e.master_addr, e.master_port, e.source)  # noqa: E731
    assert fields(e) == (3, 4, 1, "h", 1234, "torchrun")
    assert env_from({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}).source == "single"   # one task: no process group
    conf = tmp_path / "slurm.conf"         # scontrol expands host lists from a config; no daemon needed
    conf.write_text("ClusterName=t\nSlurmctldHost=localhost\nNodeName=n[1-2] CPUs=1\nPartitionName=p Nodes=ALL\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    e = env_from({"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "77",
                  "SLURM_JOB_NODELIST": "gpu[07-08]"})
    assert fields(e) == (5, 8, 1, "gpu07", 15077, "slurm")
    with pytest.raises(RuntimeError, match="SLURM_PROCID='x' is not an integer"):
        env_from({"SLURM_NTASKS": "2", "SLURM_PROCID": "x", "MASTER_ADDR": "a"})


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs(tmp_path, device, precision):
    data = make_images(tmp_path / "imgs", n=8)
    run = tmp_path / "run"
    train(_cfg("tiny_vit.yaml", data, run, f"run.device={device}", f"run.precision={precision}", "run.max_steps=3",
               "run.log_interval=1", "run.channels_last=true", "run.export_at_end=false", "run.cpu_amp=true"))
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in rows)
    assert ("loss_scale" in rows[-1]) == (precision == "fp16")       # GradScaler only for fp16
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ("scale" in ck["scaler"]) == (precision == "fp16")       # a disabled GradScaler has an empty state
    assert ("cuda" in ck["rng"][0]) == (device == "cuda")
    assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())  # fp32 master weights


def test_mixed_precision_on_cpu_falls_back_to_fp32(tmp_path, caplog):
    # a GPU preset on a CPU: fp32 with one warning (CPU autocast + GradScaler ran ~200x slower), unless run.cpu_amp
    data = make_images(tmp_path / "imgs", n=8)
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="pretrain"):
        train(_cfg("tiny_r18.yaml", data, run, "run.device=cpu", "run.precision=fp16", "run.max_steps=2",
                   "run.log_interval=1", "run.export_at_end=false"))
    warned = [r.getMessage() for r in caplog.records if "on a CPU: running fp32" in r.getMessage()]
    assert len(warned) == 1 and "run.precision=fp16" in warned[0] and "run.cpu_amp=true" in warned[0]
    assert "loss_scale" not in _rows(run)[-1]                        # no GradScaler: fp32
    assert "precision: fp32" in (run / "config.yaml").read_text()   # the dumped config says what ran


_DDP_SCRIPT = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    from pretrain.config import load_config
    from pretrain.engine import Trainer
    cfg = load_config(sys.argv[1], sys.argv[3:])
    tr = Trainer(cfg)
    tr.setup()
    tr.finish(tr.fit())
    shard = tr.sampler.indices()                                      # this rank's indices of the last epoch
    flat = torch.cat([p.detach().flatten() for p in tr.model.parameters()])
    got = [None] * dist.get_world_size()
    dist.all_gather_object(got, {"rank": dist.get_rank(), "shard": shard, "sum": flat.double().sum().item(),
                                 "first": flat[:50].tolist(), "world": tr.env.world_size})
    if dist.get_rank() == 0:
        open(sys.argv[2], "w").write(json.dumps(got))
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_process_gloo_ddp_disjoint_shards(tmp_path):
    data = make_images(tmp_path / "imgs", n=16)
    script, out = tmp_path / "ddp.py", tmp_path / "ranks.json"
    script.write_text(_DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(CONFIGS / "tiny_vit.yaml"), str(out), f"data.root={data}", f"run.out_dir={tmp_path / 'run'}",
           "run.max_steps=3", "run.batch_per_gpu=4", "run.log_interval=1", "run.tensorboard=false"]
    proc = subprocess.run(cmd, env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = json.loads(out.read_text())
    assert r0["world"] == r1["world"] == 2
    assert len(r0["shard"]) == len(r1["shard"]) == 8 and not set(r0["shard"]) & set(r1["shard"])
    assert r0["first"] == r1["first"] and r0["sum"] == r1["sum"]          # DDP kept the replicas identical
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in rows)
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["global_batch"] == 8
