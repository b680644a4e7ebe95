"""Writing the analysis outputs atomically: CSV tables and matplotlib (Agg) PNG figures."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

from pretrain.fileio import atomic_write, atomic_write_text


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Floats written with repr precision (round-trips exactly)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([repr(float(v)) if isinstance(v, float) else v for v in row])
    return atomic_write_text(path, buf.getvalue())


def new_figure(*args, **kwargs):
    """(fig, axes) from a fresh Agg figure (no pyplot global state, safe in threads / without a display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args)


def save_png(fig, path: str | Path, dpi: int = 120) -> Path:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))
