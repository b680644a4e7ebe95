"""Backbone weights -> a detectron2 `.pkl` that DetectionCheckpointer loads (MoCo's converter, checked).

    python -m transfer.detectron2.convert WEIGHTS OUT.pkl [--img-size 1024]

WEIGHTS: an exported backbone (`.safetensors` + `.json`, timm names) or an official A²MIM / openmixup `.pth`
(keys under `backbone.` in `state_dict`), both read by transfer.weights.read_backbone_weights.
OUT.pkl: {'model': {name: np.ndarray}, '__author__': 'a2mim-suite', 'matching_heuristics': True, 'a2mim': {...}}

ResNet (torchvision names -> detectron2 names, bare as in MoCo's file; detectron2's suffix matching puts
`res5.*` into `roi_heads.res5.*` for C4 and everything into `backbone.bottom_up.*` for FPN):
    conv1 -> stem.conv1          bn1 -> stem.conv1.norm
    layerN.i.convK -> res{N+1}.i.convK     layerN.i.bnK -> res{N+1}.i.convK.norm
    layerN.i.downsample.0 -> res{N+1}.i.shortcut   layerN.i.downsample.1 -> res{N+1}.i.shortcut.norm
ViT (timm Beit names): full model names `backbone.net.vit.<timm name>` (modeling.py's layout), so matching is
exact; pos_embed (1, 1+g*g, D) and every relative_position_bias_table ((2g-1)^2+3, heads) are resized (bicubic,
timm's own resamplers) to the detection grid g = img_size / patch.
"""
from __future__ import annotations

import argparse
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import torch

from pretrain.fileio import atomic_write
from transfer.weights import read_backbone_weights

AUTHOR = "a2mim-suite"
VIT_PREFIX = "backbone.net.vit."          # where modeling.build_a2mim_vit_sfp_backbone keeps the timm ViT
RESNET_DEPTH = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}   # detectron2's bottleneck ResNets
DROPPED = ("fc.weight", "fc.bias")        # an ImageNet classifier is never part of a detector

