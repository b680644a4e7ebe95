"""The leaderboard: every run's result.json (schema: transfer/results.py) -> Markdown, CSV, HTML and PNG plots.

    python -m benchmarks.collate RUNS_ROOT [--out DIR] [--reference benchmarks/reference.yaml | --no-reference]

Transfer runs are grouped by (task, dataset, backbone, method, protocol key); each metric is the mean ± sample std (ddof=1)
over the group's runs (seeds). A result.json that cannot be read or fails the schema is skipped, counted and named; pre-training runs
(task 'pretrain': their metrics are losses) are not tabled, only counted.
Published numbers (reference.yaml) of the same task stand beside ours; a delta (ours - published) is shown only where
the protocol key and the method match. A run's protocol key is its `protocol_key` field, else
"<task>/<dataset>/<backbone>/<protocol>" when it has a `protocol` field, else none (toy runs).
Every number of ours links to its run folder, its config and names its git commit. Output order is deterministic.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmarks.leaderboard_render import write_csv, write_html, write_markdown, write_plots
from pretrain.fileio import atomic_write
from transfer.results import read_result

log = logging.getLogger("benchmarks.collate")
DEFAULT_REFERENCE = Path(__file__).with_name("reference.yaml")
METRIC_ORDER = ("bbox_mAP", "segm_mAP", "mIoU", "top1", "aAcc", "mAcc", "top5")  # then the rest, alphabetically
TASK_ORDER = ("coco_det", "ade20k_seg", "in1k_finetune", "in1k_linear")          # then the rest, alphabetically
METHOD_ORDER = ("a2mim", "simmim", "random")                                     # then the rest, alphabetically
REFERENCE_FIELDS = ("id", "method", "backbone", "task", "dataset", "metric", "value", "protocol_key", "source")


@dataclass
class Row:
    kind: str                              # "ours" | "published"
    dataset: str
    backbone: str
    method: str
    protocol_key: str | None
    stats: dict[str, tuple[int, float, float | None, float | None]] = field(default_factory=dict)
    # metric -> (n, mean, std or None, delta vs published or None); published rows: (0, value, None, None)
    published: dict[str, float] = field(default_factory=dict)  # metric -> matched published value (ours only)
    runs: list[tuple[str, str | None, str]] = field(default_factory=list)  # (label, run dir rel, config rel | None)
    commits: list[str] = field(default_factory=list)
    source: str = ""                        # published rows: where the number was read (+ note)

    @property
    def n(self) -> int:
        return max((s[0] for s in self.stats.values()), default=0)


@dataclass
class TaskTable:
    task: str
    metrics: list[str]
    rows: list[Row]


def _rank(order: tuple[str, ...], name: str) -> tuple[int, str]:
    return (order.index(name) if name in order else len(order), name)


def load_reference(path: str | Path | None) -> list[dict]:
    """reference.yaml -> its entries, each checked for REFERENCE_FIELDS and a numeric value."""
    if path is None:
        return []
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the reference numbers ({e})") from e
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a mapping with an 'entries' list")
    for i, e in enumerate(entries):
        missing = [k for k in REFERENCE_FIELDS if not isinstance(e, dict) or k not in e]
        if missing:
            name = e.get("id") if isinstance(e, dict) else repr(e)
            raise ValueError(f"{path}: entry {i} ({name}) lacks {missing}")
        if isinstance(e["value"], bool) or not isinstance(e["value"], (int, float)):
            raise ValueError(f"{path}: entry {e['id']}: value must be a number, got {e['value']!r}")
    return entries


def record_protocol_key(rec: dict) -> str | None:
    if rec.get("protocol_key"):
        return str(rec["protocol_key"])
    if rec.get("protocol"):
        return f"{rec['task']}/{rec['dataset']}/{rec['backbone']}/{rec['protocol']}"
    return None


def _check_record(rec: dict) -> None:
    for k in ("task", "dataset", "backbone", "method"):
        if not isinstance(rec[k], str) or not rec[k]:
            raise ValueError(f"field {k!r} must be a non-empty string, got {rec[k]!r}")
    m = rec["metrics"]
    if not isinstance(m, dict) or not m:
        raise ValueError(f"'metrics' must be a non-empty mapping, got {m!r}")
    bad = {k: v for k, v in m.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)}
    if bad:
        raise ValueError(f"metrics must be finite numbers, got {bad}")


NOT_TABLED = ("pretrain",)   # tasks whose result.json is counted but not tabled


def find_results(runs_root: str | Path) -> tuple[list[tuple[Path, dict]], list[tuple[Path, str]], list[Path]]:
    """All result.json under runs_root (sorted): ([(path, record)], [(path, why skipped)], [pre-training runs])."""
    found, skipped, not_tabled = [], [], []
    for p in sorted(Path(runs_root).rglob("result.json")):
        try:
            rec = read_result(p)
            _check_record(rec)
        except (ValueError, OSError, AttributeError, TypeError, UnicodeDecodeError) as e:
            why = str(e).removeprefix(f"{p}: ") if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            if isinstance(e, (AttributeError, TypeError)):
                why = "not a result.json object"
            log.warning("skipping %s: %s", p, why)
            skipped.append((p, why))
            continue
        if rec["task"] in NOT_TABLED:
            not_tabled.append(p)
            continue
        found.append((p, rec))
    return found, skipped, not_tabled


def _rel(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def _run_links(path: Path, rec: dict, out_dir: Path) -> tuple[str, str, str | None]:
    run_dir = path.parent  # where the run lives now (the recorded run_dir may predate a move)
    cfg = rec.get("config")
    if cfg:
        cfg = Path(cfg)
        if not cfg.is_absolute():
            cfg = run_dir / cfg if (run_dir / cfg).exists() or not cfg.exists() else cfg
    label = f"seed {rec['seed']}" if rec.get("seed") is not None else run_dir.name
    return label, _rel(run_dir, out_dir), _rel(cfg, out_dir) if cfg else None


def _ours(found: list[tuple[Path, dict]], out_dir: Path) -> dict[tuple, Row]:
    groups: dict[tuple, list[tuple[Path, dict]]] = {}
    for p, rec in found:
        key = (rec["task"], rec["dataset"], rec["backbone"], rec["method"], record_protocol_key(rec))
        groups.setdefault(key, []).append((p, rec))
    rows = {}
    for (task, dataset, backbone, method, pkey), runs in groups.items():
        def by_seed(pr):
            s = pr[1].get("seed")
            return (s is None, s if isinstance(s, (int, float)) else 0, str(s), str(pr[0]))
        runs.sort(key=by_seed)
        row = Row("ours", dataset, backbone, method, pkey)
        for metric in sorted({m for _, r in runs for m in r["metrics"]}):
            vals = [r["metrics"][metric] for _, r in runs if metric in r["metrics"]]
            std = statistics.stdev(vals) if len(vals) > 1 else None
            row.stats[metric] = (len(vals), statistics.fmean(vals), std, None)
        row.runs = [_run_links(p, r, out_dir) for p, r in runs]
        row.commits = [(r.get("git_commit") or "no commit")[:7] for _, r in runs]
        rows[(task, dataset, backbone, method, pkey)] = row
    return rows


def _published(reference: list[dict]) -> dict[tuple, Row]:
    rows: dict[tuple, Row] = {}
    for e in reference:
        key = (e["task"], e["dataset"], e["backbone"], e["method"], e["protocol_key"])
        row = rows.setdefault(key, Row("published", e["dataset"], e["backbone"], e["method"], e["protocol_key"]))
        row.stats[e["metric"]] = (0, float(e["value"]), None, None)
        src = f"{e['source']} ({e['note']})" if e.get("note") else str(e["source"])
        row.source = src if not row.source or row.source == src else f"{row.source}; {src}"
    return rows


def build_tables(found: list[tuple[Path, dict]], reference: list[dict], out_dir: Path) -> list[TaskTable]:
    """One table per task that has results of ours: our rows, then the published rows of that task; deltas where
    (protocol key, method) match."""
    ours, published = _ours(found, out_dir), _published(reference)
    for (task, _d, _b, method, pkey), row in ours.items():
        for (ptask, _pd, _pb, pmethod, ppkey), prow in published.items():
            if pkey is None or (ptask, pmethod, ppkey) != (task, method, pkey):
                continue
            for metric, (n, mean, std, _) in list(row.stats.items()):
                if metric in prow.stats:
                    row.published[metric] = prow.stats[metric][1]
                    row.stats[metric] = (n, mean, std, mean - prow.stats[metric][1])
    tables = []
    for task in sorted({k[0] for k in ours}, key=lambda t: _rank(TASK_ORDER, t)):
        def order(item):
            (_t, dataset, backbone, method, pkey), _row = item
            return (dataset, backbone, _rank(METHOD_ORDER, method), pkey or "")
        rows = [r for _, r in sorted(((k, r) for k, r in ours.items() if k[0] == task), key=order)]
        rows += [r for _, r in sorted(((k, r) for k, r in published.items() if k[0] == task), key=order)]
        metrics = sorted({m for r in rows if r.kind == "ours" for m in r.stats}, key=lambda m: _rank(METRIC_ORDER, m))
        tables.append(TaskTable(task, metrics, rows))
    return tables


def copy_analysis(dirs, out_dir: Path) -> list[tuple[str, Path]]:
    """Each analysis folder's interactions.png (benchmarks.analysis.interactions) -> plots/analysis_<name>.png."""
    out = []
    for i, d in enumerate(Path(x) for x in dirs):
        png = d / "interactions.png"
        if not png.is_file():
            raise ValueError(f"--analysis {d}: no interactions.png (expected the --out folder of "
                             f"python -m benchmarks.analysis.interactions)")
        dst = out_dir / "plots" / f"analysis_{i}_{d.name}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        out.append((d.name, atomic_write(dst, lambda f, b=png.read_bytes(): f.write(b))))
    return out


