"""Classification presets and components: strict presets with the spec's numbers (§5), the right timm classes,
hand-checked layer-decay scales, LARS/BN head of the linear probe, seeded Mixup, the repeated-augmentation sampler."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.config import ConfigError
from pretrain.loop import make_plan
from pretrain.models.presets import get_preset
from transfer.classification.config import load_config
from transfer.classification.data import RepeatAugSampler, eval_transform, train_transform
from transfer.classification.model import LinearProbe, build_classifier, classifier_name
from transfer.classification.task import build_criterion, build_optimizer

CONFIGS = Path(__file__).resolve().parents[2] / "transfer" / "classification" / "configs"
REQ = ["model.weights=w.safetensors", "data.root=/data/in1k", "run.out_dir=/runs/x"]
IN1K = 1_281_167


def _cfg(name, *extra):
    return load_config(CONFIGS / f"{name}.yaml", [*REQ, *extra])


def _spec(preset):
    p = get_preset(preset)
    return {"preset": preset, "timm_name": p.timm_name, "timm_kwargs": dict(p.timm_kwargs), "kind": p.kind}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_loads_strictly_and_needs_weights_data_and_run_dir(path):
    load_config(path, REQ)
    with pytest.raises(ConfigError, match=r"without a value: \['model.weights', 'data.root', 'run.out_dir'\]"):
        load_config(path)


def test_unknown_key_and_bad_values_are_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.layer_decy'.*did you mean 'optim.layer_decay'"):
        _cfg("beit_vit_b", "optim.layer_decy=0.7")
    with pytest.raises(ConfigError, match=r"'optim.name' = 'lasr'.*did you mean 'lars'"):
        _cfg("linprobe_mae_vit", "optim.name=lasr")
    with pytest.raises(ConfigError, match=r"'optim.layer_decay' = 0.65; expected null, or in \(0, 1\] with "
                                          r"model.mode=finetune"):
        _cfg("linprobe_mae_vit", "optim.layer_decay=0.65")
    with pytest.raises(ConfigError, match=r"'run.batch_per_gpu' = 7; expected an even number when Mixup"):
        _cfg("rsb_a2_r50", "run.batch_per_gpu=7")
    with pytest.raises(ConfigError, match=r"'model.preset'.*unknown backbone preset 'resnet5'"):
        _cfg("rsb_a2_r50", "model.preset=resnet5")


def test_rsb_a2_and_a3_numbers():
    a2, a3 = _cfg("rsb_a2_r50"), _cfg("rsb_a3_r50")
    p2, p3 = make_plan(a2, IN1K, world_size=8), make_plan(a3, IN1K, world_size=8)
    assert p2.global_batch == 2048 and p2.lr == pytest.approx(5e-3) and p3.lr == pytest.approx(8e-3)
    assert (a2.schedule.epochs, a3.schedule.epochs, a2.schedule.warmup_epochs, a2.schedule.min_lr) == (300, 100, 5, 1e-6)
    assert (a2.optim.name, a2.optim.weight_decay, a2.loss.name) == ("lamb", 0.02, "bce")
    assert (a2.mixup.mixup_alpha, a2.mixup.cutmix_alpha, a3.mixup.mixup_alpha, a3.mixup.cutmix_alpha) == (0.1, 1, 0.1, 1)
    assert (a2.data.auto_augment, a3.data.auto_augment) == ("rand-m7-mstd0.5-inc1", "rand-m6-mstd0.5-inc1")
    assert (a2.model.drop_path, a3.model.drop_path, a2.ema.decay, a3.ema.decay) == (0.05, 0.0, 0.9999, None)
    assert (a2.data.repeated_aug, a3.data.repeated_aug) == (3, 1)
    assert (a2.data.train_size, a2.data.test_resize, a2.data.test_size) == (224, 236, 224)
    assert (a3.data.train_size, a3.data.test_resize, a3.data.test_size) == (160, 236, 224)
    # components: timm LAMB, no wd on BN/bias, timm BCE, RandAugment m7 (2 ops), eval resize 236 -> crop 224
    model = build_classifier(a2, _spec("resnet50"), 1000)
    opt = build_optimizer(model, a2, 5e-3)
    assert type(opt).__name__ == "Lamb" and classifier_name(model) == "fc"
    wd = {n: g["weight_decay"] for g in opt.param_groups for n, p in model.named_parameters()
          if any(p is q for q in g["params"])}
    assert wd["conv1.weight"] == wd["fc.weight"] == 0.02 and wd["bn1.weight"] == wd["fc.bias"] == 0.0
    assert type(build_criterion(a2)).__name__ == "BinaryCrossEntropy"
    ra = [t for t in train_transform(a2.data, (0.5,) * 3, (0.5,) * 3).transforms if type(t).__name__ == "RandAugment"]
    assert len(ra) == 1 and ra[0].num_layers == 2 and {op.magnitude for op in ra[0].ops} == {7}
    from PIL import Image
    out = eval_transform(a2.data, (0.5,) * 3, (0.5,) * 3)(Image.new("RGB", (472, 300), (255, 0, 0)))
    assert out.shape == (3, 224, 224) and torch.allclose(out[0], torch.ones(224, 224))   # (1 - .5) / .5


def test_beit_vit_numbers_and_layer_decay_scales():
    cfg = _cfg("beit_vit_b")
    plan = make_plan(cfg, IN1K, world_size=8)
    assert plan.global_batch == 1024 and plan.lr == pytest.approx(2.5e-3)      # SimMIM's, not the official 1e-2
    assert "1e-2" in (CONFIGS / "beit_vit_b.yaml").read_text()
    assert (cfg.optim.name, cfg.optim.layer_decay, cfg.optim.clip_grad, cfg.optim.weight_decay) == ("adamw", 0.65, 5, 0.05)
    assert (cfg.schedule.epochs, cfg.schedule.warmup_epochs, cfg.model.drop_path, cfg.model.global_pool) == (
        100, 20, 0.1, "avg")
    assert (cfg.mixup.mixup_alpha, cfg.mixup.cutmix_alpha, cfg.loss.label_smoothing, cfg.data.re_prob) == (
        0.8, 1.0, 0.1, 0.25)
    assert type(build_criterion(cfg)).__name__ == "SoftTargetCrossEntropy"      # Mixup already smoothed
    tf = train_transform(cfg.data, (0.5,) * 3, (0.5,) * 3).transforms
    erase = [t for t in tf if type(t).__name__ == "RandomErasing"]
    assert len(erase) == 1 and erase[0].probability == 0.25 and erase[0].mode == "pixel"
    # the 4-layer tiny ViT, same recipe: BEiT scales 0.65^(L+1-i), i = 0 embeddings, 1..L blocks, L+1 head
    tiny = _cfg("tiny_finetune_vit")
    model = build_classifier(tiny, _spec("vit_tiny"), 8)
    assert model.global_pool == "avg" and type(model.norm).__name__ == "Identity"    # mean pool + fc_norm
    opt = build_optimizer(model, tiny, 1e-3)
    scale = {n: g["lr_scale"] for g in opt.param_groups for n, p in model.named_parameters()
             if any(p is q for q in g["params"])}
    L = 4
    expect = {"patch_embed.proj.weight": 0.65 ** (L + 1), "cls_token": 0.65 ** (L + 1), "pos_embed": 0.65 ** 5,
              "blocks.0.attn.qkv.weight": 0.65 ** 4, "blocks.1.mlp.fc1.weight": 0.65 ** 3,
              "blocks.3.norm2.weight": 0.65, "fc_norm.weight": 1.0, "head.weight": 1.0}
    assert {k: scale[k] for k in expect} == pytest.approx(expect)
    opt.param_groups[0]["lr"] = 0.0
    from pretrain.loop import build_scheduler
    sched = build_scheduler(opt, tiny, spe=10)
    sched.step_update(20)                    # end of the 2-epoch warm-up: peak lr x each group's scale
    got = {round(g["lr_scale"], 6): g["lr"] for g in opt.param_groups}
    assert got[1.0] == pytest.approx(1e-3) and got[round(0.65 ** 5, 6)] == pytest.approx(1e-3 * 0.65 ** 5)


def test_linear_probe_protocols():
    mae, moco = _cfg("linprobe_mae_vit"), _cfg("linprobe_moco_r50")
    assert make_plan(mae, IN1K, world_size=8).global_batch == 16384
    assert make_plan(mae, IN1K, world_size=8).lr == pytest.approx(0.1 * 16384 / 256)       # 6.4
    assert make_plan(moco, IN1K, world_size=8).lr == pytest.approx(30.0)
    assert (mae.schedule.epochs, mae.schedule.warmup_epochs, mae.optim.weight_decay, mae.model.global_pool) == (
        90, 10, 0.0, "token")
    assert (moco.schedule.kind, moco.schedule.step_epochs, moco.schedule.epochs, moco.model.head_bn) == (
        "step", [60, 80], 100, False)
    model = build_classifier(_cfg("tiny_linprobe_vit"), _spec("vit_tiny"), 8)
    assert isinstance(model, LinearProbe) and model.backbone.global_pool == "token"
    bn, fc = model.head
    assert type(bn).__name__ == "BatchNorm1d" and not bn.affine and bn.eps == 1e-6 and fc.in_features == 96
    assert all(not p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert model.head.training and not model.backbone.training                       # frozen BN stats
    opt = build_optimizer(model, mae, 6.4)
    assert type(opt).__name__ == "Lars"
    adapt = {n: g["always_adapt"] for g in opt.param_groups for n, p in model.named_parameters()
             if any(p is q for q in g["params"])}
    assert adapt == {"head.1.weight": True, "head.1.bias": False}        # MAE's LARS: matrices only, wd 0 too
    sgd = build_optimizer(build_classifier(moco, _spec("resnet18"), 8), moco, 30.0)
    assert type(sgd).__name__ == "SGD" and sgd.param_groups[0]["momentum"] == 0.9
    assert not sgd.param_groups[0]["nesterov"]
    assert type(build_criterion(moco)).__name__ == "CrossEntropyLoss"


def test_repeated_augmentation_sampler_hand_values():
    s0, s1 = (RepeatAugSampler(4, num_replicas=2, rank=r, seed=5, repeats=3) for r in (0, 1))
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(5 + 1)).tolist()
    for s in (s0, s1):
        s.set_epoch(1)
    # epoch 1: p0 p0 p0 p1 p1 p1 ... dealt round-robin, rounds 3..5 (= epoch * 3 + copy); 4 // 2 = 2 per rank
    assert list(s0) == [(perm[0], 3), (perm[0], 5)]
    assert list(s1) == [(perm[0], 4), (perm[1], 3)]
    s1.set_epoch(1, offset=1)
    assert list(s1) == [(perm[1], 3)] and s0.indices() == [perm[0], perm[0]]


def test_seeded_mixup_is_reproducible_and_leaves_numpy_alone():
    from transfer.classification.task import ClassificationLoop

    from timm.data import Mixup
    loop = ClassificationLoop.__new__(ClassificationLoop)     # just the _mix helper: no run folder needed
    loop.cfg, loop.step, loop.mixup = _cfg("tiny_finetune_r18"), 7, Mixup(0.1, 1.0, num_classes=8)
    loop.env = type("E", (), {"rank": 0})()
    x, y = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).view(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a, b = loop._mix(x.clone(), y, 0), loop._mix(x.clone(), y, 0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert np.array_equal(np.random.get_state()[1], before)
    assert a[1].shape == (4, 8) and torch.allclose(a[1].sum(1), torch.ones(4))      # soft targets
    loop.step = 8
    assert not torch.equal(loop._mix(x.clone(), y, 0)[1], a[1]) or not torch.equal(loop._mix(x.clone(), y, 0)[0], a[0])
