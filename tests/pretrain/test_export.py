"""Export: checkpoint -> .safetensors + sidecar round trip; random-init baseline; weights load into timm/torchvision."""
from __future__ import annotations

import json

import pytest
import timm
import torch

from imgfactory import CONFIGS, make_images
from pretrain.checkpoint import load_checkpoint
from pretrain.config import load_config
from pretrain.engine import train
from pretrain.export import main as export_main
from pretrain.export_format import read_backbone


def _timm_from_sidecar(meta):
    """The backbone a downstream user builds from the sidecar alone."""
    kw = dict(meta["timm_kwargs"], num_classes=0)
    if meta["kind"] == "vit":
        kw["img_size"] = meta["input_size"]
    return timm.create_model(meta["timm_name"], pretrained=False, **kw)


def test_export_from_run_round_trips(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=8)      # 8 images, batch 8: one step per epoch
    run = tmp_path / "run"
    cfg = load_config(CONFIGS / "tiny_vit.yaml", [f"data.root={data}", f"run.out_dir={run}", "run.max_steps=3",
                                                  "run.export_at_end=false", "run.tensorboard=false"])
    train(cfg)
    out = tmp_path / "exp" / "vit.safetensors"
    assert export_main([str(run), "--out", str(out)]) == 0
    sd, meta = read_backbone(out)
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    backbone = {k.removeprefix("backbone."): v for k, v in ck["model"].items() if k.startswith("backbone.")}
    assert sd.keys() == backbone.keys() and all(torch.equal(sd[k], backbone[k]) for k in sd)
    assert not any("mask_token" in k or "decoder" in k for k in sd)
    assert {k: meta[k] for k in ("preset", "timm_name", "kind", "method", "inject_module", "inject_stride",
                                 "input_size", "step", "epoch")} == {
        "preset": "vit_tiny", "timm_name": "beit_base_patch16_224", "kind": "vit", "method": "a2mim",
        "inject_module": "patch_embed", "inject_stride": 16, "input_size": 64, "step": 3, "epoch": 3}
    assert meta["timm_kwargs"]["embed_dim"] == 96 and meta["timm_kwargs"]["drop_path_rate"] == 0.1
    assert meta["pretrain_config"]["model"]["preset"] == "vit_tiny" and meta["pretrain_config"]["run"]["max_steps"] == 3
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    _timm_from_sidecar(meta).load_state_dict(sd, strict=True)
    # the same from the checkpoint file itself
    out2 = tmp_path / "exp" / "vit2.safetensors"
    assert export_main([str(run / "checkpoints" / "last.pt"), "--out", str(out2)]) == 0
    assert json.loads(out2.with_suffix(".json").read_text())["sha256"] == meta["sha256"]


def test_random_resnet50_loads_into_timm_and_torchvision(tmp_path):
    import torchvision

    out = tmp_path / "r50.safetensors"
    assert export_main(["--random", "--preset", "resnet50", "--seed", "1", "--out", str(out)]) == 0
    sd, meta = read_backbone(out)
    assert (meta["method"], meta["preset"], meta["inject_module"], meta["inject_stride"], meta["step"]) == (
        "random", "resnet50", "layer3", 16, 0)
    _timm_from_sidecar(meta).load_state_dict(sd, strict=True)
    timm.create_model("resnet50", num_classes=0).load_state_dict(sd, strict=True)
    tv = torchvision.models.resnet50()
    report = tv.load_state_dict(sd, strict=False)            # load report: only the classifier may be missing
    assert sorted(report.missing_keys) == ["fc.bias", "fc.weight"] and report.unexpected_keys == []
    again = tmp_path / "again.safetensors"
    assert export_main(["--random", "--preset", "resnet50", "--seed", "1", "--out", str(again)]) == 0
    assert read_backbone(again)[1]["sha256"] == meta["sha256"]   # seeded: reproducible


def test_random_simmim_sidecar_and_bad_inputs(tmp_path, capsys):
    out = tmp_path / "s.safetensors"
    assert export_main(["--random", "--preset", "resnet18", "--set", "model.method=simmim", "--out", str(out)]) == 0
    assert read_backbone(out)[1]["inject_module"] == "maxpool" and read_backbone(out)[1]["inject_stride"] == 4
    assert export_main(["--random", "resnet18", "model.input_size=64", "--method", "rand_init", "--out", str(out)]) == 0
    assert (read_backbone(out)[1]["input_size"], read_backbone(out)[1]["method"]) == (64, "rand_init")
    assert export_main(["--random", "--preset", "resnet18", "--set", "model.methd=simmim", "--out", str(out)]) == 1
    assert "unknown config key 'model.methd' (did you mean 'model.method'?)" in capsys.readouterr().err
    assert export_main([str(tmp_path / "no_run"), "--out", str(out)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert export_main([str(tmp_path / "junk.pt"), "--out", str(out)]) == 1
    assert "junk.pt: not a readable checkpoint" in capsys.readouterr().err
    torch.save({"model": {}}, tmp_path / "other.pt")
    assert export_main([str(tmp_path / "other.pt"), "--out", str(out)]) == 1
    assert "not a pre-training checkpoint (no 'config' entry)" in capsys.readouterr().err


@pytest.mark.slow
def test_random_vit_base_loads_into_the_matching_timm_model(tmp_path):
    out = tmp_path / "vitb.safetensors"
    assert export_main(["--random", "--preset", "vit_base", "--out", str(out)]) == 0
    sd, meta = read_backbone(out)
    assert meta["timm_name"] == "beit_base_patch16_224" and meta["input_size"] == 224
    model = _timm_from_sidecar(meta)
    model.load_state_dict(sd, strict=True)
    assert sum(v.numel() for v in sd.values()) == sum(p.numel() for p in model.state_dict().values())
