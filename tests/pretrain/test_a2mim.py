"""Mask-token injection, decoder, the A2MIM module (fill, optimizer groups, export) on tiny inputs."""
import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torchvision

from pretrain.a2mim import A2MIM
from pretrain.export_format import read_backbone, write_backbone
from pretrain.models.decoder import PixelShuffleDecoder
from pretrain.models.injection import MaskTokenInjector
from pretrain.models.presets import BackbonePreset, LossPreset, get_preset


def _injector(mode, gamma=None):
    inj = MaskTokenInjector(2, mode=mode, gamma_init=gamma)
    with torch.no_grad():
        inj.mask_token.copy_(torch.tensor([10.0, 20.0]).view(1, 2, 1, 1))
        if gamma is not None:
            inj.mask_gamma.fill_(0.5)
    return inj


F = torch.arange(1.0, 9.0).view(1, 2, 2, 2)          # channel 0 [[1,2],[3,4]], channel 1 [[5,6],[7,8]]
MASK = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.uint8)


@pytest.mark.parametrize("mode,gamma,masked_value", [
    ("add", 0.5, [0.5 * 1 + 10, 0.5 * 5 + 20]),       # f*(1-m) + gamma*f*m + token*m
    ("add", None, [1 + 10, 5 + 20]),                  # f + token*m
    ("replace", None, [10, 20]),                      # f*(1-m) + token*m
])
def test_injection_hand_values_maps_and_tokens(mode, gamma, masked_value):
    inj = _injector(mode, gamma)
    out = inj.inject(F, MASK)
    exp = F.clone()
    exp[0, :, 0, 0] = torch.tensor(masked_value)
    assert torch.allclose(out, exp)
    # the same on a (B, N, C) token sequence: position 0 of the flattened 2x2 grid is masked
    tokens = F.flatten(2).transpose(1, 2)            # (1, 4, 2)
    assert torch.allclose(inj.inject(tokens, MASK), exp.flatten(2).transpose(1, 2))


def test_injection_channels_last_maps():
    # (B, h, w, C) as Swin / dynamic-size timm ViTs emit; C=3 differs from h so the layout is unambiguous
    inj = MaskTokenInjector(3, mode="replace")
    with torch.no_grad():
        inj.mask_token.copy_(torch.tensor([7.0, 8.0, 9.0]).view(1, 3, 1, 1))
    f = torch.zeros(1, 2, 2, 3)
    out = inj.inject(f, MASK)
    exp = f.clone()
    exp[0, 0, 0] = torch.tensor([7.0, 8.0, 9.0])
    assert torch.equal(out, exp)


def test_injection_gradients_and_gamma_init():
    inj = MaskTokenInjector(2, mode="add", gamma_init=1e-6)
    assert torch.all(inj.mask_gamma == 1e-6) and inj.mask_gamma.shape == (1, 2, 1, 1)
    big = MaskTokenInjector(4096).mask_token                  # trunc_normal std .02 (cut at +-2, as upstream)
    assert big.shape == (1, 4096, 1, 1) and 0.018 < big.std().item() < 0.022 and abs(big.mean().item()) < 2e-3
    mask = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.uint8)
    inj.inject(F, mask).sum().backward()
    assert torch.equal(inj.mask_token.grad.view(2), torch.tensor([2.0, 2.0]))          # 2 masked positions
    assert torch.equal(inj.mask_gamma.grad.view(2), torch.tensor([1.0 + 4.0, 5.0 + 8.0]))  # sum of f there
    assert MaskTokenInjector(4, mode="replace").mask_gamma is None


def test_injection_shape_errors_name_the_module():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))
    inj = MaskTokenInjector(2).attach(model, "0")
    with pytest.raises(ValueError, match=r"'0'.*\(1, 3, 3\).*\(1, 2, 2, 2\)"):
        with inj.masked(torch.ones(1, 3, 3, dtype=torch.uint8)):
            model(torch.randn(1, 3, 2, 2))
    with pytest.raises(KeyError, match="not found"):
        MaskTokenInjector(2).attach(model, "layer9")
    with pytest.raises(ValueError, match="5-channel token do not match"):
        MaskTokenInjector(5).inject(F, MASK)


def test_hook_is_inert_without_a_mask_and_changes_only_masked_positions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))
    x = torch.randn(1, 3, 2, 2)
    plain = model(x)
    inj = MaskTokenInjector(2, gamma_init=1e-6).attach(model, "0")
    assert torch.equal(model(x), plain)
    with inj.masked(MASK):
        masked = model(x)
    changed = (masked - plain).abs().amax(1)          # (1, 2, 2); a 1x1 conv keeps changes local
    assert torch.equal(changed > 0, MASK.bool())
    assert torch.equal(model(x), plain)               # mask cleared after the block


