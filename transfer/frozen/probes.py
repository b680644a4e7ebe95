"""The two frozen-feature classification protocols, on cached features (transfer/frozen/features.py).

linear_probe: MAE's linear probe (MoCo's with optimizer 'sgd'): BatchNorm1d(affine=False, eps=1e-6) + Linear,
  head init trunc_normal(0.01), no weight decay by default, `epochs` over the training features in seeded random
  order, LARS (trust ratio on the weight matrix only, timm's) or SGD momentum 0.9, linear warm-up + cosine to 0
  per step; top-1 / top-5 on the val features. No augmentation: one forward pass of the backbone per image.
knn: DINO's weighted k-NN: L2-normalised features, cosine similarity to every training feature, the k nearest
  vote with weight exp(sim / T) per class; top-1 / top-5. Deterministic (ties broken by torch.topk).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def linear_head(dim: int, num_classes: int, bn: bool = True, init_std: float = 0.01) -> nn.Sequential:
    """[BatchNorm1d(dim, affine=False, eps=1e-6)] + Linear(dim, K), weight ~ trunc_normal(init_std), bias 0
    (MAE / MoCo); shared with the classification linear probe (transfer/classification/model.py)."""
    linear = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(linear.weight, std=init_std)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6) if bn else nn.Identity(), linear)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """scores (N, K), labels (N,) -> {'top1', 'top5'} in percent (top-5 = top-K when K < 5)."""
    k = min(5, scores.shape[1])
    hit = scores.topk(k, dim=1).indices == labels[:, None]
    return {"top1": 100.0 * hit[:, 0].float().mean().item(), "top5": 100.0 * hit.any(dim=1).float().mean().item()}


def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                 num_classes: int, p, seed: int) -> dict[str, float]:
    """Train the head of `p` (transfer.frozen.config.ProbeConfig) on (N, D) features; evaluate on the val ones."""
    from timm.optim import Lars

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)                                   # the head's init
    head = linear_head(x_train.shape[1], num_classes, p.head_bn, p.head_init_std)
    lr = p.lr if p.lr is not None else p.base_lr * p.batch / 256
    weight, bias = head[1].weight, head[1].bias
    if p.optimizer == "lars":                                 # trust ratio on the weight matrix only (MAE)
        opt = Lars([{"params": [weight], "always_adapt": True}, {"params": [bias], "always_adapt": False}],
                   lr=lr, momentum=0.9, weight_decay=p.weight_decay)
    else:
        opt = torch.optim.SGD([weight, bias], lr=lr, momentum=0.9, weight_decay=p.weight_decay)
    n = len(x_train)
    per_epoch = math.ceil(n / p.batch)
    total, warm = p.epochs * per_epoch, round(p.warmup_epochs * per_epoch)
    step, losses = 0, []
    head.train()
    for _ in range(p.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, p.batch):
            factor = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
            for g in opt.param_groups:
                g["lr"] = lr * factor
            b = perm[i:i + p.batch]
            loss = F.cross_entropy(head(x_train[b]), y_train[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
    head.eval()
    with torch.no_grad():
        train_acc = topk_accuracy(head(x_train), y_train)["top1"]
        res = topk_accuracy(head(x_val), y_val)
    last = losses[-per_epoch:]
    return {**res, "train_top1": train_acc, "train_loss": sum(last) / len(last), "steps": float(step), "lr": lr}


def knn(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, num_classes: int,
        k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> dict[str, float]:
    """DINO's weighted k-NN classifier (eval_knn.py): cosine top-k, weights exp(sim / T) summed per class."""
    if k > len(x_train):
        raise ValueError(f"knn.k = {k} is larger than the {len(x_train)} training images")
    train = F.normalize(x_train.float(), dim=1)
    scores = []
    for i in range(0, len(x_val), chunk):
        sim = F.normalize(x_val[i:i + chunk].float(), dim=1) @ train.T             # (b, N_train)
        s, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(s), num_classes).scatter_add_(1, y_train[idx], (s / temperature).exp())
        scores.append(votes)
    return topk_accuracy(torch.cat(scores), y_val)
