"""Export a pre-trained backbone: python -m pretrain.export RUN_DIR_or_CHECKPOINT --out path.safetensors
   or a random-init baseline:     python -m pretrain.export --random resnet50 [model.input_size=64 ...] --out ...

Writes <out>.safetensors (backbone tensors, timm key names) + <out>.json sidecar through
pretrain.export_format.write_backbone (sidecar: preset, timm_name, timm_kwargs, kind, method, inject module/stride,
input_size, pretrain_config, step, epoch, mean/std, sha256).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from pretrain.a2mim import build_model
from pretrain.checkpoint import CheckpointError, load_checkpoint, state_dict_mismatch
from pretrain.config import (ConfigError, ModelConfig, PretrainConfig, from_yaml_text, load_model_config,
                             resolve_preset, to_dict)
from pretrain.export_format import write_backbone


def export_meta(model_cfg: ModelConfig, method: str, pretrain_config: dict, step: int, epoch: int) -> dict:
    p = resolve_preset(model_cfg)
    simmim = model_cfg.method == "simmim"
    kwargs = dict(p.timm_kwargs)
    if model_cfg.drop_path is not None:
        kwargs["drop_path_rate"] = model_cfg.drop_path
    return {"preset": model_cfg.preset, "timm_name": p.timm_name, "timm_kwargs": kwargs, "kind": p.kind,
            "method": method, "inject_module": p.simmim_inject_module if simmim else p.inject_module,
            "inject_stride": p.simmim_inject_stride if simmim else p.inject_stride,
            "input_size": model_cfg.input_size, "pretrain_config": pretrain_config, "step": step, "epoch": epoch}


def export_model(model, cfg: PretrainConfig, out: str | Path, step: int, epoch: int) -> Path:
    """Backbone of a trained A2MIM model -> safetensors + sidecar."""
    meta = export_meta(cfg.model, cfg.model.method, to_dict(cfg), step, epoch)
    return write_backbone(out, model.export_state_dict(), meta)


def resolve_checkpoint(src: str | Path) -> Path:
    src = Path(src)
    if src.is_dir():
        for cand in (src / "checkpoints" / "last.pt", src / "last.pt"):
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"{src}: no checkpoints/last.pt in this run folder")
    return src


def load_pretrain_model(src: str | Path):
    """-> (A2MIM model, its PretrainConfig, step, epoch, checkpoint path) from a run folder or a checkpoint file."""
    path = resolve_checkpoint(src)
    ck = load_checkpoint(path)
    for key in ("model", "config", "step", "epoch"):
        if not isinstance(ck, dict) or key not in ck:
            raise CheckpointError(f"{path}: not a pre-training checkpoint (no '{key}' entry)")
    cfg = from_yaml_text(ck["config"], where=f"{path} (config)")
    model = build_model(cfg)
    try:
        model.load_state_dict(ck["model"])  # strict: the checkpoint was written by this model class
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model its config builds: "
                              f"{state_dict_mismatch(model, ck['model'])}") from None
    return model, cfg, int(ck["step"]), int(ck["epoch"]), path


def export_checkpoint(src: str | Path, out: str | Path) -> Path:
    model, cfg, step, epoch, _ = load_pretrain_model(src)
    return export_model(model, cfg, out, step, epoch)


def export_random(out: str | Path, model_overrides: list[str] = (), seed: int = 0, method: str = "random") -> Path:
    """A randomly initialised backbone (the 'random init' baseline), seeded; model.preset=... picks it."""
    mcfg = load_model_config(model_overrides)
    torch.manual_seed(seed)
    model = build_model(mcfg)
    meta = export_meta(mcfg, method, {"model": dataclasses.asdict(mcfg), "seed": seed}, 0, 0)
    return write_backbone(out, model.export_state_dict(), meta)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser("python -m pretrain.export",
                                description="export an A2MIM backbone (.safetensors + .json sidecar)")
    p.add_argument("args", nargs="*", metavar="RUN_DIR_OR_CHECKPOINT | model.KEY=VALUE",
                   help="a run folder or checkpoint file; with --random: model.key=value overrides")
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.add_argument("--random", nargs="?", const="", metavar="PRESET",
                   help="export a randomly initialised backbone of PRESET (or of --preset)")
    p.add_argument("--preset", help="backbone preset (with --random)")
    p.add_argument("--method", default="random", help="method label written to the sidecar (with --random)")
    p.add_argument("--seed", type=int, default=0, help="init seed (with --random)")
    p.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE",
                   help="model overrides (with --random), e.g. --set model.input_size=64")
    a = p.parse_args(argv)
    try:
        if a.random is not None:
            preset = a.random or a.preset
            if not preset:
                p.error("--random needs a preset: --random resnet50 (or --random --preset resnet50)")
            out = export_random(a.out, [f"model.preset={preset}", *a.set, *a.args], a.seed, a.method)
        else:
            if len(a.args) != 1 or a.set:
                p.error("give one run folder or checkpoint (or --random PRESET [model.key=value ...])")
            out = export_checkpoint(a.args[0], a.out)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
