"""Render the collated leaderboard (benchmarks/collate.py: TaskTable / Row) as Markdown, CSV, a self-contained HTML
page and PNG bar plots. Cells are built once (`task_cells`) as lists of parts shared by the Markdown and HTML writers:
a part is plain text, ("link", text, href) or ("code", text)."""
from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

from benchmarks.stats import fmt_cell, fmt_diff
from pretrain.fileio import atomic_write, atomic_write_text

MAIN_METRICS = ("bbox_mAP", "segm_mAP", "mIoU", "top1")  # plotted when present (else a table's first metric)
CSV_COLUMNS = ("kind", "task", "dataset", "framework", "protocol", "backbone", "method", "pretrain", "protocol_key",
               "metric", "n", "value", "std", "vs_random", "vs_random_low", "vs_random_high", "published", "delta",
               "source", "runs", "configs", "commits")
REF_COLUMNS = ("id", "method", "backbone", "task", "dataset", "metric", "value", "protocol_key", "source")
CAPTION = ("Cells: mean ± sample std over n runs (seeds), metrics in percent. Δ vs random: this row − the same "
           "backbone's random-init row on the table's headline metric, with Welch's 95 % interval; ✓ = the interval "
           "excludes 0. (Δ x) = ours − published, only where the protocol key and the method match.")


def fmt_value(v: float) -> str:
    return f"{v:.1f}" if round(v, 1) == v else f"{v:.2f}"


def _num(x: float | None) -> str:
    return "" if x is None else repr(round(x, 4))


def table_cells(table) -> tuple[list[str], list[list[list]]]:
    """Header and rows (each cell a list of parts) of one table."""
    with_pt = any(r.pretrain for r in table.rows if r.kind == "ours")
    with_delta = any(r.vs_random is not None for r in table.rows)
    header = ["backbone", "method"] + (["pre-training"] if with_pt else []) + ["n"] + list(table.metrics)
    header += [f"Δ vs random ({table.headline})"] if with_delta else []
    header.append("runs / source")
    rows = []
    for r in table.rows:
        ours = r.kind == "ours"
        cells = [[r.backbone], [r.method if ours else f"{r.method} (published)"]]
        cells += [[r.pretrain or ""]] if with_pt else []
        cells.append([str(r.n) if ours else "–"])
        for m in table.metrics:
            c = r.cells.get(m)
            text = "" if c is None else fmt_cell(c) if ours else fmt_value(c.mean)
            if ours and m in r.published:
                text += f" (Δ {r.delta(m):+.2f})"
            cells.append([text])
        if with_delta:
            cells.append([fmt_diff(r.vs_random) if r.vs_random is not None else ("baseline" if ours and
                                                                                  r.method == "random" else "")])
        if ours:
            links: list = []
            for (label, run, cfg), commit in zip(r.runs, r.commits):
                links += ["; "] if links else []
                links += [("link", label, run), " ("]
                links += [("link", "config", cfg), ", "] if cfg else []
                links += [("code", commit), ")"]
            if r.dropped:
                links += [f"; {len(r.dropped)} duplicate run(s) of the same seeds not counted"]
            cells.append(links)
        else:
            cells.append([r.source])
        rows.append(cells)
    return header, rows


def table_notes(table) -> str:
    notes = [f"seeds vary: {table.seeds_vary()}"]
    if table.chance is not None:
        notes.append(f"chance top-1 = {table.chance:.1f}")
    return "; ".join(notes)


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


