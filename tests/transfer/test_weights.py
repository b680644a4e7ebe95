"""transfer/weights.py: the load gate and the converters (exported timm names, official openmixup names)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from transfer.weights import (IncompleteLoadError, WeightsFormatError, _from_openmixup, _openmixup_vit_to_timm,
                              load_backbone_into, load_with_report, read_backbone_weights)

torch.set_num_threads(1)
C4 = "transfer/mmdet/configs/mask_rcnn_r50_c4_2x_moco.py"
UPERNET_VIT = "transfer/mmseg/configs/upernet_vit_base_160k.py"


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))      # 0.weight 0.bias 1.{weight,bias,running_*,nbt}


def _sevens(m: nn.Module) -> dict:
    return {k: torch.full_like(v, 7) for k, v in m.state_dict().items()}


# ----------------------------------------------------------------------------- the gate (plain torch)
def test_gate_fails_on_one_renamed_key_names_it_and_loads_nothing(tmp_path):
    m = _net()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    sd = _sevens(m)
    sd["0.weigth"] = sd.pop("0.weight")
    with pytest.raises(IncompleteLoadError) as e:
        load_with_report(m, sd, report_path=tmp_path / "load_report.json", source="ckpt.safetensors")
    msg = str(e.value)
    assert "1 missing, 1 unexpected, 0 shape-mismatched, 0 with NaN/inf values of 7 target tensors" in msg
    assert "missing     0.weight" in msg and "unexpected  0.weigth" in msg
    rep = json.loads((tmp_path / "load_report.json").read_text())
    assert rep["ok"] is False and rep["missing"] == ["0.weight"] and rep["unexpected"] == ["0.weigth"]
    assert rep["counts"]["matched"] == 6
    for k, v in m.state_dict().items():          # all-or-nothing: even the 6 matching tensors were not copied
        assert torch.equal(v, before[k]), k


def test_gate_fails_on_shape_mismatch():
    m = _net()
    sd = _sevens(m)
    sd["1.weight"] = torch.ones(5)
    with pytest.raises(IncompleteLoadError, match=r"shape\s+1.weight\s+target \[4\] vs source \[5\]"):
        load_with_report(m, sd)


def test_gate_loads_exact_values_with_allow_lists(tmp_path):
    m = _net()
    sd = {k: torch.arange(v.numel()).reshape(v.shape).to(v.dtype) for k, v in m.state_dict().items()}
    del sd["1.num_batches_tracked"]
    sd["mask_token"] = torch.zeros(1, 4)
    rep = load_with_report(m, sd, allow_missing=("*.num_batches_tracked",), allow_unexpected=("mask_token",),
                           report_path=tmp_path / "r.json")
    assert rep.ok and rep.allowed_missing == ["1.num_batches_tracked"] and rep.allowed_unexpected == ["mask_token"]
    assert rep.counts == {"matched": 6, "missing": 0, "unexpected": 0, "shape_mismatched": 0, "non_finite": 0,
                          "allowed_missing": 1, "allowed_unexpected": 1}
    assert m[0].bias.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert m[1].running_var.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert m[0].weight.flatten()[-1].item() == 4 * 3 * 3 * 3 - 1


def test_gate_prefixes_restrict_the_target():
    m = nn.Module()
    m.a, m.b = nn.Linear(2, 2), nn.Linear(2, 2)
    b_before = m.b.weight.detach().clone()
    rep = load_with_report(m, {"a.weight": torch.ones(2, 2), "a.bias": torch.ones(2)}, prefixes=["a."])
    assert rep.counts["matched"] == 2 and torch.equal(m.a.weight, torch.ones(2, 2))
    assert torch.equal(m.b.weight, b_before)
    with pytest.raises(IncompleteLoadError, match="1 unexpected"):      # b.* is outside the target: not silently used
        load_with_report(m, {"a.weight": torch.ones(2, 2), "a.bias": torch.ones(2), "b.bias": torch.ones(2)},
                         prefixes=["a."])


# ----------------------------------------------------------------------------- official openmixup names
def test_openmixup_vit_names_map_to_timm_beit():
    expect = {
        "patch_embed.projection.weight": "patch_embed.proj.weight",
        "cls_token": "cls_token", "pos_embed": "pos_embed",
        "layers.0.ln1.weight": "blocks.0.norm1.weight",
        "layers.7.ln2.bias": "blocks.7.norm2.bias",
        "layers.3.attn.qkv.weight": "blocks.3.attn.qkv.weight",
        "layers.3.attn.q_bias": "blocks.3.attn.q_bias",
        "layers.3.attn.relative_position_bias_table": "blocks.3.attn.relative_position_bias_table",
        "layers.3.attn.proj.bias": "blocks.3.attn.proj.bias",
        "layers.11.ffn.layers.0.0.weight": "blocks.11.mlp.fc1.weight",
        "layers.11.ffn.layers.1.bias": "blocks.11.mlp.fc2.bias",
        "layers.5.gamma_1": "blocks.5.gamma_1", "layers.5.gamma2": "blocks.5.gamma_2",
        "ln1.weight": "norm.weight",
    }
    assert {k: _openmixup_vit_to_timm(k) for k in expect} == expect


def test_openmixup_checkpoint_to_timm_state_dict(tmp_path):
    from pretrain.models import build_backbone
    timm_sd = build_backbone("vit_tiny", img_size=32).state_dict()
    # the same tensors under openmixup SimMIMViT names (inverse of the table above, written out)
    inv = [("patch_embed.proj.", "patch_embed.projection."), (".norm1.", ".ln1."), (".norm2.", ".ln2."),
           (".mlp.fc1.", ".ffn.layers.0.0."), (".mlp.fc2.", ".ffn.layers.1.")]
    om = {}
    for k, v in timm_sd.items():
        new = "ln1." + k[5:] if k.startswith("norm.") else k
        for a, b in inv:
            new = new.replace(a, b)
        om["backbone." + new.replace("blocks.", "layers.")] = v
    om["backbone.mask_token"] = torch.zeros(1, 1, 96)
    om["backbone.layers.0.attn.relative_position_index"] = torch.zeros(5, 5, dtype=torch.long)
    om["head.fc.weight"] = torch.zeros(3)       # outside the backbone: ignored
    sd, meta, notes = _from_openmixup({"state_dict": om}, tmp_path / "a2mim.pth")
    assert meta["kind"] == "vit" and set(sd) == set(timm_sd)
    assert all(torch.equal(sd[k], timm_sd[k]) for k in sd)
    assert any("mask_token" in n for n in notes) and any("relative_position_index" in n for n in notes)


def test_official_pth_read_through_safe_loader(tmp_path):
    pytest.importorskip("pretrain.checkpoint", reason="pretrain.checkpoint.load_checkpoint not written yet")
    from pretrain.models import build_backbone
    sd = build_backbone("resnet18").state_dict()
    path = tmp_path / "a2mim_r18.pth"
    torch.save({"state_dict": {**{f"backbone.{k}": v for k, v in sd.items()},
                               "backbone.mask_token": torch.zeros(1, 256, 1, 1)}, "meta": {}}, path)
    got, meta, notes = read_backbone_weights(path)
    assert meta["kind"] == "cnn" and set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


# ----------------------------------------------------------------------------- into real mmdet / mmseg models
def _build(cfg_path: str, scope: str, weights=None):
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    from transfer.openmmlab_models import fill_exported_backbone
    cfg = Config.fromfile(cfg_path)          # custom_imports registers the suite's modules
    if weights is not None:                  # the contract: the architecture from the weights' sidecar
        from pretrain.export_format import read_backbone
        fill_exported_backbone(cfg, read_backbone(weights)[1])
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg.model)


@pytest.mark.openmmlab
def test_r50_export_into_mask_rcnn_c4_backbone_and_res5_head(r50_weights, tmp_path):
    from safetensors.torch import load_file
    model = _build(C4, "mmdet")
    rep = load_backbone_into(model, r50_weights, report_path=tmp_path / "load_report.json")
    # torchvision R50 without fc: 53 convs (stem 1 + 16 blocks x 3 + 4 downsample) + 53 BNs x 5 tensors = 318
    assert rep.counts == {"matched": 318, "missing": 0, "unexpected": 0, "shape_mismatched": 0, "non_finite": 0,
                          "allowed_missing": 0, "allowed_unexpected": 0}
    assert rep.prefixes == ["backbone.", "roi_head.shared_head.layer4."]
    src = load_file(str(r50_weights))
    sd = model.state_dict()
    assert torch.equal(sd["roi_head.shared_head.layer4.2.conv3.weight"], src["layer4.2.conv3.weight"])
    assert torch.equal(sd["backbone.layer3.5.bn2.running_var"], src["layer3.5.bn2.running_var"])
    assert "roi_head.shared_head.norm.weight" not in rep.matched        # the extra norm is new, not pre-trained
    assert json.loads((tmp_path / "load_report.json").read_text())["counts"]["missing"] == 0


@pytest.mark.openmmlab
def test_gate_fails_on_exported_r50_with_one_renamed_key(r50_weights, tmp_path):
    from pretrain.export_format import read_backbone, write_backbone
    sd, meta = read_backbone(r50_weights)
    sd["layer2.0.conv2.weights"] = sd.pop("layer2.0.conv2.weight")
    bad = write_backbone(tmp_path / "renamed.safetensors", sd, {k: v for k, v in meta.items() if k != "sha256"})
    with pytest.raises(WeightsFormatError, match=r"do not fit the architecture its sidecar names \(resnet50.*"
                                                 r"1 missing e.g. \['layer2.0.conv2.weight'\]"):
        read_backbone_weights(bad)          # reading refuses a sidecar that does not describe the tensors ...
    model = _build(C4, "mmdet")
    with pytest.raises(IncompleteLoadError) as e:   # ... and the gate refuses them on its own too
        load_backbone_into(model, bad, report_path=tmp_path / "load_report.json", loaded=(sd, meta, []))
    assert "missing     backbone.layer2.0.conv2.weight" in str(e.value)
    assert "unexpected  backbone.layer2.0.conv2.weights" in str(e.value)
    assert json.loads((tmp_path / "load_report.json").read_text())["missing"] == ["backbone.layer2.0.conv2.weight"]


@pytest.mark.openmmlab
def test_gate_fails_when_the_c4_res5_head_gets_no_weights(r50_weights, tmp_path):
    from pretrain.export_format import read_backbone, write_backbone
    sd, meta = read_backbone(r50_weights)
    part = {k: v for k, v in sd.items() if "layer4" not in k}
    no_res5 = write_backbone(tmp_path / "no_layer4.safetensors", part, {k: v for k, v in meta.items() if k != "sha256"})
    with pytest.raises(IncompleteLoadError, match=r"missing     roi_head.shared_head.layer4.0.conv1.weight"):
        load_backbone_into(_build(C4, "mmdet"), no_res5, loaded=(part, meta, []))


@pytest.mark.openmmlab
def test_vitb_export_into_upernet_vit_zero_missing_and_resized(vitb_weights, tmp_path):
    from safetensors.torch import load_file
    from transfer.backbones import load_exported
    from transfer.weights import read_backbone_weights
    model = _build(UPERNET_VIT, "mmseg", vitb_weights)
    rep = load_exported(model, read_backbone_weights(vitb_weights), report_path=tmp_path / "load_report.json",
                        prefix="backbone.")
    # timm Beit ViT-B: 4 (cls, pos, patch w/b) + 12 blocks x 16 + final norm 2 = 198, all loaded (the unused final
    # norm keeps its values, frozen: FeatureBackbone.unused)
    assert rep.counts == {"matched": 198, "missing": 0, "unexpected": 0, "shape_mismatched": 0, "non_finite": 0,
                          "allowed_missing": 0, "allowed_unexpected": 0}
    assert model.backbone.unused == {"norm.weight", "norm.bias"}
    assert "resized pos_embed (1, 197, 768) -> (1, 1025, 768)" in rep.notes          # 224/16=14 -> 512/16=32
    assert "resized blocks.0.attn.relative_position_bias_table (732, 12) -> (3972, 12)" in rep.notes  # 27^2+3, 63^2+3
    src = load_file(str(vitb_weights))
    bb = model.backbone.body
    assert torch.equal(bb.pos_embed[0, 0], src["pos_embed"][0, 0])                  # cls position kept as is
    assert torch.equal(bb.blocks[7].attn.qkv.weight, src["blocks.7.attn.qkv.weight"])
    assert torch.equal(bb.blocks[11].gamma_2, src["blocks.11.gamma_2"])
