"""The run folder as stock mmdet / mmseg can replay it: the dumped config references the weights the gate loaded.

mmengine dumps the resolved config into the work dir when the Runner is built (<work>/<config name>), with
load_from=None: the suite loads the backbone through its gate instead. After the gate has loaded it, rank 0 writes
  <work>/pretrained_init.pth   {"state_dict": {model key: tensor}}: exactly the tensors the gate set (plain tensors,
                               load with weights_only=True, the default of mmengine's loader)
and rewrites the dumped config with load_from=<that file>, so stock `tools/train.py <work>/<config name>` (or
`Runner.from_cfg(Config.fromfile(...)).train()`) starts from the same backbone weights (mmengine loads load_from
non-strictly: the heads stay at their random init, as in the suite's own run). The config's custom_imports register
the suite's modules (the exported-backbone contract), so the suite must be importable there.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

STOCK_WEIGHTS = "pretrained_init.pth"


def loaded_state(model: torch.nn.Module, matched: list[str], prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's tensors the gate set: report.matched names target keys (with or without `prefix`)."""
    sd = model.state_dict()
    out = {}
    for k in matched:
        key = k if k in sd else prefix + k
        if key not in sd:
            raise KeyError(f"load report names {k!r}, which the model does not have (nor {prefix + k!r})")
        out[key] = sd[key].detach().cpu().clone()
    return out


def write_stock_config(runner, model: torch.nn.Module, matched: list[str], work: str | os.PathLike,
                       prefix: str = "") -> Path:
    """Write <work>/pretrained_init.pth and point the dumped config's load_from at it; returns the config path."""
    work = Path(work)
    weights = work / STOCK_WEIGHTS
    tmp = weights.with_name(f".{weights.name}.{os.getpid()}.tmp")
    torch.save({"state_dict": loaded_state(model, matched, prefix)}, tmp)
    os.replace(tmp, weights)
    runner.cfg.load_from = str(weights.resolve())
    runner.dump_config()                      # overwrites mmengine's own dump (<work>/<config name>)
    return work / Path(runner.cfg.filename).name