def collate(runs_root: str | Path, out_dir: str | Path | None = None,
            reference: str | Path | None = DEFAULT_REFERENCE, analysis=()) -> dict:
    """Write leaderboard.{md,csv,html} and plots/<task>.png under out_dir (default RUNS_ROOT/leaderboard).
    Returns {"results": n tabled, "skipped": [(path, why)], "not_tabled": [pre-training result.json], "tables": n,
    "files": {name: path}}."""
    runs_root = Path(runs_root)
    if not runs_root.is_dir():
        raise ValueError(f"{runs_root}: not a folder of runs")
    out_dir = Path(out_dir) if out_dir is not None else runs_root / "leaderboard"
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = load_reference(reference)
    found, skipped, not_tabled = find_results(runs_root)
    tables = build_tables(found, ref, out_dir)
    plots = write_plots(tables, out_dir / "plots")
    header = {"runs_root": _rel(runs_root, out_dir), "n_results": len(found), "n_not_tabled": len(not_tabled),
              "skipped": [(_rel(p, out_dir), why) for p, why in skipped],
              "analysis": copy_analysis(analysis, out_dir)}
    files = {"md": write_markdown(out_dir / "leaderboard.md", tables, ref, header, plots),
             "csv": write_csv(out_dir / "leaderboard.csv", tables),
             "html": write_html(out_dir / "leaderboard.html", tables, ref, header, plots)}
    files.update({f"plot:{t}": p for t, p in plots.items()})
    return {"results": len(found), "skipped": skipped, "not_tabled": not_tabled, "tables": len(tables),
            "files": files}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.collate", description=__doc__.split("\n\n")[0])
    p.add_argument("runs_root", type=Path)
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUNS_ROOT/leaderboard)")
    p.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="published numbers (yaml)")
    p.add_argument("--no-reference", action="store_true", help="show our numbers only")
    p.add_argument("--analysis", type=Path, action="append", default=[],
                   help="an interactions --out folder whose curves join the report (repeatable)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        res = collate(a.runs_root, a.out, None if a.no_reference else a.reference, a.analysis)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{res['results']} results, {len(res['skipped'])} skipped -> {res['files']['md']}")
    if res["skipped"]:
        print(f"warning: {len(res['skipped'])} result.json skipped (listed in the leaderboard)", file=sys.stderr)
    return 0 if res["results"] else 1


if __name__ == "__main__":
    sys.exit(main())
