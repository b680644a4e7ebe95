"""The released-backbone format: `<stem>.safetensors` (backbone tensors) + `<stem>.json` (metadata sidecar).

Tensors carry timm key names (ResNet = torchvision names, ViT = timm Beit names); the A²MIM-only parts
(mask token, gamma, decoder) and any classifier are NOT in the file. The sidecar holds:
  format='a2mim-backbone', version=1, preset, timm_name, timm_kwargs, kind ('cnn'|'vit'),
  method ('a2mim'|'simmim'|'random'|...), inject_module, inject_stride, input_size, mean, std,
  pretrain_config (resolved config dict), step, epoch, sha256 (of the .safetensors file).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pretrain.fileio import atomic_write, atomic_write_json, sha256_file

FORMAT = "a2mim-backbone"
VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ExportFormatError(ValueError):
    pass


def sidecar_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def write_backbone(weights: str | Path, state_dict: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors atomically, then the sidecar (with the tensors' sha256). Returns the weights path."""
    from safetensors.torch import save

    weights = Path(weights)
    if weights.suffix != ".safetensors":
        raise ExportFormatError(f"{weights}: exported backbones are written as .safetensors")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    blob = save(tensors)
    atomic_write(weights, lambda f: f.write(blob))
    sidecar = {"format": FORMAT, "version": VERSION, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
               **meta, "sha256": sha256_file(weights), "num_tensors": len(tensors)}
    atomic_write_json(sidecar_path(weights), sidecar)
    return weights


def read_backbone(weights: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Read an exported backbone; checks the sidecar's format and the file's sha256."""
    from safetensors.torch import load_file

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"exported backbone not found: {weights}")
    side = sidecar_path(weights)
    if not side.is_file():
        raise ExportFormatError(f"{weights}: missing metadata sidecar {side.name} (written by `python -m pretrain.export`)")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise ExportFormatError(f"{side}: not valid JSON ({e})") from e
    if meta.get("format") != FORMAT:
        raise ExportFormatError(f"{side}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if verify and meta.get("sha256") != sha256_file(weights):
        raise ExportFormatError(f"{weights}: sha256 does not match its sidecar {side.name} (file changed or truncated)")
    try:
        sd = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types
        raise ExportFormatError(f"{weights}: not a readable safetensors file ({e})") from e
    return sd, meta
