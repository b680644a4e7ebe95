"""Config: YAML + key=value overrides, strict keys (nearest-key hint), typed values, the official presets."""
from __future__ import annotations

import pytest

from imgfactory import CONFIGS
from pretrain.config import (ConfigError, changed_keys, from_yaml_text, load_config, load_model_config, resolve_preset,
                             to_yaml)

REQ = ["data.root=/data", "run.out_dir=/runs/x"]


def test_yaml_and_overrides_are_typed():
    cfg = load_config(CONFIGS / "tiny_r18.yaml", [*REQ, "optim.lr=1e-3", "run.batch_per_gpu=4", "run.max_steps=7",
                                                  "data.rrc_scale=[0.5,1.0]", "schedule.step_epochs=[3,5]"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.run.batch_per_gpu == 4 and cfg.run.max_steps == 7
    assert cfg.data.rrc_scale == [0.5, 1.0] and cfg.schedule.step_epochs == [3, 5]
    assert cfg.model.preset == "resnet18" and cfg.model.input_size == 64      # from the YAML
    assert cfg.optim.weight_decay == 0.05 and cfg.run.keep_last == 2          # YAML; default keep_last is 3


def test_misspelled_key_names_the_nearest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*did you mean 'optim.lr'"):
        load_config(None, [*REQ, "optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"'run.bach_per_gpu'.*did you mean 'run.batch_per_gpu'"):
        load_config(None, [*REQ, "run.bach_per_gpu=4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  preset: resnet18\n  mask_ration: 0.5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'model.mask_ration'.*'model.mask_ratio'"):
        load_config(bad, REQ)
    bad.write_text("optimizer:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optimizer'.*did you mean 'optim'"):
        load_config(bad, REQ)


def test_wrong_type_names_key_and_expected_type(tmp_path):
    with pytest.raises(ConfigError, match=r"'run.batch_per_gpu'.*expected int"):
        load_config(None, [*REQ, "run.batch_per_gpu=abc"])
    with pytest.raises(ConfigError, match=r"'optim.lr'.*expected float or null"):
        load_config(None, [*REQ, "optim.lr=fast"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("schedule:\n  epochs: three\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*'schedule.epochs'.*expected int"):
        load_config(bad, REQ)


def test_enumerations_and_ranges_are_checked():
    with pytest.raises(ConfigError, match=r"'run.precision' = 'fp61'.*did you mean 'fp16'.*\['fp32', 'bf16', 'fp16'\]"):
        load_config(None, [*REQ, "run.precision=fp61"])
    with pytest.raises(ConfigError, match=r"'model.preset'.*unknown backbone preset 'resnet5'.*'resnet50'"):
        load_config(None, [*REQ, "model.preset=resnet5"])
    with pytest.raises(ConfigError, match=r"'model.mask_ratio' = 1.5; expected in \(0, 1\)"):
        load_config(None, [*REQ, "model.mask_ratio=1.5"])
    with pytest.raises(ConfigError, match=r"expected key=value"):
        load_config(None, [*REQ, "optim.lr"])
    with pytest.raises(ConfigError, match=r"without a value: \['data.root'\]"):
        load_config(None, ["run.out_dir=x"])


def test_resolved_text_round_trips():
    cfg = load_config(CONFIGS / "tiny_vit.yaml", [*REQ, "model.freq_weight=0.3"])
    text = to_yaml(cfg)
    assert from_yaml_text(text) == cfg
    assert "freq_weight: 0.3" in text
    other = to_yaml(load_config(CONFIGS / "tiny_vit.yaml", [*REQ, "run.max_steps=9", "model.timm_kwargs={a: 1}"]))
    assert changed_keys(text, other) == ["model.freq_weight", "model.timm_kwargs", "run.max_steps"]


def test_hand_overrides_build_any_timm_model():
    m = load_model_config(["model.preset=resnet50", "model.timm_name=resnet26", "model.inject_channels=1024",
                           "model.freq_weight=0.0", "model.timm_kwargs={drop_rate: 0.1}"])
    p = resolve_preset(m)
    assert (p.timm_name, p.inject_module, p.inject_channels) == ("resnet26", "layer3", 1024)
    assert p.loss.freq_weight == 0.0 and p.loss.spatial == "focal_l1" and p.loss.unmask_weight == 1e-3
    assert p.timm_kwargs == {"drop_rate": 0.1}
    with pytest.raises(ConfigError, match="only model"):
        load_model_config(["optim.lr=1"])


# the official recipes (spec §4): peak lr = base_lr * 2048 / 512, per-GPU batch x GPUs x accumulation = 2048
OFFICIAL = {  # name: (preset, method, epochs, base_lr, clip, precision, rrc_min, per-GPU batch, accum, schedule)
    "a2mim_r50_ep100": ("resnet50", "a2mim", 100, 3e-4, None, "fp32", 0.8, 256, 1, "cosine"),
    "a2mim_r50_ep300": ("resnet50", "a2mim", 300, 3e-4, None, "fp32", 0.8, 256, 1, "cosine"),
    "a2mim_r101_ep300": ("resnet101", "a2mim", 300, 3e-4, None, "fp32", 0.8, 256, 1, "cosine"),
    "a2mim_r152_ep300": ("resnet152", "a2mim", 300, 3e-4, None, "fp32", 0.8, 256, 1, "cosine"),
    "a2mim_r200_ep300": ("resnet200", "a2mim", 300, 3e-4, None, "fp32", 0.8, 256, 1, "cosine"),
    "a2mim_convnext_t_ep300": ("convnext_tiny", "a2mim", 300, 3e-4, None, "fp16", 0.8, 256, 1, "cosine"),
    "a2mim_convnext_s_ep300": ("convnext_small", "a2mim", 300, 3e-4, None, "fp16", 0.8, 256, 1, "cosine"),
    "a2mim_convnext_b_ep300": ("convnext_base", "a2mim", 300, 3e-4, None, "fp16", 0.8, 256, 1, "cosine"),
    "a2mim_vit_s_ep800": ("vit_small", "a2mim", 800, 1e-4, 5.0, "fp16", 0.67, 256, 1, "step"),
    "a2mim_vit_b_ep800": ("vit_base", "a2mim", 800, 1e-4, 5.0, "fp16", 0.67, 128, 2, "step"),
    "a2mim_vit_l_ep800": ("vit_large", "a2mim", 800, 1e-4, 5.0, "fp16", 0.67, 128, 2, "step"),
    "simmim_r50_ep300": ("resnet50", "simmim", 300, 2e-4, None, "fp16", 0.67, 256, 1, "cosine"),
    "simmim_vit_b_ep800": ("vit_base", "simmim", 800, 1e-4, 5.0, "fp16", 0.67, 128, 2, "step"),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_presets(name):
    preset, method, epochs, base_lr, clip, prec, rrc_min, bpg, accum, sched = OFFICIAL[name]
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert (cfg.model.preset, cfg.model.method, cfg.schedule.epochs) == (preset, method, epochs)
    assert (cfg.optim.base_lr, cfg.optim.lr, cfg.optim.clip_grad, cfg.run.precision) == (base_lr, None, clip, prec)
    assert (cfg.data.rrc_scale[0], cfg.run.batch_per_gpu, cfg.run.accum_steps, cfg.schedule.kind) == (
        rrc_min, bpg, accum, sched)
    assert cfg.run.batch_per_gpu * 8 * cfg.run.accum_steps == 2048
    assert (cfg.model.input_size, cfg.model.mask_patch, cfg.model.mask_ratio) == (224, 32, 0.6)
    assert cfg.schedule.warmup_epochs == 10 and cfg.optim.weight_decay == 0.05 and cfg.optim.betas == [0.9, 0.999]
    if sched == "step":
        assert cfg.schedule.step_epochs == [700] and cfg.model.drop_path == 0.1
    else:
        assert cfg.schedule.min_lr == 1e-5


def test_tiny_presets_need_root_and_out_dir():
    with pytest.raises(ConfigError, match=r"without a value: \['data.root', 'run.out_dir'\]"):
        load_config(CONFIGS / "tiny_vit.yaml")


def test_cli_reports_config_errors_without_traceback(capsys):
    from pretrain.train import main

    assert main(["--config", str(CONFIGS / "tiny_vit.yaml"), *REQ, "optim.lrr=1e-3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ConfigError: override 'optim.lrr=1e-3': unknown config key 'optim.lrr'")
    assert "Traceback" not in err
