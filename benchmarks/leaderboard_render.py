"""Render the collated leaderboard (benchmarks/collate.py: TaskTable / Row) as Markdown, CSV, a self-contained HTML
page and PNG bar plots. Cells are built once (`task_cells`) as lists of parts shared by the Markdown and HTML writers:
a part is plain text, ("link", text, href) or ("code", text)."""
from __future__ import annotations

import base64
import csv
import html
import io
import re
from pathlib import Path

from pretrain.fileio import atomic_write, atomic_write_text

MAIN_METRICS = ("bbox_mAP", "segm_mAP", "mIoU", "top1")  # plotted when present (else a task's first metric)
CSV_COLUMNS = ("kind", "task", "dataset", "backbone", "method", "protocol_key", "metric", "n", "value", "std",
               "published", "delta", "source", "runs", "configs", "commits")
REF_COLUMNS = ("id", "paper", "method", "backbone", "task", "dataset", "metric", "value", "protocol", "protocol_key",
               "source")
CAPTION = ("Cells: mean ± sample std over n runs (seeds), metrics in percent; (Δ x) = ours − published, shown only "
           "where the protocol key and the method match.")


def fmt_stat(n: int, mean: float, std: float | None, delta: float | None) -> str:
    s = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
    return s if delta is None else f"{s} (Δ {delta:+.2f})"


def fmt_value(v: float) -> str:
    return f"{v:.1f}" if round(v, 1) == v else f"{v:.2f}"


def _num(x: float | None) -> str:
    return "" if x is None else repr(round(x, 4))


def task_cells(table) -> tuple[list[str], list[list[list]]]:
    """Header and rows (each cell a list of parts) of one task table."""
    with_protocol = any(r.protocol_key for r in table.rows)
    header = ["dataset", "backbone", "method"] + (["protocol"] if with_protocol else []) + ["n"] + table.metrics
    header.append("runs / source")
    rows = []
    for r in table.rows:
        ours = r.kind == "ours"
        cells = [[r.dataset], [r.backbone], [r.method if ours else f"{r.method} (published)"]]
        cells += [[r.protocol_key or ""]] if with_protocol else []
        cells.append([str(r.n) if ours else "–"])
        for m in table.metrics:
            st = r.stats.get(m)
            cells.append([""] if st is None else [fmt_stat(*st) if ours else fmt_value(st[1])])
        if ours:
            links: list = []
            for (label, run, cfg), commit in zip(r.runs, r.commits):
                links += ["; "] if links else []
                links += [("link", label, run), " ("]
                links += [("link", "config", cfg), ", "] if cfg else []
                links += [("code", commit), ")"]
            cells.append(links)
        else:
            cells.append([r.source])
        rows.append(cells)
    return header, rows


def _not_tabled(header: dict) -> str:
    k = header.get("n_not_tabled", 0)
    return f", {k} pre-training run{'s' if k != 1 else ''} not tabled" if k else ""


def _md_part(p) -> str:
    if isinstance(p, str):
        return p.replace("|", "\\|")
    return f"[{p[1]}]({p[2]})" if p[0] == "link" else f"`{p[1]}`"


def _md_table(header: list[str], rows: list[list[list]], numeric_from: int | None = None) -> list[str]:
    align = ["---:" if numeric_from is not None and numeric_from <= i < len(header) - 1 else "---"
             for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join("".join(_md_part(p) for p in cell) for cell in row) + " |" for row in rows]
    return lines


def _ref_rows(reference: list[dict]) -> list[list[list]]:
    return [[[str(e.get(k, "")) if k != "value" else fmt_value(float(e[k]))] for k in REF_COLUMNS] for e in reference]


def write_markdown(path: Path, tables: list, reference: list[dict], header: dict, plots: dict[str, Path]) -> Path:
    n, root, skipped = header["n_results"], header["runs_root"], len(header["skipped"])
    lines = ["# Leaderboard", "", f"{n} results under `{root}`, {skipped} skipped{_not_tabled(header)}. {CAPTION}"]
    for t in tables:
        head, rows = task_cells(t)
        lines += ["", f"## {t.task}", ""] + _md_table(head, rows, numeric_from=head.index("n"))
        if t.task in plots:
            lines += ["", f"![{t.task}]({plots[t.task].relative_to(path.parent).as_posix()})"]
    for name, png in header.get("analysis", []):
        lines += ["", f"## Multi-order interactions: {name}", "", f"![{name}]({png.relative_to(path.parent).as_posix()})"]
    if reference:
        lines += ["", "## Published numbers", ""] + _md_table(list(REF_COLUMNS), _ref_rows(reference))
    if header["skipped"]:
        lines += ["", f"## Skipped result.json ({len(header['skipped'])})", ""]
        lines += [f"- `{p}`: {why}" for p, why in header["skipped"]]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_csv(path: Path, tables: list) -> Path:
    """Long format: one line per (row, metric), in table order."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for t in tables:
        for r in t.rows:
            for m in t.metrics:
                if m not in r.stats:
                    continue
                n, value, std, delta = r.stats[m]
                ours = r.kind == "ours"
                w.writerow([r.kind, t.task, r.dataset, r.backbone, r.method, r.protocol_key or "", m,
                            n if ours else "", _num(value), _num(std), _num(r.published.get(m)), _num(delta),
                            r.source, ";".join(x[1] for x in r.runs), ";".join(x[2] or "" for x in r.runs),
                            ";".join(r.commits)])
    return atomic_write_text(path, buf.getvalue())


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f0f0f0}td.num{text-align:right;white-space:nowrap}
tr.published td{color:#555;background:#fafafa;font-style:italic}
img{max-width:100%}code{font-size:12px}"""