_RESNET_RULES = (
    (re.compile(r"^conv1\.weight$"), lambda m: "stem.conv1.weight"),
    (re.compile(r"^bn1\.(\w+)$"), lambda m: f"stem.conv1.norm.{m[1]}"),
    (re.compile(r"^layer([1-4])\.(\d+)\.conv([1-3])\.weight$"),
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(r"^layer([1-4])\.(\d+)\.bn([1-3])\.(\w+)$"),
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (re.compile(r"^layer([1-4])\.(\d+)\.downsample\.0\.weight$"),
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
    (re.compile(r"^layer([1-4])\.(\d+)\.downsample\.1\.(\w+)$"),
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}"),
)


class ConversionError(ValueError):
    """Weights that cannot be converted for detectron2 (the message names the file and the keys)."""


def resnet_depth(sd: dict[str, torch.Tensor], source: str = "") -> int:
    """Depth from the number of blocks per stage (50/101/152); bottleneck ResNets only (detectron2's res5 head)."""
    blocks = tuple(len({k.split(".")[1] for k in sd if k.startswith(f"layer{s}.")}) for s in range(1, 5))
    if blocks not in RESNET_DEPTH or "layer1.0.conv3.weight" not in sd:
        raise ConversionError(f"{source}: ResNet with blocks per stage {blocks} is not a bottleneck ResNet-50/101/152 "
                              f"(detectron2's C4 head and ResNet builder support {sorted(RESNET_DEPTH.values())})")
    return RESNET_DEPTH[blocks]


def resnet_to_d2(sd: dict[str, torch.Tensor], source: str = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """torchvision-named ResNet -> detectron2 names. Unknown keys are an error (a silent drop is how loads go half)."""
    out, notes, unknown = {}, [], []
    for k, v in sd.items():
        if k in DROPPED:
            notes.append(f"dropped {k} (classifier)")
            continue
        for pat, name in _RESNET_RULES:
            m = pat.match(k)
            if m:
                out[name(m)] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise ConversionError(f"{source}: {len(unknown)} ResNet keys have no detectron2 name: {unknown[:10]} "
                              "(expected torchvision names conv1, bn1, layerN.i.{convK,bnK,downsample.0/1})")
    return out, notes


def vit_to_d2(sd: dict[str, torch.Tensor], img_size: int,
              source: str = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """timm Beit names -> `backbone.net.vit.*`, position tables resized to the square detection input img_size."""
    from timm.layers import resample_abs_pos_embed, resize_rel_pos_bias_table

    if "patch_embed.proj.weight" not in sd:
        raise ConversionError(f"{source}: ViT weights without patch_embed.proj.weight (timm Beit names expected)")
    patch = sd["patch_embed.proj.weight"].shape[-1]
    if img_size % (2 * patch):  # the pyramid's p5 halves the stride-16 map
        raise ConversionError(f"{source}: img_size {img_size} must be a multiple of {2 * patch} for the ViT pyramid")
    g = img_size // patch
    out, notes = {}, []
    for k, v in sd.items():
        if k.endswith("relative_position_index"):
            notes.append(f"dropped {k} (buffer, recomputed by the model)")
            continue
        if k == "pos_embed" and v.shape[1] != g * g + 1:
            old = tuple(v.shape)
            v = resample_abs_pos_embed(v.float(), new_size=[g, g], num_prefix_tokens=1)
            notes.append(f"resized {k} {old} -> {tuple(v.shape)}")
        elif k.endswith("relative_position_bias_table"):
            shape = ((2 * g - 1) ** 2 + 3, v.shape[1])
            if tuple(v.shape) != shape:
                old = tuple(v.shape)
                v = resize_rel_pos_bias_table(v.float(), new_window_size=(g, g), new_bias_shape=shape)
                notes.append(f"resized {k} {old} -> {tuple(v.shape)}")
        out[VIT_PREFIX + k] = v
    return out, notes


def backbone_kind(sd: dict[str, torch.Tensor], source: str = "") -> str:
    if "layer1.0.conv1.weight" in sd:
        return "resnet"
    if "blocks.0.attn.qkv.weight" in sd:
        return "vit"
    raise ConversionError(f"{source}: neither a ResNet (layer1.0.conv1.weight) nor a timm ViT "
                          f"(blocks.0.attn.qkv.weight), the two kinds supported; first keys: {list(sd)[:5]}")


def _to_numpy(v: torch.Tensor) -> np.ndarray:
    v = v.detach().cpu()
    return (v.float() if v.is_floating_point() else v).numpy()


def convert(weights: str | Path, out: str | Path, img_size: int = 1024) -> dict:
    """Write OUT.pkl; returns its 'a2mim' record (kind, preset/depth, img_size, notes, source)."""
    sd, meta, notes = read_backbone_weights(weights)
    src = str(weights)
    kind = backbone_kind(sd, src)
    info = {"kind": kind, "preset": meta.get("preset"), "source": src, "source_sha256": meta.get("sha256"),
            "method": meta.get("method")}
    if kind == "resnet":
        info["depth"] = resnet_depth(sd, src)
        model, more = resnet_to_d2(sd, src)
    else:
        info["img_size"] = int(img_size)
        info["depth"] = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
        model, more = vit_to_d2(sd, int(img_size), src)
    info["notes"] = notes + more
    obj = {"model": {k: _to_numpy(v) for k, v in model.items()}, "__author__": AUTHOR,
           "matching_heuristics": True, "a2mim": info}
    atomic_write(out, lambda f: pickle.dump(obj, f, protocol=4))
    return info


# ---- reading a .pkl back without executing arbitrary pickled code (numpy arrays and plain containers only)
_SAFE_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                 ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                 ("numpy._core.multiarray", "scalar")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays are allowed)")


def read_pkl(path: str | Path) -> dict:
    """A detectron2 `.pkl` ({'model': {name: ndarray}, '__author__', ...}) read with numpy-only unpickling."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detectron2 weights not found: {path}")
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ConversionError(f"{path}: not a detectron2 .pkl of numpy arrays ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict) or "__author__" not in obj:
        raise ConversionError(f"{path}: expected a dict with 'model' (name -> ndarray) and '__author__' "
                              "(detectron2 model-zoo format, as written by transfer.detectron2.convert)")
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m transfer.detectron2.convert", description=__doc__.split("\n")[0])
    ap.add_argument("weights", help="exported .safetensors (with .json sidecar) or official A²MIM .pth")
    ap.add_argument("out", help="output .pkl for detectron2 (MODEL.WEIGHTS)")
    ap.add_argument("--img-size", type=int, default=1024,
                    help="ViT only: square detection input (MODEL.VIT.IMG_SIZE) the position tables are resized to")
    a = ap.parse_args(argv)
    if not a.out.endswith(".pkl"):
        ap.error(f"output must end in .pkl (DetectionCheckpointer picks the format by extension): {a.out}")
    try:
        info = convert(a.weights, a.out, a.img_size)
    except (ConversionError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(read_pkl(a.out)["model"])
    print(f"wrote {a.out}: {n} tensors, {info['kind']} (depth {info['depth']}); notes: {len(info['notes'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
