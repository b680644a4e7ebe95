"""transfer/classification/export.py: a supervised init (a fine-tune from random weights) exported as a backbone that
every transfer entry point reads: the classifier dropped, a mean-pooling ViT's fc_norm back to the final norm, the
tensors equal to the trained network's, 0 missing keys through the backbone contract."""
from __future__ import annotations


import pytest
import torch

from pretrain.checkpoint import load_checkpoint
from pretrain.export import export_random
from pretrain.export_format import read_backbone
from transfer.backbones import from_sidecar, load_exported
from transfer.classification.export import export_run, main as export_main
from transfer.classification.train import main as train_main
from transfer.weights import read_backbone_weights

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from benchmarks.toydata import make_toy_world
    return make_toy_world(tmp_path_factory.mktemp("sup") / "w", size=32, n_train=2, n_val=1, n_dense_train=1,
                          n_dense_val=1, check=False)


@pytest.mark.parametrize("preset,config,head", [("resnet18", "toy_supervised_r18", "fc."),
                                                ("vit_tiny", "toy_supervised_vit", "head.")])
def test_supervised_run_exports_a_complete_backbone(tmp_path, world, preset, config, head):
    init = export_random(tmp_path / "init.safetensors", [f"model.preset={preset}", "model.input_size=32"], seed=1)
    run = tmp_path / "run"
    assert train_main([config, "--weights", str(init), "--data-root", world["imagenet"], "--work-dir", str(run),
                       "schedule.budget_s=null", "schedule.epochs=1", "schedule.warmup_epochs=0", "run.max_steps=2",
                       "run.batch_per_gpu=4", "data.train_size=32", "data.test_size=32", "data.test_resize=32"]) == 0
    out = export_run(run, tmp_path / "sup.safetensors")
    sd, meta = read_backbone(out)
    _, init_meta = read_backbone(init)
    assert meta["method"] == "supervised" and meta["step"] == 2 and meta["init_sha256"] == init_meta["sha256"]
    assert (meta["preset"], meta["timm_name"], meta["timm_kwargs"]) == \
        (init_meta["preset"], init_meta["timm_name"], init_meta["timm_kwargs"])
    assert meta["pretrain_config"]["model"]["mode"] == "finetune"
    trained = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert not any(k.startswith(head) for k in sd)
    for k, v in sd.items():
        src = k.replace("norm.", "fc_norm.", 1) if (k.startswith("norm.") and f"fc_{k}" in trained) else k
        assert torch.equal(v, trained[src]), k
    fb = from_sidecar(meta, out_indices=None, frozen=True)
    rep = load_exported(fb, read_backbone_weights(out))
    assert rep.counts["missing"] == rep.counts["unexpected"] == 0


def test_unfinished_run_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert export_main([str(tmp_path / "run"), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "not a finished classification run" in capsys.readouterr().err
