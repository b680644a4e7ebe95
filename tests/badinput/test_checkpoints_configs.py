"""Bad checkpoints (missing / renamed / mis-shaped keys, code-running pickles, wrong content) and bad configs
(misspelled key, wrong type) through the entry points that read them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import corpus
from pretrain.checkpoint import CheckpointDir, CheckpointError, save_checkpoint
from transfer.weights import IncompleteLoadError, load_backbone_into, read_backbone_weights

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "pretrain" / "configs" / "tiny_r18.yaml"


class _Detector(nn.Module):
    """The shape the transfer gate expects: a model with a `backbone` (ResNet-style names)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.conv1 = nn.Conv2d(3, 4, 3, bias=False)
        self.backbone.bn1 = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)


def _official_pth(path: Path, edit) -> Path:
    sd = {f"backbone.{k}": torch.full_like(v, 7) for k, v in _Detector().backbone.state_dict().items()}
    edit(sd)
    torch.save({"state_dict": sd, "meta": {"epoch": 300}}, path)
    return path


KEY_CASES = {  # case -> (edit of the official checkpoint, the row the gate's table must show)
    "checkpoint_missing_key": (lambda sd: sd.pop("backbone.bn1.running_var"),
                               r"1 missing, 0 unexpected, 0 shape-mismatched.*\n.*missing\s+backbone.bn1.running_var"),
    "checkpoint_renamed_key": (lambda sd: sd.__setitem__("backbone.conv_1.weight", sd.pop("backbone.conv1.weight")),
                               r"1 missing, 1 unexpected.*missing\s+backbone.conv1.weight\s*\n\s+unexpected\s+"
                               r"backbone.conv_1.weight"),
    "checkpoint_misshaped_key": (lambda sd: sd.__setitem__("backbone.bn1.weight", torch.ones(5)),
                                 r"0 missing, 0 unexpected, 1 shape-mismatched.*\n\s+shape\s+backbone.bn1.weight\s+"
                                 r"target \[4\] vs source \[5\]"),
}


@pytest.mark.parametrize("case", sorted(KEY_CASES))
def test_checkpoint_key_damage_fails_the_transfer_gate_by_name(tmp_path, case, tally):
    edit, message = KEY_CASES[case]
    path = _official_pth(tmp_path / "a2mim_official.pth", edit)
    model = _Detector()
    before = model.backbone.conv1.weight.detach().clone()
    loaded = read_backbone_weights(path)
    with pytest.raises(IncompleteLoadError, match=r"(?s)backbone weights from .*a2mim_official.pth failed the load "
                                                  r"gate: " + message):
        load_backbone_into(model, path, report_path=tmp_path / "load_report.json", loaded=loaded)
    assert torch.equal(model.backbone.conv1.weight, before)            # nothing loaded
    assert (tmp_path / "load_report.json").is_file()
    tally.error(case)


def _export_main(capsys, *args) -> tuple[int, str]:
    from pretrain.export import main
    rc = main([*map(str, args)])
    return rc, capsys.readouterr().err


def test_malicious_and_foreign_checkpoints_through_export_and_resume(tmp_path, capsys, tally):
    marker = tmp_path / "PWNED"
    evil = corpus.evil_checkpoint(tmp_path / "evil.pt", marker)
    rc, err = _export_main(capsys, evil, "--out", tmp_path / "x.safetensors")
    assert rc == 1 and re.match(r"error: CheckpointError: .*evil.pt: refused to load: it holds Python objects", err)
    pth = tmp_path / "evil.pth"                            # the same file offered as official transfer weights
    pth.write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match=r"evil.pth: refused to load"):
        read_backbone_weights(pth)
    # resume: a malicious last.pt is refused outright, never skipped in favour of an older file
    ck = CheckpointDir(tmp_path / "run" / "checkpoints")
    ck.save({"step": 1}, 1)
    ck.last.unlink()
    ck.last.write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match=r"last.pt: refused to load.*no unsafe fallback"):
        ck.load_latest()
    assert not marker.exists()
    # a checkpoint that is not a pre-training checkpoint / is cut short
    save_checkpoint(tmp_path / "weights_only.pt", {"state_dict": {"w": torch.ones(1)}})
    rc, err = _export_main(capsys, tmp_path / "weights_only.pt", "--out", tmp_path / "x.safetensors")
    assert rc == 1 and "weights_only.pt: not a pre-training checkpoint (no 'model' entry)" in err
    (tmp_path / "cut.pt").write_bytes((tmp_path / "weights_only.pt").read_bytes()[:100])
    rc, err = _export_main(capsys, tmp_path / "cut.pt", "--out", tmp_path / "x.safetensors")
    assert rc == 1 and "cut.pt: not a readable checkpoint (truncated or corrupt?)" in err
    assert "Traceback" not in err and not (tmp_path / "x.safetensors").exists()
    tally.error("malicious_pickle_export", "malicious_pickle_transfer_pth", "malicious_pickle_resume",
                "checkpoint_not_pretraining", "checkpoint_truncated")


CONFIG_CASES = {  # case -> (YAML text, the message after 'error: ConfigError: ')
    "config_misspelled_key": ("run:\n  batch_per_gpu: 4\n  ckpt_intervall: 10\n",
                              r"cfg.yaml: unknown config key 'run.ckpt_intervall' \(did you mean 'run.ckpt_interval'"),
    "config_misspelled_section": ("dataa:\n  root: /x\n", r"unknown config key 'dataa' \(did you mean 'data'\?\)"),
    "config_wrong_type": ("data:\n  skip_budget: many\n", r"cfg.yaml: bad value for config key 'data.skip_budget': "
                          r".*; expected int"),
    "config_wrong_type_list": ("data:\n  rrc_scale: 0.5\n", r"cfg.yaml: bad value for config key 'data.rrc_scale'"
                               r".*; expected list of float"),
    "config_not_a_mapping": ("- a\n- b\n", r"cfg.yaml: expected a mapping at '<top>', got list"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_ends_the_train_cli_with_one_message(tmp_path, capsys, case, tally):
    from pretrain.train import main
    text, message = CONFIG_CASES[case]
    cfg = corpus.yaml_file(tmp_path, "cfg.yaml", text)
    assert main(["--config", str(cfg), f"data.root={tmp_path}", f"run.out_dir={tmp_path / 'run'}"]) == 1
    err = capsys.readouterr().err
    assert re.match(r"error: ConfigError: .*" + message, err), err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    tally.error(case)