def _html_part(p) -> str:
    if isinstance(p, str):
        return html.escape(p)
    if p[0] == "link":
        return f'<a href="{html.escape(p[2])}">{html.escape(p[1])}</a>'
    return f"<code>{html.escape(p[1])}</code>"


def _html_table(header: list[str], rows: list[list[list]], kinds: list[str], numeric_from: int | None) -> list[str]:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for kind, row in zip(kinds, rows):
        tds = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if numeric_from is not None and numeric_from <= i < len(header) - 1 else ""
            tds.append(f"<td{cls}>" + "".join(_html_part(p) for p in cell) + "</td>")
        out.append(f'<tr class="{kind}">' + "".join(tds) + "</tr>")
    return out + ["</table>"]


def write_html(path: Path, tables: list, reference: list[dict], header: dict, plots: dict[str, Path]) -> Path:
    body = ["<h1>Leaderboard</h1>",
            f"<p>{header['n_results']} results under <code>{html.escape(header['runs_root'])}</code>, "
            f"{len(header['skipped'])} skipped{html.escape(_not_tabled(header))}. {html.escape(CAPTION)}</p>"]
    for t in tables:
        head, rows = task_cells(t)
        body += [f"<h2>{html.escape(t.task)}</h2>"]
        body += _html_table(head, rows, [r.kind for r in t.rows], head.index("n"))
        if t.task in plots:  # embedded, so the page is self-contained
            data = base64.b64encode(plots[t.task].read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(t.task)}" src="data:image/png;base64,{data}">')
    for name, png in header.get("analysis", []):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        body += [f"<h2>Multi-order interactions: {html.escape(name)}</h2>",
                 f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">']
    if reference:
        body += ["<h2>Published numbers</h2>"]
        body += _html_table(list(REF_COLUMNS), _ref_rows(reference), ["published"] * len(reference), None)
    if header["skipped"]:
        body += [f"<h2>Skipped result.json ({len(header['skipped'])})</h2>", "<ul>"]
        body += [f"<li><code>{html.escape(p)}</code>: {html.escape(why)}</li>" for p, why in header["skipped"]]
        body += ["</ul>"]
    page = ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Leaderboard</title>\n"
            f"<style>\n{_CSS}\n</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(path, page)


def write_plots(tables: list, out_dir: Path) -> dict[str, Path]:
    """plots/<task>.png: one panel per headline metric; groups = backbone (and dataset), bars = method, error
    bars = std. Our rows only (published numbers are on other datasets/protocols in general)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = {}
    for t in tables:
        ours = [r for r in t.rows if r.kind == "ours"]
        metrics = [m for m in MAIN_METRICS if m in t.metrics] or t.metrics[:1]
        if not ours or not metrics:
            continue
        groups = sorted({(r.dataset, r.backbone) for r in ours})
        methods = sorted({r.method for r in ours}, key=lambda m: [r.method for r in ours].index(m))
        fig = Figure(figsize=(1.5 + 3.5 * len(metrics), 3.6), dpi=100)
        FigureCanvasAgg(fig)
        for k, metric in enumerate(metrics):
            ax = fig.add_subplot(1, len(metrics), k + 1)
            width = 0.8 / len(methods)
            for j, method in enumerate(methods):
                xs, ys, es = [], [], []
                for i, g in enumerate(groups):
                    for r in ours:
                        if (r.dataset, r.backbone, r.method) == (*g, method) and metric in r.stats:
                            xs.append(i + (j - (len(methods) - 1) / 2) * width)
                            ys.append(r.stats[metric][1])
                            es.append(r.stats[metric][2] or 0.0)
                ax.bar(xs, ys, width, yerr=es, capsize=3, label=method)
            multi = len({d for d, _ in groups}) > 1
            ax.set_xticks(range(len(groups)), [f"{b}\n{d}" if multi else b for d, b in groups], fontsize=8)
            ax.set_title(f"{t.task}: {metric}", fontsize=10)
            ax.set_ylabel(f"{metric} (%)")
            ax.grid(axis="y", alpha=0.3)
        fig.axes[0].legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", t.task)
        out[t.task] = atomic_write(out_dir / f"{name}.png", lambda f: f.write(buf.getvalue()))
    return out
