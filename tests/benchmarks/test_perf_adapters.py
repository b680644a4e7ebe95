"""The adapter-vs-direct benchmark: the 'timm' baseline really is the adapter's model, and the script runs."""
import json

import pytest
import torch

pytestmark = pytest.mark.openmmlab

TINY = ["--preset", "vit_tiny", "--size", "64", "--iters", "1", "--warmup", "0", "--threads", "1", "--rois", "8"]


def test_timm_baseline_has_the_adapters_weights_and_features():
    """Same seed -> same timm Beit inside both; same features for the same input (so the ratio is pure overhead)."""
    from benchmarks.perf.adapters import PerfTimmViT
    from pretrain.models import get_preset
    from transfer.backbones import FeatureBackbone
    p = get_preset("vit_tiny")
    torch.manual_seed(0)
    ours = FeatureBackbone(p.timm_name, p.timm_kwargs, "vit", out_indices=(1, 3), img_size=64, drop_path=0.0).eval()
    torch.manual_seed(0)
    direct = PerfTimmViT(p.timm_name, 64, (1, 3), {**p.timm_kwargs, "drop_path_rate": 0.0}).eval()
    sd = direct.vit.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in ours.body.state_dict().items())     # same seed, same timm init
    assert ours.unused == {"norm.weight", "norm.bias"}                           # adapter: final_norm=False
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = ours(x), direct(x)
    assert len(a) == len(b) == 2
    for fa, fb in zip(a, b):
        assert fa.shape == fb.shape == (2, 96, 4, 4) and torch.allclose(fa, fb, atol=1e-6)


def test_mmseg_beit_baseline_has_the_same_shape():
    from benchmarks.perf.adapters import _arch, backbone_cfg
    arch = _arch("vit_small", 224)                                   # official ViT-S: 8 x 768, 8 heads, MLP 2304
    assert (arch["dim"], arch["depth"], arch["heads"], arch["mlp_ratio"]) == (768, 8, 8, 3)
    cfg = backbone_cfg("mmseg_beit", "mmdet", arch, 224, (7,))
    assert cfg["type"] == "mmseg.BEiT" and cfg["embed_dims"] == 768 and cfg["num_layers"] == 8
    assert backbone_cfg("mmseg_beit", "mmseg", arch, 224, (7,))["type"] == "BEiT"
    with pytest.raises(ValueError, match="needs a ViT preset"):
        _arch("resnet18", 64)


def test_adapters_mmseg_end_to_end_json(tmp_path):
    from benchmarks.perf import adapters
    out = tmp_path / "adapters.json"
    res = adapters.main(TINY + ["--frameworks", "mmseg", "--variants", "adapter", "timm", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    (row,) = res["results"]
    assert row["framework"] == "mmseg" and row["batch"] == 2
    for k in ("adapter_s", "timm_s", "backbone_adapter_s", "backbone_timm_s"):
        assert row[k] > 0
    assert row["adapter_over_timm_time_ratio"] == pytest.approx(row["adapter_s"] / row["timm_s"])
    assert row["backbone_adapter_over_timm_cpu_time_ratio"] == pytest.approx(
        row["backbone_adapter_cpu_s"] / row["backbone_timm_cpu_s"])
    # vit_tiny: 4 blocks of 96; the adapter drops timm's final norm (2 x 96 parameters)
    assert row["backbone_params"]["timm"] == row["backbone_params"]["adapter"]      # the same timm model


@pytest.mark.slow
def test_adapters_mmdet_all_variants(tmp_path):
    from benchmarks.perf import adapters
    res = adapters.main(TINY + ["--frameworks", "mmdet"])
    (row,) = res["results"]
    assert row["framework"] == "mmdet" and row["batch"] == 1
    for b in ("timm", "mmseg_beit"):
        assert row[f"adapter_over_{b}_time_ratio"] > 0 and row[f"backbone_adapter_over_{b}_time_ratio"] > 0
    assert set(row["backbone_params"]) == {"adapter", "timm", "mmseg_beit"}
