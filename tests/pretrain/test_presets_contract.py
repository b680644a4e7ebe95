"""One contract over EVERY backbone preset: builds, decodes to the input size, finite loss, and the token
changes the injection point's features at masked positions only (timm `test_models.py` style)."""
import numpy as np
import pytest
import torch

from pretrain.a2mim import A2MIM
from pretrain.models.decoder import decoder_input
from pretrain.models.presets import PRESETS, BackbonePreset, LossPreset

BIG = {"resnet101", "resnet152", "resnet200", "convnext_base", "vit_base", "vit_large"}
SMALL_SIZE = 64
# "architecture-agnostic": other timm families work from a hand-written preset (module name + stride + channels)
CUSTOM = {
    "timm_test_efficientnet": BackbonePreset(
        "timm_test_efficientnet", "test_efficientnet", "cnn", {}, "blocks.3", 16, 48, 32, 256,
        LossPreset("focal_l1", 0.5, True, 1e-3),
        simmim_inject_module="bn1", simmim_inject_stride=2, simmim_inject_channels=24),
    "timm_test_vit": BackbonePreset(
        "timm_test_vit", "test_vit", "vit", {}, "patch_embed", 16, 64, 16, 64, LossPreset("l1", 0.1, True, 0.0),
        simmim_inject_module="patch_embed", simmim_inject_stride=16, simmim_inject_channels=64),
}
ALL = {**PRESETS, **CUSTOM}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)          # shared 2-core machine
    yield
    torch.set_num_threads(n)


def _cases():
    cases = []
    for name in ALL:
        marks = [pytest.mark.slow] if name in BIG else []
        for method in ("a2mim", "simmim"):
            cases.append(pytest.param(name, method, SMALL_SIZE, marks=marks, id=f"{name}-{method}-{SMALL_SIZE}"))
    for name in ("resnet50", "vit_base"):
        cases.append(pytest.param(name, "a2mim", 224, marks=[pytest.mark.slow], id=f"{name}-a2mim-224"))
    return cases


def _capture(module):
    seen = {}
    handle = module.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o.detach().clone()))
    return seen, handle


@pytest.mark.parametrize("name,method,size", _cases())
def test_preset_contract(name, method, size):
    torch.manual_seed(0)
    preset = ALL[name]
    model = A2MIM(preset, method=method, input_size=size).eval()      # eval: no drop path randomness
    gen = model.mask_generator()
    rng = np.random.default_rng(0)
    mask = torch.stack([gen(rng) for _ in range(2)])                  # (2, h, w) at the injection stride
    assert mask.shape == (2, size // model.mask_stride, size // model.mask_stride)
    img = torch.randn(2, 3, size, size)

    # injection point: token changes features at masked positions only, and plain forwards stay plain
    point = model.backbone.get_submodule(model.injector.module_name)
    seen, handle = _capture(point)        # registered after the injector's hook: sees the injected output
    with torch.no_grad():
        decoder_input(model.backbone, img)
        plain = seen["out"]
        with model.injector.masked(mask):
            feat = decoder_input(model.backbone, img)
        injected = seen["out"]
        decoder_input(model.backbone, img)
        assert torch.equal(seen["out"], plain)
    handle.remove()
    diff = (injected - plain).abs()
    C = model.injector.channels
    if diff.ndim == 4 and diff.shape[1] == C:   # (B, C, h, w)
        changed = diff.amax(1)
    else:                                       # (B, h, w, C) or (B, N, C) tokens
        assert diff.shape[-1] == C
        changed = diff.amax(-1).view_as(mask)
    assert torch.equal(changed > 0, mask.bool())

    # decoder input and output geometry
    assert feat.shape == (2, preset.out_channels, size // preset.out_stride, size // preset.out_stride)
    x_in, x_rec = model.reconstruct(img, mask)
    assert x_rec.shape == img.shape and x_in.shape == img.shape

    # loss finite, gradient reaches the token
    model.train()
    loss, logs = model(img, mask)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in logs.values())
    loss.backward()
    assert model.injector.mask_token.grad.abs().sum() > 0
