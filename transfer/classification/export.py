"""Export the backbone of a finished classification run (e.g. a supervised init trained from random weights):
    python -m transfer.classification.export RUN_DIR --out W.safetensors [--method supervised]

Writes the pretrain.export_format pair (timm-named tensors + sidecar) that every transfer entry point reads: the
architecture of the weights the run started from (their sidecar's preset, timm_name, timm_kwargs, kind,
input_size), the classifier dropped, a mean-pooling ViT's `fc_norm` mapped back to the final `norm` (the reverse of
transfer/classification/model.py), method as given, step/epoch as trained, and the run's resolved config. The
tensors go through the load gate into the sidecar's own architecture first: a partial export fails, naming keys.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

def export_run(run_dir: str | Path, out: str | Path, method: str = "supervised") -> Path:
    from pretrain.checkpoint import CheckpointError, load_checkpoint
    from pretrain.config import to_dict
    from pretrain.export_format import read_backbone, write_backbone
    from transfer.backbones import build_timm_body
    from transfer.classification.config import SCHEMA
    from transfer.classification.model import classifier_name
    from transfer.weights import load_with_report

    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if not (run_dir / "done").is_file():
        raise CheckpointError(f"{run_dir}: not a finished classification run (no 'done' marker)")
    ck = load_checkpoint(last)
    cfg = SCHEMA.from_yaml_text(ck["config"], where=f"{last} (config)")
    if cfg.model.mode != "finetune":
        raise CheckpointError(f"{run_dir}: model.mode={cfg.model.mode}; only a fine-tuned network has a trained "
                              f"backbone to export")
    _, init = read_backbone(cfg.model.weights, verify=False)
    body = build_timm_body(init["timm_name"], init.get("timm_kwargs") or {}, init["kind"], init.get("input_size"))
    head = classifier_name(body)
    sd = {k: v for k, v in ck["model"].items() if not (k == head or k.startswith(head + "."))}
    if "fc_norm.weight" in sd and "norm.weight" in body.state_dict():
        for name in ("weight", "bias"):
            sd[f"norm.{name}"] = sd.pop(f"fc_norm.{name}")
    load_with_report(body, sd, source=str(last))                       # the gate: all of the backbone, nothing else
    meta = {k: init.get(k) for k in ("preset", "timm_name", "timm_kwargs", "kind", "inject_module", "inject_stride",
                                     "input_size")}
    meta.update(method=method, pretrain_config=to_dict(cfg), step=int(ck["step"]), epoch=int(ck["epoch"]),
                init_weights=str(cfg.model.weights), init_sha256=init.get("sha256"),
                inject_module=None, inject_stride=None)
    return write_backbone(out, body.state_dict(), meta)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser("python -m transfer.classification.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a finished classification run folder (model.mode=finetune)")
    p.add_argument("--out", required=True, help="output .safetensors path (+ .json sidecar)")
    p.add_argument("--method", default="supervised", help="method label of the sidecar (default: supervised)")
    a = p.parse_args(argv)
    from pretrain.checkpoint import CheckpointError
    from pretrain.export_format import ExportFormatError
    from transfer.weights import IncompleteLoadError
    try:
        print(export_run(a.run_dir, a.out, a.method))
    except (CheckpointError, ExportFormatError, IncompleteLoadError, FileNotFoundError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
