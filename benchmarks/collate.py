"""The leaderboard: every run's result.json (schema: transfer/results.py) -> Markdown, CSV, HTML and PNG plots.

    python -m benchmarks.collate RUNS_ROOT [--out DIR] [--reference benchmarks/reference.yaml | --no-reference]

Tables: one per protocol = (task, dataset, framework, recipe + override markers) of the run identity
(transfer.results.identity); runs of different frameworks or recipes never share a table. Rows: (backbone,
method, pre-training label). A cell is the mean ± sample std (ddof = 1) over the row's runs (seeds); two runs of
the same seeds count once (the newest is kept, the other named). In a table with random-init rows, every other
row of that backbone gets "Δ vs random" on the table's headline metric with Welch's 95 % interval (benchmarks/stats.py),
marked ✓ when the interval excludes 0, and the opening "Verdicts" list states per table which methods beat random
init and by how much; where a supervised row does not beat random init, the task is reported as not learnt at this
budget and no verdict is given for that backbone.
Published numbers (reference.yaml) are set beside a row, with (Δ x) = ours − published, only where its protocol key
and method equal the entry's; marked runs (tiny, overrides, ...) and toy datasets never match. Every number of
ours links to its run folder and config and names its git commit. Output order is deterministic.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import yaml

from benchmarks.leaderboard_render import write_csv, write_html, write_markdown, write_plots
from benchmarks.leaderboard_rows import Row, Table, build_tables
from pretrain.fileio import atomic_write, atomic_write_text
from transfer.results import read_result

log = logging.getLogger("benchmarks.collate")
DEFAULT_REFERENCE = Path(__file__).with_name("reference.yaml")
REFERENCE_FIELDS = ("id", "method", "backbone", "task", "dataset", "metric", "value", "protocol_key", "source")
NOT_TABLED = ("pretrain",)   # tasks whose result.json is counted but not tabled


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
    import os
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


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
    """Write leaderboard.{md,csv,html}, summary.txt (the verdict lines) and plots/<table>.png under out_dir
    (default RUNS_ROOT/leaderboard).
    Returns {"results": n tabled, "skipped": [(path, why)], "not_tabled": [pre-training result.json], "tables": n,
    "verdicts": [lines], "files": {name: path}}."""
    runs_root = Path(runs_root)
    if not runs_root.is_dir():
        raise ValueError(f"{runs_root}: not a folder of runs")
    out_dir = Path(out_dir) if out_dir is not None else runs_root / "leaderboard"
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = load_reference(reference)
    found, skipped, not_tabled = find_results(runs_root)
    tables = build_tables(found, ref, lambda p: _rel(p, out_dir))
    plots = write_plots(tables, out_dir / "plots")
    header = {"runs_root": _rel(runs_root, out_dir), "n_results": len(found), "n_not_tabled": len(not_tabled),
              "skipped": [(_rel(p, out_dir), why) for p, why in skipped],
              "analysis": copy_analysis(analysis, out_dir)}
    files = {"md": write_markdown(out_dir / "leaderboard.md", tables, ref, header, plots),
             "csv": write_csv(out_dir / "leaderboard.csv", tables),
             "html": write_html(out_dir / "leaderboard.html", tables, ref, header, plots)}
    files.update({f"plot:{t.slug}": p for t, p in plots.items()})
    verdicts = [line for t in tables for line in t.verdict_lines()]
    files["summary"] = atomic_write_text(out_dir / "summary.txt", "".join(f"{v}\n" for v in verdicts) or
                                         "no table with a random-init baseline: no verdicts\n")
    return {"results": len(found), "skipped": skipped, "not_tabled": not_tabled, "tables": len(tables),
            "verdicts": verdicts, "files": files}


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
    print(f"{res['results']} results in {res['tables']} tables, {len(res['skipped'])} skipped -> {res['files']['md']}")
    for line in res["verdicts"]:
        print(f"  {line}")
    if res["skipped"]:
        print(f"warning: {len(res['skipped'])} result.json skipped (listed in the leaderboard)", file=sys.stderr)
    return 0 if res["results"] else 1


__all__ = ["Row", "Table", "collate", "find_results", "load_reference", "main"]

if __name__ == "__main__":
    sys.exit(main())