def test_decoder_shape_and_init():
    dec = PixelShuffleDecoder(64, 4)
    assert dec.conv.weight.shape == (48, 64, 1, 1) and torch.count_nonzero(dec.conv.bias) == 0
    assert 0.018 < dec.conv.weight.std().item() < 0.022
    assert dec(torch.randn(2, 64, 3, 5)).shape == (2, 3, 12, 20)
    x = torch.randn(2, 64, 3, 5)
    assert torch.allclose(dec(x.contiguous(memory_format=torch.channels_last)), dec(x), atol=1e-6)
    # hand case: 1 input channel, weights 1..4 at stride 2 -> each input pixel v becomes the block [[v, 2v], [3v, 4v]]
    tiny = PixelShuffleDecoder(1, 2, out_channels=1)
    with torch.no_grad():
        tiny.conv.weight.copy_(torch.arange(1.0, 5.0).view(4, 1, 1, 1))
    out = tiny(torch.tensor([[[[1.0, 10.0]]]]))
    assert torch.equal(out, torch.tensor([[[[1.0, 2.0, 10.0, 20.0], [3.0, 4.0, 30.0, 40.0]]]]))


def _mask(model, batch, seed=0):
    gen = model.mask_generator()
    rng = np.random.default_rng(seed)
    return torch.stack([gen(rng) for _ in range(batch)])


def test_a2mim_mean_fill_and_simmim_clean_input():
    torch.manual_seed(0)
    img = torch.randn(2, 3, 64, 64)
    for method, fill in (("a2mim", img.mean((2, 3), keepdim=True)), ("simmim", None)):
        model = A2MIM(get_preset("resnet18"), method=method, input_size=64).eval()
        mask = _mask(model, 2)
        x_in, x_rec = model.reconstruct(img, mask)
        s = 64 // mask.shape[-1]
        m = mask.repeat_interleave(s, 1).repeat_interleave(s, 2).bool()[:, None]   # (2, 1, 64, 64)
        assert torch.equal(x_in, img if fill is None else torch.where(m, fill.expand_as(img), img))
        assert x_rec.shape == img.shape
    a2, sim = A2MIM(get_preset("resnet18"), input_size=64), A2MIM(get_preset("resnet18"), "simmim", input_size=64)
    assert (a2.mask_stride, a2.injector.mode, a2.injector.module_name) == (16, "add", "layer3")
    assert a2.loss.preset == LossPreset("focal_l1", 0.5, True, 1e-3) and a2.injector.mask_gamma is not None
    assert (sim.mask_stride, sim.injector.mode, sim.injector.module_name) == (4, "replace", "maxpool")
    assert sim.loss.preset.spatial == "l1" and sim.loss.preset.freq_weight == 0 and sim.injector.mask_gamma is None


