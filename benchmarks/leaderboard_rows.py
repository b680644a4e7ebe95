"""The leaderboard's tables and rows, built from result.json records (benchmarks/collate.py reads them, and
benchmarks/leaderboard_render.py draws them).

Table = one protocol: (task, dataset, framework, recipe + markers). Row = (backbone, method, pre-training label) in
it, cells per metric (benchmarks.stats.Cell), Δ vs the same backbone's random-init row on the headline metric
(Welch 95 %), and published values where the protocol key and method match a reference entry.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks.stats import Cell, Diff, fmt_diff, welch

HEADLINE = ("bbox_mAP", "mIoU", "top1", "segm_mAP")          # a table's Δ / verdict metric: the first present
METRIC_ORDER = ("bbox_mAP", "segm_mAP", "mIoU", "top1", "aAcc", "mAcc", "top5")
TASK_ORDER = ("coco_det", "ade20k_seg", "in1k_finetune", "in1k_linear", "in1k_knn")
METHOD_ORDER = ("a2mim", "simmim", "supervised", "random")
BASELINE, CEILING = "random", "supervised"
_PROTOCOL = re.compile(r"^(?P<recipe>[^@+]*)(?:@(?P<pt>[^+]*))?(?P<markers>(?:\+[^+]+)*)$")


def _rank(order: tuple[str, ...], name: str) -> tuple[int, str]:
    return (order.index(name) if name in order else len(order), name)


def split_protocol(protocol: str | None) -> tuple[str, str | None, list[str]]:
    """'rsb-a2@pt300+overrides' -> ('rsb-a2', 'pt300', ['overrides']) (records written before the run identity)."""
    m = _PROTOCOL.match(protocol or "")
    if not m:
        return protocol or "", None, []
    return m["recipe"], m["pt"], [x for x in m["markers"].split("+") if x]


def _key_framework(key: str) -> str | None:
    """The framework part of a 5-part protocol key (task/dataset/framework/backbone/protocol); None for keys written
    before the framework was part of the identity."""
    parts = key.split("/")
    return parts[2] if len(parts) == 5 else None


def record_identity(rec: dict) -> tuple[tuple, tuple, str | None]:
    """-> (table key (task, dataset, framework, recipe, markers), row key (backbone, method, pretrain), protocol key)."""
    if "recipe" in rec:
        recipe, pt, markers = rec["recipe"], rec.get("pretrain"), list(rec.get("markers") or [])
    else:
        recipe, pt, markers = split_protocol(rec.get("protocol"))
    pkey = rec.get("protocol_key") or (f"{rec['task']}/{rec['dataset']}/{rec['backbone']}/{rec['protocol']}"
                                       if rec.get("protocol") else None)
    table = (rec["task"], rec["dataset"], rec.get("framework") or "?", recipe, tuple(sorted(markers)))
    return table, (rec["backbone"], rec["method"], pt), pkey


@dataclass
class Row:
    kind: str                              # "ours" | "published"
    backbone: str
    method: str
    pretrain: str | None
    protocol_key: str | None
    cells: dict[str, Cell] = field(default_factory=dict)
    published: dict[str, float] = field(default_factory=dict)   # metric -> matched published value (ours only)
    vs_random: Diff | None = None          # headline metric, ours only
    runs: list[tuple[str, str, str | None]] = field(default_factory=list)   # (label, run dir rel, config rel)
    commits: list[str] = field(default_factory=list)
    seeds: list[tuple] = field(default_factory=list)     # (transfer seed, pre-training seed) per run
    dropped: list[str] = field(default_factory=list)     # duplicate runs of the same seeds (older ones)
    source: str = ""                       # published rows: where the number was read (+ note)

    @property
    def n(self) -> int:
        return max((c.n for c in self.cells.values()), default=0)

    def delta(self, metric: str) -> float | None:
        v = self.published.get(metric)
        return None if v is None else self.cells[metric].mean - v


@dataclass(eq=False)
class Table:
    task: str
    dataset: str
    framework: str
    recipe: str
    markers: tuple[str, ...]
    metrics: list[str]
    rows: list[Row]
    chance: float | None = None            # top-1 of guessing (classification tasks with a known class count)

    @property
    def protocol(self) -> str:
        return self.recipe + "".join(f"+{m}" for m in self.markers)

    @property
    def title(self) -> str:
        return f"{self.task} · {self.dataset} · {self.framework} · {self.protocol or 'no recipe'}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.task}-{self.dataset}-{self.framework}-{self.protocol}")

    @property
    def headline(self) -> str | None:
        return next((m for m in HEADLINE if m in self.metrics), self.metrics[0] if self.metrics else None)

    def seeds_vary(self) -> str:
        ours = [r for r in self.rows if r.kind == "ours" and len(r.seeds) > 1]
        t = any(len({s[0] for s in r.seeds}) > 1 for r in ours)
        p = any(len({s[1] for s in r.seeds}) > 1 for r in ours)
        return {(True, True): "pre-training and transfer", (True, False): "transfer only",
                (False, True): "pre-training only"}.get((t, p), "none (one run per cell)")

    def verdict_lines(self) -> list[str]:
        """One line per backbone with a random-init row: which methods beat it on the headline metric."""
        m, out = self.headline, []
        ours = [r for r in self.rows if r.kind == "ours"]
        for bb in sorted({r.backbone for r in ours if r.method == BASELINE}):
            others = [r for r in ours if r.backbone == bb and r.method != BASELINE and r.vs_random is not None]
            ceiling = [r for r in others if r.method == CEILING]
            parts, learnt = [], not ceiling or all(r.vs_random.significant and r.vs_random.diff > 0 for r in ceiling)
            for r in sorted(others, key=lambda r: _rank(METHOD_ORDER, r.method)):
                d = r.vs_random
                word = ("beats random" if d.significant and d.diff > 0 else "below random" if d.significant
                        else "no difference from random" if d.low is not None else "too few runs to tell")
                parts.append(f"{r.method} {fmt_diff(d)} ({word})")
            head = f"{self.title} [{m}; seeds vary: {self.seeds_vary()}] {bb}: "
            if not learnt:
                out.append(head + "NOT LEARNT at this budget (the supervised init does not beat random init): "
                           "no verdict; " + "; ".join(parts))
            else:
                out.append(head + ("; ".join(parts) if parts else "random init only"))
        return out


def _dedupe(runs: list[tuple[Path, dict]]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """One run per (transfer seed, pre-training seed): the newest ('time') is kept, the older ones are named as
    dropped (two runs of the same seeds are one measurement, not n = 2). Runs without a seed are all kept."""
    by: dict[tuple, list[tuple[Path, dict]]] = {}
    for p, r in runs:
        key = (r.get("seed"), r.get("pretrain_seed")) if r.get("seed") is not None else ("unseeded", str(p))
        by.setdefault(key, []).append((p, r))
    keep, dropped = [], []
    for group in by.values():
        group.sort(key=lambda pr: (str(pr[1].get("time", "")), str(pr[0])))
        keep.append(group[-1])
        dropped += [str(p.parent) for p, _ in group[:-1]]
    return keep, dropped


def _ours(found: list[tuple[Path, dict]], rel: Callable[[Path], str]) -> dict[tuple, dict[tuple, Row]]:
    groups: dict[tuple, dict[tuple, list]] = {}
    pkeys: dict[tuple, str | None] = {}
    for p, rec in found:
        tkey, rkey, pkey = record_identity(rec)
        groups.setdefault(tkey, {}).setdefault(rkey, []).append((p, rec))
        pkeys[(tkey, rkey)] = pkey
    tables: dict[tuple, dict[tuple, Row]] = {}
    for tkey, rows in groups.items():
        for rkey, runs in rows.items():
            runs, dropped = _dedupe(runs)
            runs.sort(key=lambda pr: (pr[1].get("seed") is None, str(pr[1].get("seed")), str(pr[0])))
            row = Row("ours", *rkey, protocol_key=pkeys[(tkey, rkey)], dropped=sorted(dropped))
            for metric in sorted({m for _, r in runs for m in r["metrics"]}):
                row.cells[metric] = Cell.of([r["metrics"][metric] for _, r in runs if metric in r["metrics"]])
            for p, r in runs:
                cfg = r.get("config")
                cfg_path = None if not cfg else (Path(cfg) if Path(cfg).is_absolute() else p.parent / cfg)
                label = f"seed {r['seed']}" if r.get("seed") is not None else p.parent.name
                row.runs.append((label, rel(p.parent), rel(cfg_path) if cfg_path else None))
                row.commits.append((r.get("git_commit") or "no commit")[:7])
                row.seeds.append((r.get("seed"), r.get("pretrain_seed")))
            tables.setdefault(tkey, {})[rkey] = row
    return tables


def _published_rows(reference: list[dict]) -> list[tuple[dict, Row]]:
    rows: dict[tuple, Row] = {}
    firsts: dict[tuple, dict] = {}
    for e in reference:
        key = (e["task"], e["dataset"], e["backbone"], e["method"], e["protocol_key"])
        row = rows.setdefault(key, Row("published", e["backbone"], e["method"], None, e["protocol_key"]))
        firsts.setdefault(key, e)
        row.cells[e["metric"]] = Cell(0, float(e["value"]), None)
        src = f"{e['source']} ({e['note']})" if e.get("note") else str(e["source"])
        row.source = src if not row.source or row.source == src else f"{row.source}; {src}"
    return [(firsts[k], r) for k, r in rows.items()]


def build_tables(found: list[tuple[Path, dict]], reference: list[dict], rel: Callable[[Path], str]) -> list[Table]:
    ours = _ours(found, rel)
    published = _published_rows(reference)
    chance = {}
    for _, rec in found:
        k = record_identity(rec)[0]
        if isinstance(rec.get("num_classes"), int) and rec["num_classes"] > 0:
            chance.setdefault(k, set()).add(100.0 / rec["num_classes"])
    tables = []
    for tkey, rows in ours.items():
        task, dataset, framework, recipe, markers = tkey
        metrics = sorted({m for r in rows.values() for m in r.cells}, key=lambda m: _rank(METRIC_ORDER, m))
        table = Table(task, dataset, framework, recipe, markers, metrics, [])
        head = table.headline
        for r in rows.values():
            base = [b for b in rows.values() if b.backbone == r.backbone and b.method == BASELINE and b is not r]
            if head in r.cells and len(base) == 1 and head in base[0].cells and r.method != BASELINE:
                r.vs_random = welch(r.cells[head], base[0].cells[head])
            for e, prow in published:
                if r.protocol_key and (prow.protocol_key, prow.method) == (r.protocol_key, r.method):
                    r.published.update({m: c.mean for m, c in prow.cells.items() if m in r.cells})
        order = sorted(rows.values(), key=lambda r: (r.backbone, _rank(METHOD_ORDER, r.method), r.pretrain or ""))
        # published rows of this task, dataset and framework (the key's third part; never on a toy dataset)
        pubs = [prow for e, prow in published if (e["task"], e["dataset"]) == (task, dataset)
                and _key_framework(e["protocol_key"]) in (framework, None)]
        table.rows = order + sorted(pubs, key=lambda r: (r.backbone, _rank(METHOD_ORDER, r.method)))
        c = chance.get(tkey)
        table.chance = next(iter(c)) if c and len(c) == 1 and head == "top1" else None
        tables.append(table)
    tables.sort(key=lambda t: (_rank(TASK_ORDER, t.task), t.dataset, t.framework, t.protocol))
    return tables
