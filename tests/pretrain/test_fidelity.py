"""Fidelity of the recipes to the official code (Westlake-AI/openmixup @ 37e1372), one test per item of the recipe
audit, each against the official rule written out here (not against the code under test):
SimMIM's clean input and injection modes, the per-recipe regex parameter groups (mask_gamma, shortcut BN, ConvNeXt
LayerNorms), the ViT init, the absolute lr floor, the mask count, the non-focal frequency term, the ablations."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.a2mim import A2MIM
from pretrain.config import load_config
from pretrain.engine import build_model, build_optimizer
from pretrain.losses import frequency_loss
from pretrain.masking import BlockMaskGenerator
from pretrain.models.presets import get_preset
from pretrain.plan import build_scheduler

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIGS = Path(__file__).resolve().parents[2] / "pretrain" / "configs"


def _mask(model, batch, seed=0):
    gen, rng = model.mask_generator(), np.random.default_rng(seed)
    return torch.stack([gen(rng) for _ in range(batch)])


# ---------------------------------------------------------------- 1. SimMIM: clean image, replace / add
def test_simmim_cnn_encoder_sees_the_clean_image():
    torch.manual_seed(0)
    model = A2MIM(get_preset("resnet18"), method="simmim", input_size=64).eval()
    seen = []
    model.backbone.conv1.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    img = torch.randn(2, 3, 64, 64)
    x_in, _ = model.reconstruct(img, _mask(model, 2))
    assert torch.equal(seen[0], img) and torch.equal(x_in, img)
    assert (model.injector.mode, model.injector.module_name, model.mask_stride) == ("replace", "maxpool", 4)


def test_simmim_injection_modes_per_family():
    # official: MIMResNet / SimMIMViT replace=True; SimMIM-ConvNeXt replace=False (configs/selfsup/_base_/models/simmim)
    assert A2MIM(get_preset("convnext_tiny"), method="simmim", input_size=64).injector.mode == "add"
    assert A2MIM(get_preset("vit_tiny"), method="simmim", input_size=64).injector.mode == "replace"
    sim = A2MIM(get_preset("convnext_tiny"), method="simmim", input_size=64)
    assert sim.injector.mask_gamma is None and sim.fill == "none"


# ---------------------------------------------------------------- 2, 3. parameter groups by the official regexes
def _groups(config, **over):
    cfg = load_config(CONFIGS / config, [f"model.{k}={v}" for k, v in over.items()])
    model = build_model(cfg)
    opt = build_optimizer(model, cfg, lr=1.0)                    # lr 1: a group's lr is its lr multiplier
    named = {id(p): n for n, p in model.named_parameters()}
    return model, {named[id(p)]: (g["weight_decay"], g["lr"]) for g in opt.param_groups for p in g["params"]}


def _official(names, rules, wd=0.05):
    """openmixup DefaultOptimizerConstructor: for each name, every regex that re.search-es it sets its keys, in order."""
    out = {}
    for n in names:
        opt = {"weight_decay": wd, "lr": 1.0}
        for regex, options in rules:
            if re.search(regex, n):
                opt.update({k.removesuffix("_mult"): v for k, v in options.items()})
        out[n] = (opt["weight_decay"], opt["lr"])
    return out


BN = r"(bn|ln|gn)(\d+)?.(weight|bias)"


def test_r50_300ep_groups_are_the_official_ones():
    model, got = _groups("a2mim_r50_ep300.yaml", input_size=64)
    rules = [(BN, {"weight_decay": 0.0}), ("bias", {"weight_decay": 0.0}),
             ("mask_token", {"weight_decay": 0.0, "lr_mult": 0.1})]   # r50_l3_sz224_init_8xb256_cos_ep300.py
    assert got == _official(got, rules)
    assert got["injector.mask_gamma"] == (0.05, 1.0)               # no rule names it: full lr, decayed
    shortcut = [n for n in got if n.endswith("downsample.1.weight")]
    assert len(shortcut) == 4 and all(got[n] == (0.05, 1.0) for n in shortcut)   # shortcut BN weights decayed
    assert got["injector.mask_token"] == (0.0, 0.1) and got["backbone.layer1.0.bn1.weight"] == (0.0, 1.0)
    no_decay = {n for n, (wd, _) in got.items() if wd == 0.0}
    bn = {n for n in got if re.search(r"\.bn\d\.(weight|bias)$|^backbone\.bn1\.", n)}
    assert no_decay == bn | {n for n in got if n.endswith("bias")} | {"injector.mask_token"}


def test_r50_100ep_names_mask_gamma():
    _, got = _groups("a2mim_r50_ep100.yaml", input_size=64)
    assert got["injector.mask_gamma"] == (0.0, 0.1) and got["injector.mask_token"] == (0.0, 0.1)


def test_convnext_s_decays_every_layernorm_weight():
    model, got = _groups("a2mim_convnext_s_ep300.yaml", input_size=64)
    rules = [(BN, {"weight_decay": 0.0}), ("bias", {"weight_decay": 0.0}), ("gamma", {"weight_decay": 0.0}),
             ("mask_token", {"weight_decay": 0.0, "lr_mult": 0.1}), ("mask_gamma", {"weight_decay": 0.0, "lr_mult": 0.1})]
    assert got == _official(got, rules)
    ln_weights = [n for n, m in model.named_modules() if type(m).__name__.startswith("LayerNorm")]
    assert len(ln_weights) == 41 and all(got[f"{n}.weight"] == (0.05, 1.0) for n in ln_weights)
    assert got["backbone.stages.2.blocks.5.gamma"] == (0.0, 1.0) and got["injector.mask_gamma"] == (0.0, 0.1)


def test_vit_b_groups_follow_the_official_regexes():
    _, got = _groups("a2mim_vit_b_ep800.yaml", input_size=64)
    rules = [(BN, {"weight_decay": 0.0})] + [(k, {"weight_decay": 0.0}) for k in
                                             ("norm", "bias", "mask_token", "pos_embed", "cls_token", "gamma")]
    assert got == _official(got, rules)
    # 'bias' re.search-es relative_position_bias_table: exempt, as in openmixup (where the name is the same)
    assert got["backbone.blocks.0.attn.relative_position_bias_table"] == (0.0, 1.0)
    assert got["backbone.blocks.0.attn.qkv.weight"] == (0.05, 1.0)
    assert got["injector.mask_token"] == (0.0, 1.0) and got["backbone.blocks.3.gamma_1"] == (0.0, 1.0)


def test_simmim_r50_token_trains_at_lr_x1():
    _, got = _groups("simmim_r50_ep300.yaml", input_size=64)
    assert got["injector.mask_token"] == (0.0, 1.0)


def test_the_all_1d_convention_stays_available():
    cfg = load_config(CONFIGS / "tiny_r18.yaml", ["data.root=x", "run.out_dir=y"])
    assert cfg.optim.paramwise is None
    model = build_model(cfg)
    opt = build_optimizer(model, cfg, lr=1.0)
    by = {id(p): (g["weight_decay"], g["lr"]) for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by[id(named["backbone.layer2.0.downsample.1.weight"])] == (0.0, 1.0)     # 1-D: exempt
    assert by[id(named["injector.mask_gamma"])] == (0.0, 0.1)


# ---------------------------------------------------------------- 4. ViT initialisation
def test_vit_init_is_trunc_normal_002_in_every_block():
    torch.manual_seed(0)
    official = build_model(load_config(CONFIGS / "a2mim_vit_b_ep800.yaml", ["model.input_size=64"])).backbone
    torch.manual_seed(0)
    timm_init = build_model(load_config(CONFIGS / "a2mim_vit_b_ep800.yaml",
                                        ["model.input_size=64", "model.vit_init=timm"])).backbone
    for layer_id in (0, 5, 11):
        for name in ("attn.proj.weight", "mlp.fc2.weight"):
            w = official.blocks[layer_id].get_submodule(name.rsplit(".", 1)[0]).weight
            assert abs(w.std().item() - 0.02) < 0.0005, (layer_id, name)        # 590k / 2.4M draws
            t = timm_init.blocks[layer_id].get_submodule(name.rsplit(".", 1)[0]).weight
            assert torch.allclose(t * math.sqrt(2 * (layer_id + 1)), w)         # timm: / sqrt(2(l+1)), same draws
    assert abs(official.blocks[11].attn.qkv.weight.std().item() - 0.02) < 0.0005


# ---------------------------------------------------------------- 5. absolute lr floor
def test_every_group_ends_at_the_absolute_min_lr():
    cfg = load_config(CONFIGS / "a2mim_r50_ep300.yaml", ["model.input_size=64"])
    model = build_model(cfg)
    opt = build_optimizer(model, cfg, lr=1.2e-3)
    sched = build_scheduler(opt, cfg, spe=10)
    total = cfg.schedule.epochs * 10
    sched.step_update(total)
    assert {round(g["lr"], 12) for g in opt.param_groups} == {1e-5}      # token group too (not 0.1 x 1e-5)
    sched.step_update(10 * 10)                                             # end of warm-up: each group's own peak
    assert sorted({round(g["lr"], 9) for g in opt.param_groups}) == [1.2e-4, 1.2e-3]


# ---------------------------------------------------------------- 6. mask count
def test_mask_count_is_the_official_float_ceil_everywhere():
    for cells_h in range(1, 15):
        for cells_w in range(1, 15):
            for ratio in np.round(np.arange(0.05, 1.0, 0.05), 2):
                gen = BlockMaskGenerator((cells_h * 4, cells_w * 4), 4, 4, float(ratio))
                assert gen.count == int(np.ceil(cells_h * cells_w * float(ratio))), (cells_h, cells_w, ratio)
    assert BlockMaskGenerator(20, 4, 4, 0.28).count == 8          # 5x5 at 0.28: 7.000000000000001 -> 8
    assert BlockMaskGenerator(224, 32, 16, 0.6).count == 30       # every official recipe: 7x7 at 0.6


# ---------------------------------------------------------------- 7. non-focal frequency term
def test_non_focal_frequency_term_uses_the_spatial_mode():
    g = torch.Generator().manual_seed(0)
    x_rec, x = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    m = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    m_f = m + (1 - m) * 1e-3
    x_t = x_rec * m_f + (0.5 * x_rec + 0.5 * x) * (1 - m_f)
    d = (torch.fft.fft2(x_t, norm="ortho") - torch.fft.fft2(x, norm="ortho")).abs()
    assert torch.allclose(frequency_loss(x_rec, x, m, 1e-3, focal=False, kind="l1"), d.mean(), rtol=1e-5)
    assert torch.allclose(frequency_loss(x_rec, x, m, 1e-3, focal=False, kind="focal_l1"),
                          (d * torch.tanh(0.1 * d)).mean(), rtol=1e-5)


# ---------------------------------------------------------------- 8. ablations
def test_ablation_presets():
    nog = build_model(load_config(CONFIGS / "a2mim_r50_ep100_nogamma.yaml"))
    assert nog.injector.mask_gamma is None and nog.injector.module_name == "layer3"
    assert "injector.mask_gamma" not in dict(nog.named_parameters())
    l0 = build_model(load_config(CONFIGS / "a2mim_r50_l0_ep100.yaml"))
    assert (l0.injector.module_name, l0.mask_stride, l0.injector.channels) == ("maxpool", 4, 64)
    assert l0.mask_generator()(np.random.default_rng(0)).shape == (56, 56) and l0.injector.mask_gamma is None
    loss, _ = l0(torch.randn(1, 3, 224, 224), _mask(l0, 1))
    assert torch.isfinite(loss)
