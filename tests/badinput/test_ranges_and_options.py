"""Numeric settings out of range fail at start-up naming the key (pre-training and classification schemas);
--cfg-options keys of the mmdet / mmseg entry points are checked against the resolved config (did-you-mean), a
registry component's own arguments are accepted, +KEY adds a key, and --tiny never overrides the user's options."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pretrain.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "pretrain" / "configs" / "tiny_r18.yaml"
BASE = ["data.root=/nonexistent", "run.out_dir=/nonexistent/run"]

PRETRAIN_CASES = {   # override -> the expected text after "config key 'K' = V; expected"
    "optim.clip_grad=-1.0": "> 0 or null",
    "optim.clip_grad=0": "> 0 or null",
    "schedule.step_epochs=[-5]": "ascending epochs in [0, schedule.epochs]",
    "schedule.step_epochs=[30,10]": "ascending epochs in [0, schedule.epochs]",
    "data.rrc_scale=[0,0]": "0 < min <= max <= 1",
    "data.rrc_scale=[1.0,0.5]": "0 < min <= max <= 1",
    "data.rrc_ratio=[1.5,0.5]": "0 < min <= max",
    "model.drop_path=-0.5": "in [0, 1) or null",
    "model.mask_patch=0": "an integer >= 1",
    "model.mask_patch=8": "a multiple of the injection stride 16",
    "optim.lr_ref_batch=0": ">= 1",
    "optim.lr=-0.1": ">= 0 or null",
    "optim.base_lr=-1": ">= 0",
    "optim.weight_decay=-0.05": ">= 0",
    "optim.eps=0": "> 0",
    "optim.betas=[0.9,1.5]": "2 floats in [0, 1)",
    "schedule.min_lr=-1e-5": ">= 0",
    "schedule.warmup_lr_init=-1": ">= 0",
    "schedule.step_gamma=0": "> 0",
    "model.input_size=-64": "an integer >= 1",
    "model.input_size=48": "a multiple of the backbone's output stride 32",
    "data.num_workers=-1": ">= 0",
    "data.hflip=2.0": "in [0, 1]",
    "run.seed=-3": ">= 0",
    "run.max_weight_growth=0.5": "> 1 or null",
    "model.mask_init=-1": ">= 0 or null",
}


@pytest.mark.parametrize("override", sorted(PRETRAIN_CASES))
def test_pretrain_range_fails_at_start_naming_the_key(override, tally):
    key = override.split("=", 1)[0]
    with pytest.raises(ConfigError, match=r"config key '" + key.replace(".", r"\.") + r"' = .*; expected "):
        load_config(TINY, [*BASE, override])
    try:
        load_config(TINY, [*BASE, override])
    except ConfigError as e:
        assert PRETRAIN_CASES[override] in str(e), str(e)
    tally.error(f"range_pretrain_{override}")


def test_clip_grad_negative_through_the_cli(tmp_path, capsys, tally):
    from pretrain.train import main
    assert main(["--config", str(TINY), f"data.root={tmp_path}", f"run.out_dir={tmp_path / 'run'}",
                 "optim.clip_grad=-1"]) == 1
    err = capsys.readouterr().err
    assert "config key 'optim.clip_grad' = -1.0; expected > 0 or null" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()                    # nothing started
    tally.error("range_cli_clip_grad_negative")


CLS_CASES = {"optim.clip_grad=-1": "> 0 or null", "mixup.prob=2": "in [0, 1]", "loss.label_smoothing=1.0": "in [0, 1)",
             "data.rrc_scale=[0.5,0.1]": "0 < min <= max <= 1", "optim.momentum=1.2": "in [0, 1)",
             "data.re_prob=-0.1": "in [0, 1]", "model.drop_path=1.0": "in [0, 1)", "data.num_workers=-2": ">= 0",
             "optim.lr_ref_batch=0": ">= 1", "data.hflip=-1": "in [0, 1]"}


@pytest.mark.parametrize("override", sorted(CLS_CASES))
def test_classification_range_fails_naming_the_key(override, tally):
    from transfer.classification.config import load_config as load_cls
    key = override.split("=", 1)[0]
    with pytest.raises(ConfigError) as e:
        load_cls(REPO / "transfer" / "classification" / "configs" / "rsb_a2_r50.yaml",
                 ["data.root=/x", "run.out_dir=/y", "model.weights=/w", override])
    assert f"config key '{key}' = " in str(e.value) and CLS_CASES[override] in str(e.value), str(e.value)
    tally.error(f"range_cls_{override}")


# ---------------------------------------------------------------- --cfg-options of mmdet / mmseg
MMDET = REPO / "transfer" / "mmdet" / "configs" / "mask_rcnn_r50_fpn_1x.py"
MMSEG = REPO / "transfer" / "mmseg" / "configs" / "upernet_r50_160k.py"
OPTION_CASES = {  # (config, scope, key) -> did-you-mean (None: just unknown)
    "batch_sise": (MMDET, "mmdet", "train_dataloader.batch_sise", "train_dataloader.batch_size"),
    "lrr": (MMDET, "mmdet", "optim_wrapper.optimizer.lrr", "optim_wrapper.optimizer.lr"),
    "deptth": (MMSEG, "mmseg", "model.backbone.deptth", "model.backbone.depth"),
    "max_iterz": (MMSEG, "mmseg", "max_iterz", None),
    "train_cfg_typo": (MMSEG, "mmseg", "train_cfg.max_iterz", "train_cfg.max_iters"),
}


@pytest.mark.openmmlab
@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_cfg_options_typo_names_the_nearest_key(case, tally):
    import corpus
    from transfer.openmmlab_config import ConfigError as MMConfigError, check_cfg_options
    path, scope, key, near = OPTION_CASES[case]
    cfg = corpus.openmmlab_config(path)
    with pytest.raises(MMConfigError, match=r"--cfg-options: unknown config key '" + key.replace(".", r"\.")) as e:
        check_cfg_options(cfg, {key: 1}, scope=scope)
    if near:
        assert f"did you mean '{near}'?" in str(e.value)
    assert "+KEY=VALUE" in str(e.value)
    tally.error(f"cfg_options_{case}")


@pytest.mark.openmmlab
def test_cfg_options_component_arguments_and_plus_keys_are_accepted():
    import corpus
    from transfer.openmmlab_config import check_cfg_options
    cfg = corpus.openmmlab_config(MMDET)
    ok = {"model.backbone.frozen_stages": 2,           # an argument of mmdet's ResNet, not in the config
          "default_hooks.checkpoint.by_epoch": False,   # an argument of CheckpointHook
          "train_dataloader.batch_size": 4, "+custom_top_level": 1}
    out = check_cfg_options(cfg, ok, scope="mmdet")
    assert out == {"model.backbone.frozen_stages": 2, "default_hooks.checkpoint.by_epoch": False,
                   "train_dataloader.batch_size": 4, "custom_top_level": 1}


@pytest.mark.openmmlab
def test_tiny_never_overrides_the_users_options(tmp_path):
    from transfer.mmdet.train import MMDET as FW
    from transfer.openmmlab_common import parse_args, prepare
    args = parse_args(FW, [str(MMDET), "--weights", "w.safetensors", "--work-dir", str(tmp_path), "--tiny", "64",
                           "--cfg-options", "default_hooks.checkpoint.interval=1", "train_dataloader.batch_size=3"])
    cfg = prepare(FW, args)
    assert cfg.default_hooks.checkpoint.interval == 1 and cfg.train_dataloader.batch_size == 3
    assert cfg.train_cfg.max_iters == 2                      # and --tiny's own settings stay where not overridden
    assert isinstance(args, argparse.Namespace)