def write_markdown(path: Path, tables: list, reference: list[dict], header: dict, plots: dict) -> Path:
    n, root, skipped = header["n_results"], header["runs_root"], len(header["skipped"])
    lines = ["# Leaderboard", "", f"{n} results under `{root}`, {skipped} skipped{_not_tabled(header)}. {CAPTION}"]
    verdicts = [v for t in tables for v in t.verdict_lines()]
    if verdicts:
        lines += ["", "## Verdicts", ""] + [f"- {v}" for v in verdicts]
    for t in tables:
        head, rows = table_cells(t)
        lines += ["", f"## {t.title}", "", table_notes(t), ""] + _md_table(head, rows, numeric_from=head.index("n"))
        if t in plots:
            lines += ["", f"![{t.slug}]({plots[t].relative_to(path.parent).as_posix()})"]
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
                c = r.cells.get(m)
                if c is None:
                    continue
                ours = r.kind == "ours"
                d = r.vs_random if (ours and m == t.headline) else None
                w.writerow([r.kind, t.task, t.dataset, t.framework, t.protocol, r.backbone, r.method, r.pretrain or "",
                            r.protocol_key or "", m, c.n if ours else "", _num(c.mean), _num(c.std),
                            _num(d.diff if d else None), _num(d.low if d else None), _num(d.high if d else None),
                            _num(r.published.get(m)), _num(r.delta(m) if ours else None), r.source,
                            ";".join(x[1] for x in r.runs), ";".join(x[2] or "" for x in r.runs), ";".join(r.commits)])
    return atomic_write_text(path, buf.getvalue())


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f0f0f0}td.num{text-align:right;white-space:nowrap}
tr.published td{color:#555;background:#fafafa;font-style:italic}
table.ref{font-size:12px;table-layout:fixed;width:100%}table.ref td{overflow-wrap:anywhere}
p.note{color:#555;font-size:13px}
img{max-width:100%}code{font-size:12px}"""


def _html_part(p) -> str:
    if isinstance(p, str):
        return html.escape(p)
    if p[0] == "link":
        return f'<a href="{html.escape(p[2])}">{html.escape(p[1])}</a>'
    return f"<code>{html.escape(p[1])}</code>"


def _html_table(header: list[str], rows: list[list[list]], kinds: list[str], numeric_from: int | None,
                css: str = "") -> list[str]:
    out = [f"<table{css}>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for kind, row in zip(kinds, rows):
        tds = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if numeric_from is not None and numeric_from <= i < len(header) - 1 else ""
            tds.append(f"<td{cls}>" + "".join(_html_part(p) for p in cell) + "</td>")
        out.append(f'<tr class="{kind}">' + "".join(tds) + "</tr>")
    return out + ["</table>"]


def write_html(path: Path, tables: list, reference: list[dict], header: dict, plots: dict) -> Path:
    body = ["<h1>Leaderboard</h1>",
            f"<p>{header['n_results']} results under <code>{html.escape(header['runs_root'])}</code>, "
            f"{len(header['skipped'])} skipped{html.escape(_not_tabled(header))}. {html.escape(CAPTION)}</p>"]
    verdicts = [v for t in tables for v in t.verdict_lines()]
    if verdicts:
        body += ["<h2>Verdicts</h2>", "<ul>"] + [f"<li>{html.escape(v)}</li>" for v in verdicts] + ["</ul>"]
    for t in tables:
        head, rows = table_cells(t)
        body += [f"<h2>{html.escape(t.title)}</h2>", f'<p class="note">{html.escape(table_notes(t))}</p>']
        body += _html_table(head, rows, [r.kind for r in t.rows], head.index("n"))
        if t in plots:  # embedded, so the page is self-contained
            data = base64.b64encode(plots[t].read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(t.slug)}" src="data:image/png;base64,{data}">')
    for name, png in header.get("analysis", []):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        body += [f"<h2>Multi-order interactions: {html.escape(name)}</h2>",
                 f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">']
    if reference:
        body += ["<h2>Published numbers</h2>"]
        body += _html_table(list(REF_COLUMNS), _ref_rows(reference), ["published"] * len(reference), None,
                            ' class="ref"')
    if header["skipped"]:
        body += [f"<h2>Skipped result.json ({len(header['skipped'])})</h2>", "<ul>"]
        body += [f"<li><code>{html.escape(p)}</code>: {html.escape(why)}</li>" for p, why in header["skipped"]]
        body += ["</ul>"]
    page = ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Leaderboard</title>\n"
            f"<style>\n{_CSS}\n</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(path, page)


def write_plots(tables: list, out_dir: Path) -> dict:
    """plots/<table slug>.png: one figure per table (one protocol: bars of different protocols are never drawn
    together), one panel per headline metric; groups = backbone, bars = method (our rows only), error bars = std
    where n > 1 (none for a single run), a dashed line at chance for classification. -> {table: path}"""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = {}
    for t in tables:
        ours = [r for r in t.rows if r.kind == "ours"]
        metrics = [m for m in MAIN_METRICS if m in t.metrics] or t.metrics[:1]
        if not ours or not metrics:
            continue
        groups = sorted({r.backbone for r in ours})
        methods = list(dict.fromkeys(r.method for r in ours))
        fig = Figure(figsize=(1.5 + 3.5 * len(metrics), 3.6), dpi=100)
        FigureCanvasAgg(fig)
        for k, metric in enumerate(metrics):
            ax = fig.add_subplot(1, len(metrics), k + 1)
            width = 0.8 / len(methods)
            for j, method in enumerate(methods):
                xs, ys, es = [], [], []
                for i, g in enumerate(groups):
                    for r in ours:
                        if (r.backbone, r.method) == (g, method) and metric in r.cells:
                            xs.append(i + (j - (len(methods) - 1) / 2) * width)
                            ys.append(r.cells[metric].mean)
                            es.append(r.cells[metric].std)
                ax.bar(xs, ys, width, label=method)
                if any(e is not None for e in es):
                    ax.errorbar([x for x, e in zip(xs, es) if e is not None], [y for y, e in zip(ys, es) if e is not None],
                                yerr=[e for e in es if e is not None], fmt="none", ecolor="black", capsize=3)
            if t.chance is not None and metric == "top1":
                ax.axhline(t.chance, ls="--", color="grey", lw=1, label="chance")
            ax.set_xticks(range(len(groups)), groups, fontsize=8)
            ax.set_title(f"{t.task} ({t.protocol}): {metric}", fontsize=9)
            ax.set_ylabel(f"{metric} (%)")
            ax.grid(axis="y", alpha=0.3)
        fig.axes[0].legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        out[t] = atomic_write(out_dir / f"{t.slug}.png", lambda f: f.write(buf.getvalue()))
    return out
