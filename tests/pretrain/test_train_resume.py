"""MUST-SHOW: a run SIGKILLed at an arbitrary step and resumed ends bit-identical to the uninterrupted run.

The interrupted run is a real `python -m pretrain.train` process, killed with SIGKILL (no handler runs) once its
metrics show step >= kill_at, wherever it is then (mid-step, mid-checkpoint). The resume and the uninterrupted
run go through the same engine in this process (saves a ~15 s interpreter start each); everything runs on one
thread. Weights, buffers, optimizer state, scaler and RNG states of the two final checkpoints are compared with
torch.equal, and so are the exported backbones.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from imgfactory import CONFIGS, child_env, make_images, train_cmd
from pretrain.checkpoint import load_checkpoint
from pretrain.config import load_config
from pretrain.engine import train
from pretrain.export_format import read_backbone


def _assert_equal(a, b, where="state"):
    """Recursive exact equality: tensors with torch.equal (dtype and shape too), everything else with ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass
    return steps


def _kill_at(cmd, run: Path, kill_at: int, timeout: float = 240) -> None:
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + timeout
        while max(_logged_steps(run), default=0) < kill_at:
            if proc.poll() is not None:
                raise AssertionError(f"run ended before the kill (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
            assert time.time() < deadline, "run too slow to reach the kill step"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _train_here(config: str, overrides: list[str]) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)           # as the subprocess (OMP_NUM_THREADS=1): same kernels, same reduction order
    try:
        train(load_config(CONFIGS / config, overrides))
    finally:
        torch.set_num_threads(threads)


VARIANTS = {  # config, images, steps, kill once step >= (a checkpoint exists by then), overrides
    # ViT: drop path draws from the torch RNG every step; no workers; 5 steps per epoch
    "vit_workers0": ("tiny_vit.yaml", 20, 14, 6, ["data.num_workers=0", "run.batch_per_gpu=4", "run.ckpt_interval=1"]),
    # ResNet-18 (BatchNorm buffers), 1 worker process, gradient accumulation, 3 steps per epoch
    "r18_worker1_accum2": ("tiny_r18.yaml", 12, 5, 3, ["data.num_workers=1", "run.batch_per_gpu=2", "run.accum_steps=2",
                                                       "run.ckpt_interval=2", "run.keep_last=1"]),
    # the other data paths (JPEGs): WebDataset shards read per rank (3 shards of 5, 5, 2), on-device decoding on the
    # CPU (TorchCodec; DALI's CPU-only pipeline on shards); 3 steps per epoch, the kill lands in epoch 1
    "r18_shards_worker1": ("tiny_r18.yaml", 12, 7, 4, ["data.kind=shards", "data.num_workers=1", "run.batch_per_gpu=2",
                                                       "run.accum_steps=2", "run.ckpt_interval=2"]),
    "r18_torchcodec_worker1": ("tiny_r18.yaml", 12, 7, 4, ["data.kind=imagenet_folder", "data.backend=torchcodec",
                                                           "data.num_workers=1", "run.batch_per_gpu=4",
                                                           "run.ckpt_interval=2"]),
    "r18_dali_shards": ("tiny_r18.yaml", 12, 7, 4, ["data.kind=shards", "data.backend=dali", "data.dali_threads=1",
                                                    "data.num_workers=1", "run.batch_per_gpu=4", "run.ckpt_interval=2"]),
}
NEEDS = {"r18_torchcodec_worker1": ("torchcodec.decoders", "torchcodec not installed (pip install .[gpu_data])"),
         "r18_dali_shards": ("nvidia.dali", "nvidia-dali not installed (pip install .[dali])")}


def _data(tmp_path: Path, n_images: int, extra: list[str]) -> Path:
    """The variant's images: PNGs in a flat tree, JPEGs in an ImageNet folder, or that folder's shards."""
    kind = next((o.split("=", 1)[1] for o in extra if o.startswith("data.kind=")), "image_folder")
    if kind == "image_folder":
        return make_images(tmp_path / "imgs", n=n_images)
    root = make_images(tmp_path / "imgs", n=n_images, layout="imagenet")
    if kind == "imagenet_folder":
        return root
    from pretrain.shards import write_shards
    write_shards(root, tmp_path / "shards", shard_size=5)
    return tmp_path / "shards"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sigkill_and_resume_is_bit_identical(tmp_path, variant):
    config, n_images, steps, kill_at, extra = VARIANTS[variant]
    if variant in NEEDS:
        pytest.importorskip(NEEDS[variant][0], reason=NEEDS[variant][1])
    data = _data(tmp_path, n_images, extra)
    common = [f"data.root={data}", f"run.max_steps={steps}", "run.log_interval=1", "run.image_interval=0",
              "run.tensorboard=false", *extra]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    errors = []

    def kill():
        try:
            _kill_at(train_cmd(config, *common, f"run.out_dir={resumed}"), resumed, kill_at)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    killer = threading.Thread(target=kill)
    killer.start()                                   # the interrupted run starts in a subprocess ...
    _train_here(config, [*common, f"run.out_dir={straight}"])    # ... while the straight one runs here
    killer.join()
    if errors:
        raise errors[0]
    assert not (resumed / "done").exists()
    _train_here(config, [*common, f"run.out_dir={resumed}"])     # resume from the killed run's folder

    info = json.loads((resumed / "run_info.json").read_text())
    assert 0 < info["start_step"] < steps and info["resumed_from"].endswith("last.pt"), info
    assert _logged_steps(resumed) == list(range(1, steps + 1)), "each step logged exactly once after the resume"
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == steps
    _assert_equal(a["model"], b["model"], "model")
    _assert_equal(a["optimizer"], b["optimizer"], "optimizer")
    _assert_equal(a["scaler"], b["scaler"], "scaler")
    _assert_equal(a["rng"], b["rng"], "rng")
    assert a["optimizer"]["state"], "optimizer state is empty"
    wa, _ = read_backbone(straight / "backbone.safetensors")
    wb, _ = read_backbone(resumed / "backbone.safetensors")
    _assert_equal(wa, wb, "exported backbone")
