"""Backbone weights -> a detectron2 `.pkl` that DetectionCheckpointer loads (MoCo's converter, checked): the user-facing
export for detectron2 tools (training here loads in memory, transfer/detectron2/gate.py, with the same renames).

    python -m transfer.detectron2.convert WEIGHTS OUT.pkl [--img-size 1024] [--quiet]

A ResNet also gets OUT.yaml: the stock settings to merge after a model-zoo config (STRIDE_IN_1X1 false, INPUT.FORMAT
RGB, torchvision mean/std in 0-255 units, DEPTH, RES2_OUT_CHANNELS 64 for 18/34), so that stock detectron2 builds
the network the weights belong to.

Prints every renamed key (source -> detectron2 name) unless --quiet.

WEIGHTS: an exported backbone (`.safetensors` + `.json`, timm names) or an official A²MIM / openmixup `.pth`
(keys under `backbone.` in `state_dict`), both read by transfer.weights.read_backbone_weights.
OUT.pkl: {'model': {name: np.ndarray}, '__author__': 'a2mim-suite', 'matching_heuristics': True, 'a2mim': {...}}

ResNet (torchvision names -> detectron2 names, bare as in MoCo's file; detectron2's suffix matching puts
`res5.*` into `roi_heads.res5.*` for C4 and everything into `backbone.bottom_up.*` for FPN):
    conv1 -> stem.conv1          bn1 -> stem.conv1.norm
    layerN.i.convK -> res{N+1}.i.convK     layerN.i.bnK -> res{N+1}.i.convK.norm
    layerN.i.downsample.0 -> res{N+1}.i.shortcut   layerN.i.downsample.1 -> res{N+1}.i.shortcut.norm
ResNet-18/34 (basic blocks) convert the same way; build them in detectron2 with MODEL.RESNETS.DEPTH 18/34 and
MODEL.RESNETS.RES2_OUT_CHANNELS 64 (FPN only: detectron2's C4 head is a bottleneck res5).
Any other exported family (ConvNeXt, a ViT, any timm model: the backbone contract, modeling.py): full model
names `backbone.bottom_up.features.body.<timm name>` (CNN + FPN) or `backbone.net.features.body.<timm name>` (ViT
+ simple feature pyramid), so matching is exact; a ViT's position tables are resized to the detection grid
img_size / patch (transfer.backbones.adapt_state_dict, the one resize).
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
CONTRACT_PREFIX = {"vit": "backbone.net.features.body.", "cnn": "backbone.bottom_up.features.body."}
RESNET_DEPTH = {(3, 4, 6, 3, True): 50, (3, 4, 23, 3, True): 101, (3, 8, 36, 3, True): 152,
                (2, 2, 2, 2, False): 18, (3, 4, 6, 3, False): 34}    # (blocks per stage, bottleneck) -> depth
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
    """Depth from the blocks per stage and the block type (18/34 basic, 50/101/152 bottleneck: detectron2's)."""
    blocks = tuple(len({k.split(".")[1] for k in sd if k.startswith(f"layer{s}.")}) for s in range(1, 5))
    key = (*blocks, "layer1.0.conv3.weight" in sd)
    if key not in RESNET_DEPTH:
        raise ConversionError(f"{source}: ResNet with blocks per stage {blocks} ({'bottleneck' if key[-1] else 'basic'}) "
                              f"is none of detectron2's ResNets {sorted(RESNET_DEPTH.values())}")
    return RESNET_DEPTH[key]


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


def contract_to_d2(sd: dict[str, torch.Tensor], meta: dict, img_size: int,
                   source: str = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """An export for the backbone contract: full detectron2 model names, a ViT's tables resized to img_size."""
    from transfer.backbones import adapt_state_dict, build_timm_body

    if not meta.get("timm_name"):
        raise ConversionError(f"{source}: no sidecar naming the architecture (timm_name); detectron2's native names "
                              f"exist for ResNets only")
    kind = meta.get("kind", "cnn")
    with torch.device("meta"):
        body = build_timm_body(meta["timm_name"], meta.get("timm_kwargs") or {}, kind, img_size)
    sd, notes = adapt_state_dict(body, sd, kind)
    return {CONTRACT_PREFIX[kind] + k: v for k, v in sd.items()}, notes


def backbone_kind(sd: dict[str, torch.Tensor], source: str = "") -> str:
    """'resnet' (detectron2's native ResNet names exist) or 'contract' (any other export)."""
    return "resnet" if "layer1.0.conv1.weight" in sd else "contract"


def _renames(sd: dict, model: dict, kind: str, meta: dict) -> list[tuple[str, str]]:
    """(source key, detectron2 key) of every tensor written."""
    if kind == "resnet":
        out = []
        for k in sd:
            for pat, name in _RESNET_RULES:
                m = pat.match(k)
                if m:
                    out.append((k, name(m)))
                    break
        return out
    prefix = CONTRACT_PREFIX[meta.get("kind", "cnn")]
    return [(k[len(prefix):], k) for k in model]


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
        model, more = contract_to_d2(sd, meta, int(img_size), src)
    info["renamed"] = _renames(sd, model, kind, meta)
    info["notes"] = notes + more
    obj = {"model": {k: _to_numpy(v) for k, v in model.items()}, "__author__": AUTHOR,
           "matching_heuristics": True, "a2mim": info}
    atomic_write(out, lambda f: pickle.dump(obj, f, protocol=4))
    if kind == "resnet":
        info["stock_yaml"] = str(write_stock_yaml(out, info["depth"]))
    return info


def write_stock_yaml(pkl: str | Path, depth: int) -> Path:
    """OUT.yaml beside OUT.pkl: the stock-detectron2 settings this ResNet needs (stock get_cfg() keys only). Its
    defaults would load the .pkl without a warning into the wrong network: STRIDE_IN_1X1 True (MSRA: stride in the
    1x1 conv; torchvision/timm put it in the 3x3) and caffe BGR pixels with std 1."""
    from transfer.detectron2.configs import TORCHVISION_MEAN_255, TORCHVISION_STD_255

    pkl = Path(pkl).resolve()
    path = pkl.with_suffix(".yaml")
    res2 = "\n    RES2_OUT_CHANNELS: 64          # basic blocks (ResNet-18/34); FPN configs only" if depth < 50 else ""
    text = (f"# Stock detectron2 settings for {pkl.name} (a torchvision-style ResNet-{depth}), written by\n"
            f"# transfer.detectron2.convert. Merge AFTER a model-zoo config, e.g.\n"
            f"#   cfg = get_cfg()\n"
            f"#   cfg.merge_from_file(model_zoo.get_config_file('COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml'))\n"
            f"#   cfg.merge_from_file('{path.name}')\n"
            f"MODEL:\n  WEIGHTS: {pkl}\n"
            f"  PIXEL_MEAN: {list(TORCHVISION_MEAN_255)}   # RGB, torchvision's mean in 0-255 units\n"
            f"  PIXEL_STD: {list(TORCHVISION_STD_255)}\n"
            f"  RESNETS:\n    DEPTH: {depth}\n    STRIDE_IN_1X1: false         # torchvision: stride in the 3x3 conv"
            f"{res2}\n"
            f"INPUT:\n  FORMAT: RGB\n")
    from pretrain.fileio import atomic_write_text
    atomic_write_text(path, text)
    return path


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
                    help="ViT only: square detection input (MODEL.EXPORTED.IMG_SIZE) the position tables are resized to")
    ap.add_argument("--quiet", action="store_true", help="do not print every renamed key")
    a = ap.parse_args(argv)
    if not a.out.endswith(".pkl"):
        ap.error(f"output must end in .pkl (DetectionCheckpointer picks the format by extension): {a.out}")
    try:
        info = convert(a.weights, a.out, a.img_size)
    except (ConversionError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(read_pkl(a.out)["model"])
    if not a.quiet:
        for src, dst in info["renamed"]:
            print(f"  {src} -> {dst}")
        for note in info["notes"]:
            print(f"  note: {note}")
    depth = f" (depth {info['depth']})" if "depth" in info else ""
    print(f"wrote {a.out}: {n} tensors, {info['kind']}{depth}; notes: {len(info['notes'])}")
    if "stock_yaml" in info:
        print(f"wrote {info['stock_yaml']}: merge it after a stock model-zoo config (STRIDE_IN_1X1 false, RGB, "
              f"torchvision mean/std)")
    else:
        print("stock detectron2 has no native names for this family: train it with python -m transfer.detectron2.train "
              "(the backbone contract, MODEL.EXPORTED.*)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
