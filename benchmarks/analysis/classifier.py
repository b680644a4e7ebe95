"""The classifier the interaction analysis probes: an exported backbone + a linear head on its pooled features.

Backbone: an exported `.safetensors` + `.json` sidecar (pretrain.export), rebuilt from the sidecar's preset /
timm name / kwargs / input size and loaded through transfer.weights' hard gate (load_report.json written).
Head, either
  * given: a `.pt` file read with pretrain.checkpoint.load_checkpoint holding ONE linear layer, i.e. a 2-D
    `weight` (K, D) and a 1-D `bias` (K,), optionally under a prefix (`head.weight`, `fc.weight`, ...) and/or
    nested in a 'state_dict' / 'model' / 'head' entry; or
  * fitted (`fit_probe`): multinomial logistic regression on frozen pooled features (float64, features
    standardised, zero init, L2 `weight_decay`, full-batch L-BFGS for `steps` iterations), standardisation folded
    back into the layer. No randomness: the same features give the same head.
Score (Deng et al.): v = log p_y / (1 - p_y) of the true class y = logit_y - logsumexp(logits of the other classes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.models.backbone import build_backbone
from pretrain.models.presets import get_preset


class ClassifierError(ValueError):
    """A backbone sidecar or head file that cannot build the classifier; the message names the file."""


def load_exported_backbone(weights: str | Path, report_path: str | Path | None = None) -> tuple[nn.Module, dict]:
    """-> (timm backbone without classifier, in eval mode, sidecar meta). Fails (with the load table) unless
    every backbone tensor is matched."""
    from transfer.weights import COUNTER_KEYS, load_with_report, read_backbone_weights

    sd, meta, notes = read_backbone_weights(weights)
    missing = [k for k in ("preset", "timm_name", "kind") if k not in meta]
    if missing:
        raise ClassifierError(f"{weights}: sidecar lacks {missing}; the analysis needs an exported backbone "
                        f"(python -m pretrain.export) whose sidecar names its architecture")
    preset = get_preset(meta["preset"]).replace(timm_name=meta["timm_name"], kind=meta["kind"],
                                                 timm_kwargs=dict(meta.get("timm_kwargs", {})))
    model = build_backbone(preset, img_size=meta.get("input_size"))
    load_with_report(model, sd, allow_missing=COUNTER_KEYS, report_path=report_path, source=str(weights),
                     notes=notes)
    return model.eval(), meta


@torch.no_grad()
def pooled_features(backbone: nn.Module, images: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """images (N,3,H,W) -> pooled features (N, D) float32 on the CPU (timm forward with num_classes=0)."""
    backbone.eval().to(device)
    return torch.cat([backbone(images[i:i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)])


def _unwrap(obj, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise ClassifierError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    for key in ("state_dict", "model", "head"):
        if isinstance(obj.get(key), dict) and not any(k.endswith("weight") for k in obj if isinstance(k, str)):
            return _unwrap(obj[key], path)
    return obj


def load_head(path: str | Path, in_features: int, num_classes: int) -> nn.Linear:
    """A linear head from a `.pt` state dict (see the module docstring for the accepted layouts)."""
    from pretrain.checkpoint import load_checkpoint

    path = Path(path)
    sd = _unwrap(load_checkpoint(path), path)
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    weights = [k for k, v in tensors.items() if k.rsplit(".", 1)[-1] == "weight" and v.ndim == 2]
    if len(weights) != 1:
        raise ClassifierError(f"{path}: expected exactly one 2-D '*weight' tensor (a linear head), found "
                              f"{weights or 'none'} among keys {sorted(tensors)[:10]}")
    w_key = weights[0]
    b_key = w_key[: -len("weight")] + "bias"
    w = tensors[w_key]
    b = tensors.get(b_key, torch.zeros(w.shape[0]))
    if tuple(w.shape) != (num_classes, in_features) or tuple(b.shape) != (num_classes,):
        raise ClassifierError(f"{path}: head '{w_key}' has shape {tuple(w.shape)} (bias {tuple(b.shape)}); the "
                              f"backbone gives {in_features} features and the data has {num_classes} classes, so "
                              f"expected ({num_classes}, {in_features})")
    head = nn.Linear(in_features, num_classes)
    with torch.no_grad():
        head.weight.copy_(w.float())
        head.bias.copy_(b.float())
    return head


def fit_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int,
              weight_decay: float = 1e-3) -> tuple[nn.Linear, float]:
    """Logistic-regression probe on features (N, D), labels (N,) -> (nn.Linear on raw features, train top-1 %)."""
    if steps < 1:
        raise ValueError(f"probe steps must be >= 1, got {steps}")
    x = feats.double()
    y = labels.long()
    mu, sd = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mu) / sd                                                   # (N, D) standardised
    W = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ W.T + b, y) + 0.5 * weight_decay * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        Wf = W / sd                                                     # logits = x Wf^T + bf  on raw features
        bf = b - Wf @ mu
        acc = float(((x @ Wf.T + bf).argmax(1) == y).double().mean() * 100)
        head = nn.Linear(x.shape[1], num_classes)
        head.weight.copy_(Wf.float())
        head.bias.copy_(bf.float())
    return head, acc


def log_odds(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, K) logits, (B,) labels -> (B,) log p_y/(1 - p_y) = logit_y - logsumexp_{k != y} logit_k."""
    if logits.shape[1] < 2:
        raise ValueError(f"log-odds need at least 2 classes, got logits of shape {tuple(logits.shape)}")
    own = logits.gather(1, labels[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return own - torch.logsumexp(others, dim=1)


def score_fn(backbone: nn.Module, head: nn.Module, device: torch.device,
             amp: bool = False) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """f(x (b,3,H,W), y (b,)) -> (b,) float32 log-odds of the true class (eval mode, no grad; bf16 autocast
    on CUDA if amp)."""
    model = nn.Sequential(backbone, head).eval().to(device)

    @torch.no_grad()
    def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.to(device, non_blocking=True), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = model(x)
        return log_odds(logits.float(), y).cpu()

    return f
