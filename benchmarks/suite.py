"""A benchmark suite = pre-training variants x transfer tasks x seeds, expanded into a plan of steps.

Suite YAML (see benchmarks/suites/toy.yaml):
  name: toy
  out: runs/toy                      # everything of the suite lives here (relative to the cwd)
  data: {generate: toy, size: 64}    # or {root: /datasets} with imagenet/, coco/, ade/ underneath (or per-task roots)
  seeds: [0]
  pretrain:                          # one run folder + one exported backbone per entry
    <name>: {config: pretrain/configs/x.yaml, overrides: [k=v, ...], kind: cnn|vit}
    <name>: {random: <preset>, kind: cnn|vit, overrides: [...]}          # randomly initialised baseline
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


_TOP_KEYS = {"name", "out", "data", "seeds", "pretrain", "tasks", "description"}
_PT_KEYS = {"config", "overrides", "kind", "random", "export_overrides", "backbone", "method"}
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
    for key in ("name", "pretrain", "tasks"):
        if key not in suite:
            raise SuiteError(f"{path}: missing required key '{key}'")
    for name, pt in suite["pretrain"].items():
        _check_keys(f"{path}: pretrain.{name}", pt, _PT_KEYS)
        if ("config" in pt) == ("random" in pt):
            raise SuiteError(f"{path}: pretrain.{name} needs exactly one of 'config' or 'random'")
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


def plan(suite: dict, out: Path, data_root: Path | None = None) -> list[Step]:
    """Expand a suite into ordered steps (dependencies first)."""
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
    weights: dict[str, Path] = {}
    for name, pt in suite["pretrain"].items():
        wpath = out / "weights" / f"{name}.safetensors"
        weights[name] = wpath
        run = out / "pretrain" / name
        c = dict(ctx, run=run, name=name, seed=0, weights=wpath)
        if "random" in pt:
            argv = ["pretrain.export", "--random", pt["random"], "--method", "random", "--out", str(wpath),
                    *_fmt(pt.get("overrides", []), **c)]
            steps.append(Step(f"export/{name}", "export", argv, run, wpath.with_suffix(".json"), deps_data,
                              meta={"pretrain": name}))
            continue
        argv = ["pretrain.train", "--config", pt["config"], f"run.out_dir={run}", *_fmt(pt.get("overrides", []), **c)]
        steps.append(Step(f"pretrain/{name}", "pretrain", argv, run, run / "done", deps_data, meta={"pretrain": name}))
        argv = ["pretrain.export", str(run), "--out", str(wpath), *_fmt(pt.get("export_overrides", []), **c)]
        steps.append(Step(f"export/{name}", "export", argv, run, wpath.with_suffix(".json"), [f"pretrain/{name}"],
                          meta={"pretrain": name}))
    seeds = suite.get("seeds", [0]) or [0]
    for tname, t in suite["tasks"].items():
        for name, pt in suite["pretrain"].items():
            args = t["kinds"].get(pt["kind"])
            if args is None:
                continue                                   # task not defined for this backbone kind
            for seed in (seeds if t.get("seeds", True) else [seeds[0]]):
                run = out / "transfer" / tname / name / f"seed{seed}"
                c = dict(ctx, run=run, name=name, seed=seed, weights=weights[name], backbone=name)
                argv = [t["entry"], *_fmt(args, **c)]
                done = run / t.get("done", "result.json")
                steps.append(Step(f"{tname}/{name}/seed{seed}", "transfer", argv, run, done,
                                  [f"export/{name}"], meta={"task": tname, "pretrain": name, "seed": seed,
                                                            "timeout_s": t.get("timeout_s")}))
    return steps


def python_cmd(step: Step) -> list[str]:
    return [sys.executable, "-m", *step.argv]
