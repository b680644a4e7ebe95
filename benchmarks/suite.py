"""A benchmark suite = pre-training variants x transfer tasks x seeds, expanded into a plan of steps.

Suite YAML (see benchmarks/suites/toy.yaml):
  name: toy
  out: runs/toy                      # everything of the suite lives here (relative to the cwd)
  data: {generate: toy, size: 64}    # or {root: /datasets} with imagenet/, coco/, ade/ underneath (or per-task roots)
  seeds: [0, 1, 2]
  extends: toy                       # optional: that suite's data, seeds, pre-training (and out: its weights are
                                     # reused), with this suite's tasks
  seed_mode: paired                  # paired: every pre-training entry runs once per seed s and its transfer runs
                                     # use seed s too (both vary); transfer: one pre-training (seed 0), transfer
                                     # seeds vary
  pretrain:                          # one set of weights per entry (and seed)
    <name>: {config: pretrain/configs/x.yaml, overrides: [k=v, ...], kind: cnn|vit}     # pretrain.train
    <name>: {random: <preset>, kind: cnn|vit, overrides: [...]}                       # random-init baseline
    <name>: {supervised: transfer/classification/configs/x.yaml, init: <preset>, kind: cnn|vit,
             init_overrides: [...], overrides: [...]}   # trained on the labels from a random init, then exported
  tasks:
    <name>: {entry: transfer.mmdet.train, kinds: {cnn: [args...], vit: [args...]}, seeds: true|false}
Strings may use {out}, {data}, {weights}, {run}, {seed}, {name}, {backbone}.
A step is done when its `done` file exists; a partial step re-runs and resumes from its own folder.
"""
from __future__ import annotations

import dataclasses
import difflib
import sys
from pathlib import Path

import yaml

SUITES_DIR = Path(__file__).parent / "suites"


@dataclasses.dataclass
class Step:
    id: str                      # unique, e.g. "pretrain/a2mim_r18", "coco_det/a2mim_r18/seed0"
    kind: str                    # data | pretrain | export | transfer | collate
    argv: list[str]              # python -m ... (without the interpreter)
    run_dir: Path                # logs go to run_dir/step.log
    done: Path                   # exists => complete, skipped
    deps: list[str] = dataclasses.field(default_factory=list)
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def is_done(self) -> bool:
        return self.done.exists()


class SuiteError(ValueError):
    pass


_TOP_KEYS = {"name", "out", "data", "seeds", "seed_mode", "pretrain", "tasks", "description", "see_also", "extends"}
_PT_KEYS = {"config", "overrides", "kind", "random", "supervised", "init", "init_overrides", "backbone", "method"}
_SOURCES = ("config", "random", "supervised")
SEED_MODES = ("paired", "transfer")
_TASK_KEYS = {"entry", "kinds", "seeds", "done", "timeout_s"}


