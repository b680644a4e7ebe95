"""MUST-SHOW: a broken or mislabelled backbone never gives a normal-looking result. An all-NaN export fails the load
gate of every framework naming a tensor (mmdet, mmseg, detectron2, classification, frozen probes); a sidecar whose
architecture does not fit its tensors is refused before anything is labelled; a NaN/inf loss stops an mmseg run
(FloatingPointError, exit 2, no result.json); pre-training refuses to checkpoint weights that exploded."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "faults"))
from faultutil import transfer_fixtures  # noqa: E402

NAN_NAME = r"non-finite\s+\S*(conv1\.weight|bn1\.\w+|patch_embed\S*)\s+\d+ NaN"


def _nan_export(src: Path, dst: Path) -> Path:
    from pretrain.export_format import read_backbone, write_backbone
    sd, meta = read_backbone(src)
    bad = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in sd.items()}
    return write_backbone(dst, bad, {k: v for k, v in meta.items() if k not in ("sha256", "num_tensors")})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    fx = transfer_fixtures()
    tmp = tmp_path_factory.mktemp("broken")
    r50 = fx.export(tmp, "resnet50")
    from benchmarks.toydata import write_imagenet
    from pretrain.export import export_random
    imagenet = tmp / "imagenet"
    write_imagenet(imagenet, size=32, seed=0, n_train=2, n_val=1)
    r18 = export_random(tmp / "r18.safetensors", ["model.preset=resnet18", "model.input_size=32"])
    return {"coco": fx.make_coco(tmp / "coco", 2, 1), "ade": fx.make_ade(tmp / "ade", 2, 1).parent,
            "imagenet": imagenet, "r50_nan": _nan_export(r50, tmp / "r50_nan.safetensors"),
            "r18_nan": _nan_export(r18, tmp / "r18_nan.safetensors"), "r18": r18, "tmp": tmp}


def _assert_named(err: str):
    import re
    assert "NaN/inf" in err and re.search(NAN_NAME, err), err[-3000:]
    assert "Traceback" not in err


@pytest.mark.openmmlab
@pytest.mark.parametrize("fw", ["mmdet", "mmseg"])
def test_all_nan_backbone_fails_the_openmmlab_gate(world, tmp_path, capsys, fw, tally):
    from transfer.openmmlab_common import cli
    mod = __import__(f"transfer.{fw}.train", fromlist=["x"])
    config = {"mmdet": "transfer/mmdet/configs/mask_rcnn_r50_fpn_1x.py",
              "mmseg": "transfer/mmseg/configs/upernet_r50_160k.py"}[fw]
    root = world["coco"] if fw == "mmdet" else world["ade"]
    rc = cli(getattr(mod, fw.upper()), [str(REPO / config), "--weights", str(world["r50_nan"]), "--work-dir",
                                        str(tmp_path / "w"), "--data-root", str(root), "--tiny", "64"])
    assert rc == 2
    _assert_named(capsys.readouterr().err)
    assert not (tmp_path / "w" / "result.json").exists()
    tally.error(f"nan_backbone_{fw}")


@pytest.mark.detectron2
def test_all_nan_backbone_fails_the_detectron2_gate(world, tmp_path, capsys, tally):
    pytest.importorskip("detectron2")
    from transfer.detectron2.train import main
    rc = main(["--config", "r50_fpn_1x", "--weights", str(world["r50_nan"]), "--data-root", str(world["coco"]),
               "--output-dir", str(tmp_path / "d2"), "SOLVER.MAX_ITER", "1", "DATALOADER.NUM_WORKERS", "0"])
    assert rc == 2
    _assert_named(capsys.readouterr().err)
    tally.error("nan_backbone_detectron2")


def test_all_nan_backbone_fails_classification_and_frozen(world, tmp_path, capsys, tally):
    from transfer.classification.train import main as cls_main
    from transfer.frozen.train import main as frozen_main
    cls = REPO / "transfer" / "classification" / "configs" / "tiny_linprobe_r18.yaml"
    assert cls_main([str(cls), "--weights", str(world["r18_nan"]), "--data-root", str(world["imagenet"]),
                     "--work-dir", str(tmp_path / "cls"), "data.train_size=32", "data.test_size=32",
                     "data.test_resize=36", "run.batch_per_gpu=8"]) == 1
    _assert_named(capsys.readouterr().err)
    frozen = REPO / "transfer" / "frozen" / "configs" / "toy_linear.yaml"
    assert frozen_main([str(frozen), "--weights", str(world["r18_nan"]), "--data-root", str(world["imagenet"]),
                        "--work-dir", str(tmp_path / "lin"), f"--cache-dir={tmp_path / 'cache'}"]) == 1
    _assert_named(capsys.readouterr().err)
    tally.error("nan_backbone_classification", "nan_backbone_frozen")


def test_a_sidecar_that_lies_about_the_architecture_is_refused(world, tmp_path, capsys, tally):
    """R18 tensors whose sidecar says resnet50 would be reported as a ResNet-50: refused before any label."""
    import json
    from pretrain.export_format import read_backbone, write_backbone
    from transfer.frozen.train import main as frozen_main
    sd, meta = read_backbone(world["r18"])
    lie = write_backbone(tmp_path / "lie.safetensors", sd, {**{k: v for k, v in meta.items() if k != "sha256"},
                                                            "preset": "resnet50", "timm_name": "resnet50"})
    frozen = REPO / "transfer" / "frozen" / "configs" / "toy_linear.yaml"
    assert frozen_main([str(frozen), "--weights", str(lie), "--data-root", str(world["imagenet"]), "--work-dir",
                        str(tmp_path / "lin")]) == 1
    err = capsys.readouterr().err
    assert "do not fit the architecture its sidecar names (resnet50, preset resnet50)" in err
    assert "layer1.0.conv3.weight" in err and not (tmp_path / "lin" / "result.json").exists()
    half = write_backbone(tmp_path / "half.safetensors", sd, {**{k: v for k, v in meta.items() if k != "sha256"},
                                                              "preset": "resnet50"})   # preset and timm_name disagree
    assert frozen_main([str(frozen), "--weights", str(half), "--data-root", str(world["imagenet"]), "--work-dir",
                        str(tmp_path / "lin2")]) == 1
    assert "sidecar says preset 'resnet50' (timm resnet50) but timm_name 'resnet18'" in capsys.readouterr().err
    assert json.loads(Path(str(half).replace(".safetensors", ".json")).read_text())["preset"] == "resnet50"
    tally.error("sidecar_lies_architecture", "sidecar_contradicts_itself")


@pytest.mark.openmmlab
@pytest.mark.slow
def test_a_nan_loss_stops_an_mmseg_run(world, tmp_path, capsys, tally):
    from transfer.mmseg.train import MMSEG
    from transfer.openmmlab_common import cli
    fx = transfer_fixtures()
    r50 = fx.export(world["tmp"], "resnet50")
    rc = cli(MMSEG, [str(REPO / "transfer/mmseg/configs/upernet_r50_160k.py"), "--weights", str(r50), "--work-dir",
                     str(tmp_path / "w"), "--data-root", str(world["ade"]), "--tiny", "64", "--iters", "4",
                     "--cfg-options", "optim_wrapper.optimizer.lr=1e12", "optim_wrapper.clip_grad=None"])
    err = capsys.readouterr().err
    assert rc == 2 and "Loss became infinite or NaN at iteration=" in err, err[-3000:]
    assert not (tmp_path / "w" / "result.json").exists()
    tally.error("nan_loss_mmseg")


def test_pretraining_refuses_to_checkpoint_exploded_weights(tmp_path, tally):
    sys.path.insert(0, str(REPO / "tests" / "pretrain"))
    from imgfactory import CONFIGS, make_images
    from pretrain.config import load_config
    from pretrain.engine import Trainer
    data = make_images(tmp_path / "imgs", n=8)
    cfg = load_config(CONFIGS / "tiny_r18.yaml", [f"data.root={data}", f"run.out_dir={tmp_path / 'run'}",
                                                  "run.tensorboard=false", "data.num_workers=0"])
    t = Trainer(cfg)
    t.setup()
    t.save()                                                        # a sane state: written
    with torch.no_grad():
        t.model.backbone.state_dict()["conv1.weight"].mul_(1e6)     # finite, but 1e6 x larger
    with pytest.raises(FloatingPointError, match=r"weights exploded: max \|w\| = .* \(backbone\.\S*conv1\.weight\)"
                                                 r".*more than run\.max_weight_growth=1000"):
        t.save()
    assert [s for s, _ in t.ckpts.numbered()] == [0]                # the good checkpoint only
    t.logger.close()
    tally.error("pretrain_exploded_weights")
