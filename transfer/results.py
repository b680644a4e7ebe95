"""The run identity of a transfer result (one function, every writer: identity()) and its parts: the dataset as the
data names itself, the pre-training as the weights' sidecar records it, the override markers. The result.json record
format itself is pretrain/results.py's (read_result / write_result, re-exported here).

protocol = <recipe>[@<pretrain>][+<marker>...]; protocol_key = <task>/<dataset>/<framework>/<backbone>/<protocol>;
the collator (benchmarks/leaderboard_rows.py) makes one table per (task, dataset, framework, recipe + markers) and
sets a published number beside a row only where protocol_key and method equal the entry's.
Task names are benchmarks/reference.yaml's (coco_det, ade20k_seg, in1k_finetune, in1k_linear, in1k_knn); metric
values are floats in percent (0-100), as papers report them.
"""
from __future__ import annotations

import json
from pathlib import Path

from pretrain.results import REQUIRED, SCHEMA, git_commit, read_result, write_result  # noqa: F401  (the record format)

DATASET_CARD = "dataset.json"     # optional identity file of a dataset root: {"name": ..., "toy": bool}


def result_dataset(root: str | Path | None, default: str) -> str:
    """The dataset a run really read: the `name` of <root>/dataset.json where the dataset says what it is (the toy
    world writes one into each of its roots), else `default` (the framework's real dataset, e.g. coco2017)."""
    if root is None:
        return default
    card = Path(root) / DATASET_CARD
    if not card.is_file():
        return default
    try:
        name = json.loads(card.read_text())["name"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{card}: expected a JSON object with a 'name' ({type(e).__name__}: {e})") from None
    if not isinstance(name, str) or not name:
        raise ValueError(f"{card}: 'name' must be a non-empty string, got {name!r}")
    return name


def pretrain_label(meta: dict) -> str:
    """What the weights went through, from their sidecar: 'scratch' (random init); 'pt<B>s' for a run trained for a
    CPU-seconds budget (schedule.budget_s: its step count is the machine's); else 'pt<epochs trained>' (the sidecar's
    own epoch count, not the configured one); 'pt?' when the sidecar does not say."""
    if meta.get("method") == "random":
        return "scratch"
    budget = ((meta.get("pretrain_config") or {}).get("schedule") or {}).get("budget_s")
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        return f"pt{budget:g}s"
    epoch = meta.get("epoch")
    if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
        return f"pt{int(epoch)}" if float(epoch).is_integer() else f"pt{epoch:g}"
    return "pt?"


def pretrain_seed(meta: dict) -> int | None:
    """The seed of the weights' own run (pre-training / supervised: run.seed; random init: the init seed)."""
    cfg = meta.get("pretrain_config") or {}
    seed = (cfg.get("run") or {}).get("seed", cfg.get("seed"))
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


# config keys that say where or how a run runs, not what it measures: overriding them marks nothing. Any other
# key (steps, batch, image size, schedule, data, recipe) marks the run '+overrides' (issue: a 2-step smoke run must
# never pass for the recipe).
UNMARKED_KEYS = ("run.out_dir", "run.seed", "run.device", "run.log_interval", "run.ckpt_interval", "run.keep_last",
                 "run.tensorboard", "run.image_interval", "run.num_vis", "run.cache_dir", "run.recipe",
                 "run.eval_batch_per_gpu", "run.channels_last", "run.compile", "data.root", "data.num_workers",
                 "data.batch", "data.skip_budget", "data.max_image_pixels", "model.weights")


def override_markers(overrides) -> list[str]:
    """['overrides'] when a key=value override changes what the run measures (not in UNMARKED_KEYS), else []."""
    keys = [o.split("=", 1)[0].strip() for o in overrides]
    return ["overrides"] if any(k not in UNMARKED_KEYS for k in keys) else []


def identity(task: str, dataset: str, framework: str, recipe: str, backbone: str, method: str,
             pretrain: str | None, markers=()) -> dict:
    """The run identity every writer records and the collator groups on (one function, every writer).

    protocol = <recipe>[@<pretrain>][+<marker>...]: markers name whatever changed what the run measures (tiny,
    overrides, cfg-options, ...), so a marked run is never set beside a published number of the unmarked recipe.
    protocol_key = <task>/<dataset>/<framework>/<backbone>/<protocol> (benchmarks/reference.yaml uses the same)."""
    markers = sorted({str(m) for m in markers if m})
    protocol = recipe + (f"@{pretrain}" if pretrain else "") + "".join(f"+{m}" for m in markers)
    return {"task": task, "dataset": dataset, "framework": framework, "recipe": recipe, "pretrain": pretrain,
            "markers": markers, "backbone": backbone, "method": method, "protocol": protocol,
            "protocol_key": f"{task}/{dataset}/{framework}/{backbone}/{protocol}"}