def _check_keys(where: str, got: dict, allowed: set[str]) -> None:
    for k in got:
        if k not in allowed:
            near = difflib.get_close_matches(k, allowed, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise SuiteError(f"{where}: unknown key '{k}'{hint}; allowed: {sorted(allowed)}")


def resolve_suite_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    cand = SUITES_DIR / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    known = sorted(x.stem for x in SUITES_DIR.glob("*.yaml"))
    raise SuiteError(f"suite '{name_or_path}' not found (a .yaml path or one of {known})")


def load_suite(path: Path) -> dict:
    try:
        suite = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(suite, dict):
        raise SuiteError(f"{path}: expected a mapping at top level")
    _check_keys(str(path), suite, _TOP_KEYS)
    if "extends" in suite:    # another suite's data, seeds, pre-training and out folder; this one's tasks
        base = load_suite(resolve_suite_path(str(suite["extends"])))
        suite = {**{k: v for k, v in base.items() if k not in ("see_also", "description")},
                 **{k: v for k, v in suite.items() if k != "extends"}}
    for key in ("name", "pretrain", "tasks"):
        if key not in suite:
            raise SuiteError(f"{path}: missing required key '{key}'")
    if suite.get("seed_mode", "transfer") not in SEED_MODES:
        raise SuiteError(f"{path}: seed_mode must be one of {list(SEED_MODES)}, got {suite['seed_mode']!r}")
    for name, pt in suite["pretrain"].items():
        _check_keys(f"{path}: pretrain.{name}", pt, _PT_KEYS)
        if sum(k in pt for k in _SOURCES) != 1:
            raise SuiteError(f"{path}: pretrain.{name} needs exactly one of {list(_SOURCES)}")
        if "supervised" in pt and "init" not in pt:
            raise SuiteError(f"{path}: pretrain.{name}: a supervised entry needs 'init: <preset>' (its random init)")
        if pt.get("kind") not in ("cnn", "vit"):
            raise SuiteError(f"{path}: pretrain.{name}.kind must be 'cnn' or 'vit', got {pt.get('kind')!r}")
    for name, t in suite["tasks"].items():
        _check_keys(f"{path}: tasks.{name}", t, _TASK_KEYS)
        if "entry" not in t or "kinds" not in t:
            raise SuiteError(f"{path}: tasks.{name} needs 'entry' and 'kinds'")
    return suite


def _fmt(items, **ctx) -> list[str]:
    try:
        return [str(x).format(**ctx) for x in items]
    except KeyError as e:
        raise SuiteError(f"unknown placeholder {e} in {items}") from e


def _pretrain_steps(name: str, pt: dict, out: Path, seed: int, tag: str, deps: list[str], ctx: dict
                    ) -> tuple[list[Step], Path, str]:
    """Steps that produce the weights of one pre-training entry at one seed -> (steps, weights path, last step id).
    tag: '' (one pre-training) or '/seed<s>' (paired seeds)."""
    run = out / "pretrain" / name / tag.lstrip("/")          # Path / '' is the path itself
    c = dict(ctx, run=run, name=name, seed=seed)
    meta = {"pretrain": name, "pretrain_seed": seed}
    if "random" in pt:
        weights = out / "weights" / f"{name}{tag.replace('/', '_')}.safetensors"
        argv = ["pretrain.export", "--random", pt["random"], "--method", "random", "--seed", str(seed),
                "--out", str(weights), *_fmt(pt.get("overrides", []), **c, weights=weights)]
        sid = f"export/{name}{tag}"
        return [Step(sid, "export", argv, run, weights.with_suffix(".json"), deps, meta=meta)], weights, sid
    if "config" in pt:                     # pretrain.train exports its backbone at the end (run.export_at_end)
        weights = run / "backbone.safetensors"
        argv = ["pretrain.train", "--config", pt["config"], f"run.out_dir={run}",
                *_fmt(pt.get("overrides", []), **c, weights=weights)]
        sid = f"pretrain/{name}{tag}"
        return [Step(sid, "pretrain", argv, run, run / "done", deps, meta=meta)], weights, sid
    # supervised: random init (seeded) -> classification fine-tune on the labels -> export of its backbone
    init = out / "weights" / f"{name}_init{tag.replace('/', '_')}.safetensors"
    weights = out / "weights" / f"{name}{tag.replace('/', '_')}.safetensors"
    steps = [Step(f"export/{name}_init{tag}", "export",
                  ["pretrain.export", "--random", pt["init"], "--method", "random", "--seed", str(seed), "--out",
                   str(init), *_fmt(pt.get("init_overrides", []), **c, weights=init)], run, init.with_suffix(".json"),
                  deps, meta=meta)]
    steps.append(Step(f"pretrain/{name}{tag}", "pretrain",
                      ["transfer.classification.train", pt["supervised"], "--weights", str(init), "--work-dir", str(run),
                       f"run.seed={seed}", *_fmt(pt.get("overrides", []), **c, weights=init)], run, run / "done",
                      [steps[0].id], meta=meta))
    steps.append(Step(f"export/{name}{tag}", "export",
                      ["transfer.classification.export", str(run), "--out", str(weights), "--method", "supervised"],
                      run, weights.with_suffix(".json"), [steps[1].id], meta=meta))
    return steps, weights, steps[-1].id


def plan(suite: dict, out: Path, data_root: Path | None = None) -> list[Step]:
    """Expand a suite into ordered steps (dependencies first; every pre-training before the transfers, so that with
    a few jobs at a time the long steps start first)."""
    steps: list[Step] = []
    data_cfg = suite.get("data", {}) or {}
    if data_root is None:
        data_root = Path(data_cfg["root"]) if "root" in data_cfg else out / "data"
    deps_data: list[str] = []
    if data_cfg.get("generate") == "toy":
        argv = ["benchmarks.toydata", str(data_root), "--size", str(data_cfg.get("size", 64)),
                "--seed", str(data_cfg.get("seed", 0))]
        steps.append(Step("data/toy", "data", argv, out / "logs", data_root / "toyworld.json"))
        deps_data = ["data/toy"]
    ctx = dict(out=out, data=data_root)
    seeds = suite.get("seeds", [0]) or [0]
    paired = suite.get("seed_mode", "transfer") == "paired"
    weights: dict[tuple[str, int], tuple[Path, str]] = {}      # (entry, transfer seed) -> (weights, producing step)
    for name, pt in suite["pretrain"].items():
        for seed in (seeds if paired else [0]):
            made, w, last = _pretrain_steps(name, pt, out, seed, f"/seed{seed}" if paired else "", deps_data, ctx)
            steps += made
            for s in (seeds if not paired else [seed]):
                weights[(name, s)] = (w, last)
    for tname, t in suite["tasks"].items():
        for name, pt in suite["pretrain"].items():
            args = t["kinds"].get(pt["kind"])
            if args is None:
                continue                                   # task not defined for this backbone kind
            for seed in (seeds if t.get("seeds", True) else [seeds[0]]):
                run = out / "transfer" / tname / name / f"seed{seed}"
                w, dep = weights[(name, seed)]
                c = dict(ctx, run=run, name=name, seed=seed, weights=w, backbone=name)
                argv = [t["entry"], *_fmt(args, **c)]
                done = run / t.get("done", "result.json")
                steps.append(Step(f"{tname}/{name}/seed{seed}", "transfer", argv, run, done, [dep],
                                  meta={"task": tname, "pretrain": name, "seed": seed,
                                        "pretrain_seed": seed if paired else 0, "timeout_s": t.get("timeout_s")}))
    return steps


def python_cmd(step: Step) -> list[str]:
    return [sys.executable, "-m", *step.argv]
