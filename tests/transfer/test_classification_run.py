"""MUST-SHOW for ImageNet classification on the toy world (CPU): a tiny fine-tune and a tiny linear probe from
exported A2MIM weights run and write result.json; the weights are verified loaded (gate + load_report.json);
a run SIGKILLed mid-way and resumed ends bit-identical (weights, EMA, optimizer, RNG) to the uninterrupted one;
the linear probe leaves the backbone bit-identical; a backbone key missing from the weights fails clearly."""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pretrain"))   # the pre-training test helpers
from imgfactory import REPO  # noqa: E402
from test_train_resume import _assert_equal, _kill_at, _logged_steps  # noqa: E402

from benchmarks.toydata import write_imagenet  # noqa: E402
from pretrain.checkpoint import load_checkpoint  # noqa: E402
from pretrain.export_format import read_backbone, write_backbone  # noqa: E402
from pretrain.fileio import sha256_file  # noqa: E402
from transfer.classification.train import main  # noqa: E402

CLS = REPO / "transfer" / "classification" / "configs"
PT = REPO / "pretrain" / "configs"
SMALL = ["data.train_size=32", "data.test_size=32", "data.test_resize=36", "run.batch_per_gpu=8",
         "run.tensorboard=false", "run.log_interval=1"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)           # as the subprocess (OMP_NUM_THREADS=1): same kernels, same reduction order
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Toy ImageNet folder: 8 classes x 4 train / 2 val images of 32 px (32 train -> 4 steps of 8 per epoch)."""
    root = tmp_path_factory.mktemp("toy") / "imagenet"
    write_imagenet(root, size=32, seed=0, n_train=4, n_val=2)
    return root


def _pretrain_export(tmp: Path, config: str, train_root: Path) -> Path:
    """Two A2MIM pre-training steps, exported at the end exactly as a real run exports (method a2mim)."""
    from pretrain.config import load_config
    from pretrain.engine import train

    run = train(load_config(PT / config, [f"data.root={train_root}", f"run.out_dir={tmp / config}",
                                          "run.max_steps=2", "run.image_interval=0", "run.tensorboard=false"]))
    return run / "backbone.safetensors"


@pytest.fixture(scope="module")
def r18(tmp_path_factory, world) -> Path:
    return _pretrain_export(tmp_path_factory.mktemp("pt"), "tiny_r18.yaml", world / "train")


def _run(cfg: str, weights: Path, world: Path, out: Path, *extra: str) -> int:
    return main([str(CLS / cfg), "--weights", str(weights), "--data-root", str(world), "--work-dir", str(out),
                 *SMALL, *extra])


def test_tiny_finetune_from_a2mim_weights_writes_result_and_report(tmp_path, world, r18):
    run = tmp_path / "ft"
    assert _run("tiny_finetune_r18.yaml", r18, world, run, "run.max_steps=6", "run.eval_interval=1") == 0
    sd, meta = read_backbone(r18)
    report = json.loads((run / "load_report.json").read_text())
    assert report["ok"] and report["counts"]["missing"] == report["counts"]["unexpected"] == 0
    assert sorted(report["matched"]) == sorted(sd) and report["allowed_missing"] == ["fc.weight", "fc.bias"]
    res = json.loads((run / "result.json").read_text())
    assert (res["task"], res["method"], res["backbone"], meta["method"]) == ("in1k_finetune", "a2mim", "resnet18", "a2mim")
    # the tiny preset's protocol is 'toy'; command-line recipe overrides (SMALL) mark it changed
    # the weights' sidecar says epoch 0 (a few-step export): pt0, and the overrides mark the recipe
    assert res["protocol"] == "toy@pt0+overrides" and res["seed"] == 0
    m = res["metrics"]
    assert 0 <= m["top1"] <= m["top5"] <= 100 and 0 <= m["ema_top1"] <= 100 and m["steps"] == 6
    assert m["top1"] * 16 / 100 == pytest.approx(round(m["top1"] * 16 / 100))        # counts out of 16 val images
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_top1" in r]
    assert [r["step"] for r in evals] == [4, 6] and all(r["val_images"] == 16 for r in evals)   # epoch 1 + end
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["step"] == 6 and set(ck["ema"]) == set(ck["model"])
    assert json.loads((run / "done").read_text())["step"] == 6
    before = sha256_file(run / "checkpoints" / "last.pt"), (run / "result.json").read_text()
    assert _run("tiny_finetune_r18.yaml", r18, world, run, "run.max_steps=6", "run.eval_interval=1") == 0
    assert (sha256_file(run / "checkpoints" / "last.pt"), (run / "result.json").read_text()) == before  # no-op


def test_tiny_linear_probe_keeps_the_backbone_bit_identical(tmp_path, world, r18):
    run = tmp_path / "lin"
    assert _run("tiny_linprobe_r18.yaml", r18, world, run, "run.max_steps=4") == 0
    sd, _ = read_backbone(r18)
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    backbone = {k[len("backbone."):]: v for k, v in ck["model"].items() if k.startswith("backbone.")}
    _assert_equal(backbone, sd, "backbone")           # weights AND BatchNorm running statistics untouched
    assert set(ck["model"]) - {f"backbone.{k}" for k in sd} == {
        "head.0.running_mean", "head.0.running_var", "head.0.num_batches_tracked", "head.1.weight", "head.1.bias"}
    assert int(ck["model"]["head.0.num_batches_tracked"]) == 4               # the head's BN did train
    res = json.loads((run / "result.json").read_text())
    assert res["task"] == "in1k_linear" and 0 <= res["metrics"]["top1"] <= res["metrics"]["top5"] <= 100


def test_vit_finetune_maps_the_final_norm_into_fc_norm_and_resizes_positions(tmp_path, world):
    vit = _pretrain_export(tmp_path, "tiny_vit.yaml", world / "train")       # exported at 64 px (4x4 patches)
    run = tmp_path / "vit"
    assert _run("tiny_finetune_vit.yaml", vit, world, run, "run.max_steps=2") == 0   # fine-tuned at 32 px (2x2)
    report = json.loads((run / "load_report.json").read_text())
    assert report["ok"] and report["allowed_missing"] == ["head.weight", "head.bias"]
    assert "fc_norm.weight" in report["matched"] and "norm.weight" not in report["matched"]
    notes = " | ".join(report["notes"])
    assert "mapped norm.* -> fc_norm.*" in notes and "resized pos_embed (1, 17, 96) -> (1, 5, 96)" in notes
    assert json.loads((run / "result.json").read_text())["metrics"]["steps"] == 2


def test_missing_backbone_key_fails_before_training_with_a_clear_error(tmp_path, world, r18, capsys):
    # the sidecar check (transfer.weights.check_sidecar: the named architecture's keys and shapes) finds it before
    # the gate; the gate's own missing-key refusal is tests/transfer/test_weights.py's
    sd, meta = read_backbone(r18)
    del sd["layer2.0.conv1.weight"]
    broken = write_backbone(tmp_path / "broken.safetensors", sd, {k: v for k, v in meta.items()
                                                                  if k not in ("sha256", "num_tensors")})
    run = tmp_path / "run"
    assert _run("tiny_finetune_r18.yaml", broken, world, run, "run.max_steps=2") == 1
    err = capsys.readouterr().err
    assert "WeightsFormatError" in err and "1 missing" in err and "layer2.0.conv1.weight" in err
    assert not (run / "checkpoints").exists() and not (run / "result.json").exists()
    assert not (run / "checkpoints").exists() and not (run / "result.json").exists()


@pytest.mark.slow   # ~50 s: a second interpreter start (the killed run) on a loaded CPU
def test_sigkill_and_resume_is_bit_identical(tmp_path, world, r18):
    """RSB-style fine-tune with every stochastic part on: repeated augmentation, RandAugment, RandomErasing, Mixup/
    CutMix, drop path, EMA; evaluation every epoch (must not disturb the RNG streams); killed once step >= 5."""
    common = [*SMALL, "run.max_steps=10", "run.ckpt_interval=1", "run.eval_interval=1", "data.repeated_aug=3",
              "data.re_prob=0.25"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = lambda out: [str(CLS / "tiny_finetune_r18.yaml"), "--weights", str(r18), "--data-root", str(world),  # noqa
                        "--work-dir", str(out), *common]
    errors = []

    def kill():
        try:
            _kill_at([sys.executable, "-m", "transfer.classification.train", *args(resumed)], resumed, 5)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    killer = threading.Thread(target=kill)
    killer.start()                                   # the interrupted run starts in a subprocess ...
    assert main(args(straight)) == 0                 # ... while the straight one runs here
    killer.join()
    if errors:
        raise errors[0]
    assert not (resumed / "done").exists()
    assert main(args(resumed)) == 0                  # resume from the killed run's folder

    info = json.loads((resumed / "run_info.json").read_text())
    assert 0 < info["start_step"] < 10 and info["resumed_from"].endswith("last.pt"), info
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 11)), "each step logged once"
    assert [r["step"] for r in rows if "val_top1" in r] == [4, 8, 10]
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 10 and a["optimizer"]["state"]
    for key in ("model", "ema", "optimizer", "scaler", "rng"):
        _assert_equal(a[key], b[key], key)
    ra, rb = (json.loads((d / "result.json").read_text())["metrics"] for d in (straight, resumed))
    assert ra == rb
    assert _logged_steps(resumed)[-1] == 10


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_mixed_precision_finetune(tmp_path, world, r18, precision):
    run = tmp_path / "cuda"
    assert _run("tiny_finetune_r18.yaml", r18, world, run, "run.max_steps=3", "run.device=cuda",
                f"run.precision={precision}", "run.channels_last=true") == 0
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ("scale" in ck["scaler"]) == (precision == "fp16") and "cuda" in ck["rng"][0]
    assert all(v.dtype == torch.float32 for v in ck["ema"].values() if v.is_floating_point())
    assert json.loads((run / "result.json").read_text())["metrics"]["steps"] == 3