def test_a2mim_rejects_a_mask_at_the_wrong_stride():
    model = A2MIM(get_preset("resnet18"), input_size=64)
    with pytest.raises(ValueError, match="injection stride 16"):
        model(torch.randn(1, 3, 64, 64), torch.zeros(1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="method"):
        A2MIM(get_preset("resnet18"), method="mae")
    with pytest.raises(ValueError, match="not divisible by mask_patch"):
        A2MIM(get_preset("resnet18"), input_size=80)


def test_a2mim_under_bf16_autocast_gives_float32_loss_and_grads():
    model = A2MIM(get_preset("resnet18"), input_size=64)
    img = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = model(img, _mask(model, 2))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(model.injector.mask_token.grad).all() and model.injector.mask_token.grad.abs().sum() > 0


def _group_of(groups):
    return {id(p): g for g in groups for p in g["params"]}


def test_param_groups_cnn():
    model = A2MIM(get_preset("resnet18"), input_size=64)
    groups = model.param_groups(0.05)
    by_id = _group_of(groups)
    assert len(by_id) == sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    named = dict(model.named_parameters())
    expect = {"backbone.conv1.weight": ("decay", 0.05, 1.0), "backbone.bn1.weight": ("no_decay", 0.0, 1.0),
              "backbone.layer2.0.downsample.1.weight": ("no_decay", 0.0, 1.0),
              "decoder.conv.weight": ("decay", 0.05, 1.0), "decoder.conv.bias": ("no_decay", 0.0, 1.0),
              "injector.mask_token": ("mask_token", 0.0, 0.1), "injector.mask_gamma": ("mask_token", 0.0, 0.1)}
    for name, (gname, wd, lr_mult) in expect.items():
        g = by_id[id(named[name])]
        assert (g["name"], g["weight_decay"], g["lr_mult"]) == (gname, wd, lr_mult), name


def test_param_groups_vit():
    model = A2MIM(get_preset("vit_tiny"), input_size=64)
    by_id = _group_of(model.param_groups(0.05))
    named = dict(model.named_parameters())
    for name in ("backbone.pos_embed", "backbone.cls_token", "backbone.blocks.0.attn.relative_position_bias_table",
                 "backbone.blocks.0.gamma_1", "backbone.blocks.0.norm1.weight", "backbone.blocks.0.attn.q_bias"):
        assert by_id[id(named[name])]["name"] == "no_decay", name
    assert by_id[id(named["backbone.blocks.0.attn.qkv.weight"])]["name"] == "decay"
    tok = by_id[id(named["injector.mask_token"])]
    assert (tok["weight_decay"], tok["lr_mult"]) == (0.0, 1.0)        # ViT: token lr not scaled
    assert model.injector.mask_gamma is None


def test_export_resnet50_loads_strict_into_timm_and_torchvision(tmp_path):
    torch.manual_seed(0)
    model = A2MIM(get_preset("resnet50"), input_size=64).eval()
    sd = model.export_state_dict()
    assert not any(k.startswith(("injector", "decoder", "fc.")) or "mask" in k for k in sd)
    path = write_backbone(tmp_path / "r50.safetensors", sd, {"preset": "resnet50"})
    sd, _ = read_backbone(path)
    tm = timm.create_model("resnet50", pretrained=False, num_classes=0)
    tm.load_state_dict(sd, strict=True)
    tv = torchvision.models.resnet50(weights=None)
    tv.fc = nn.Identity()                                 # the classifier is the only part not exported
    tv.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model.backbone(x)
        assert torch.allclose(tm.eval()(x), ref, atol=1e-5)
        assert torch.allclose(tv.eval()(x), ref, atol=1e-5)


@pytest.mark.slow
def test_export_vit_base_loads_strict_into_timm_beit():
    preset = get_preset("vit_base")
    sd = A2MIM(preset, input_size=224).export_state_dict()
    assert not any("mask" in k or k.startswith(("decoder", "head.")) for k in sd)
    ref = timm.create_model("beit_base_patch16_224", pretrained=False, num_classes=0, use_abs_pos_emb=True,
                            use_rel_pos_bias=True, init_values=0.1, qkv_bias=True,
                            global_pool="token")        # final `norm` (timm's default 'avg' names it fc_norm)
    ref.load_state_dict(sd, strict=True)


TINY_RESNET = BackbonePreset("timm_test_resnet", "test_resnet", "cnn", {}, "layer3", 16, 192, 32, 96,
                             LossPreset("focal_l1", 0.5, True, 1e-3))


def _loss_and_grads(model, img, mask):
    model.zero_grad(set_to_none=True)
    loss, _ = model(img, mask)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_channels_last_gives_the_same_loss_and_grads():
    torch.manual_seed(0)
    model = A2MIM(TINY_RESNET, input_size=64)
    img, mask = torch.randn(2, 3, 64, 64), _mask(model, 2)
    ref_loss, ref_grads = _loss_and_grads(model, img, mask)
    model.to(memory_format=torch.channels_last)
    loss, grads = _loss_and_grads(model, img.contiguous(memory_format=torch.channels_last), mask)
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    for n, g in grads.items():
        assert torch.allclose(g, ref_grads[n], rtol=1e-3, atol=1e-6), n


@pytest.mark.slow
def test_torch_compile_gives_the_same_loss_and_grads():
    torch.manual_seed(0)
    model = A2MIM(TINY_RESNET, input_size=64)
    img, mask = torch.randn(2, 3, 64, 64), _mask(model, 2)
    ref_loss, ref_grads = _loss_and_grads(model, img, mask)
    compiled = torch.compile(model)
    loss, grads = _loss_and_grads(compiled, img, mask)
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    for n, g in grads.items():
        assert torch.allclose(g, ref_grads[n.replace("_orig_mod.", "")], rtol=1e-3, atol=1e-6), n
    # after compilation the hook stays inert outside the mask context: same output as with no hook at all
    model.eval()
    with torch.no_grad():
        hooked = compiled.backbone(img)
        model.injector.remove()
        assert torch.equal(hooked, model.backbone(img))


def test_a_lost_hook_is_reported_not_silently_skipped():
    model = A2MIM(get_preset("resnet18"), input_size=64)
    model.backbone.layer3 = nn.Sequential(*model.backbone.layer3)      # module replaced: its hook is gone
    with pytest.raises(RuntimeError, match="not attached to 'layer3'"):
        model(torch.randn(1, 3, 64, 64), _mask(model, 1))
    model.injector.attach(model.backbone, "layer3")
    assert torch.isfinite(model(torch.randn(1, 3, 64, 64), _mask(model, 1))[0])
