"""Export: figures and data out of Lossboard as files, from the Compare page and from `python -m core export`.

- `style_for_export`: a copy of a `core.presentation.charts` figure in a light theme that does not depend on the
  browser's, with readable fonts, a title and a legend, and every text plotly.js would read as markup made literal.
- `figure_image` (from `core.presentation.images`): PNG, SVG or PDF bytes from Kaleido over a local Chromium,
  one browser for every image; without a browser it raises `ExportUnavailable` saying what to install.
- `figure_html` (from `core.presentation.offline_html`): an interactive page that works fully offline.
- `series_csv` and `table_csv`: the stored values at full resolution (not the reduced points the chart draws)
  and the Compare tables. NaN is written as `NaN` (pandas reads it back as NaN), +-Inf as `inf`/`-inf`.
- `export_figure`: the one call behind a download button: style, then image bytes or an HTML page.
- `Download`, `figure_downloads` and `image_export_problem`: the download buttons of a page, each file made only
  when its button is clicked, and why image buttons cannot work here (None when they can).
- `safe_filename`: a file name from a run name or a comparison title.

Run names and notes are data, never markup: the HTML pages escape them, and figures escape them for plotly.js
(which would otherwise render `<b>` as bold and decode `&lt;`), so `<script>alert(1)</script>` shows as text.
"""

from __future__ import annotations

import html
import io
import math
import re
import textwrap
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from core.presentation.images import (DEFAULT_HEIGHT, DEFAULT_SCALE, DEFAULT_WIDTH, IMAGE_FORMATS, ExportUnavailable,
                                      check_scale, check_size, figure_image, find_browser, image_export_problem,
                                      renderer_stats, stop_renderer)
from core.presentation.legend import LegendEntry, below_height, plan_legend
from core.presentation.offline_html import (CSP, FONT_FAMILY, OFFLINE_CONFIG, external_references, figure_div,
                                            figure_html, html_page)



__all__ = ["CSP", "DEFAULT_HEIGHT", "DEFAULT_SCALE", "DEFAULT_WIDTH", "EXTENSIONS", "Download", "ExportUnavailable",
           "FORMATS", "IMAGE_FORMATS", "MAX_FILENAME_BYTES", "MIME_TYPES", "OFFLINE_CONFIG", "SERIES_CSV_COLUMNS",
           "check_scale", "check_size", "export_figure", "external_references",
           "figure_div", "figure_downloads", "figure_html", "figure_image", "find_browser", "html_page",
           "image_export_problem", "renderer_stats", "safe_filename", "series_csv", "series_parquet", "stop_renderer",
           "style_for_export", "table_csv"]


FORMATS: tuple[str, ...] = (*IMAGE_FORMATS, "html", "csv", "parquet", "report")


EXTENSIONS: dict[str, str] = {"png": "png", "svg": "svg", "pdf": "pdf", "html": "html", "csv": "csv",
                              "parquet": "parquet", "report": "html"}


MIME_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf",
                              "html": "text/html", "csv": "text/csv", "parquet": "application/vnd.apache.parquet",
                              "report": "text/html"}




def style_for_export(fig: go.Figure, *, title: str | None = None, width: int | None = None,
                     height: int | None = None) -> go.Figure:
    """A copy of `fig` ready for a file: white paper and plot, dark text, 14 px text and 16 px axis titles, the
    legend shown, `title` (else the figure's own) as the title, and `width`/`height` in px when given.

    Every text plotly.js interprets as pseudo-HTML (trace names, legend group titles, titles, axis titles,
    annotations) is escaped so it renders literally. Apply it once, to a figure from `core.charts`."""
    if title is not None and not isinstance(title, str):
        raise ValueError(f"title must be a string or None; got {title!r}")
    for name, value in (("width", width), ("height", height)):
        if value is not None:
            check_size(name, value)
    out = go.Figure(fig)
    for trace in out.data:
        if isinstance(getattr(trace, "name", None), str):
            trace.name = _literal(trace.name)
        group_title = getattr(trace, "legendgrouptitle", None)
        if group_title is not None and isinstance(group_title.text, str):
            group_title.text = _literal(group_title.text)
    own = out.layout.title.text
    raw = title if title is not None else (own or None)
    # a file has no window to widen: a long title wraps onto lines that fit the image (20 px text: ~11 px a character)
    per_line = max(30, ((width or out.layout.width or DEFAULT_WIDTH) - 40) // 11)
    lines = textwrap.wrap(raw, per_line, break_on_hyphens=False) if raw else []
    text = "<br>".join(_literal(line) for line in lines) if lines else None
    # the rows the page's chart grew by for a legend below its plot (none where the legend is hidden)
    on_page = plan_legend(_legend_entries(out), show=fig.layout.showlegend is not False).height_px
    if out.data and not any(getattr(t, "showlegend", None) is not False for t in out.data):
        _add_legend(out, own)
    out.update_layout(
        template="plotly_white", paper_bgcolor="white", plot_bgcolor="white",
        font={"family": FONT_FAMILY, "size": 14, "color": "#222222"},
        # the title's first line at the top of the image, its lines above the plot (the margin grows by each)
        title={"text": text, "font": {"size": 20}, "x": 0.02, "xanchor": "left", "y": 1, "yref": "container",
               "yanchor": "top", "pad": {"t": 14}} if text else None,
        legend={"font": {"size": 14}, "bgcolor": "rgba(255,255,255,0.85)"}, showlegend=True,
    )
    _legend_in_full(out, width=width or out.layout.width or DEFAULT_WIDTH,
                    height=(out.layout.height or DEFAULT_HEIGHT) - on_page)
    if text:
        out.update_layout(margin={"t": max(70, out.layout.margin.t or 0) + 26 * (len(lines) - 1)})
    if width is not None:
        out.update_layout(width=int(width))
    if height is not None:
        out.update_layout(height=int(height))
    out.update_xaxes(title_font={"size": 16}, tickfont={"size": 13}, gridcolor="#e5e5e5", linecolor="#444444",
                     zerolinecolor="#cccccc")
    out.update_yaxes(title_font={"size": 16}, tickfont={"size": 13}, gridcolor="#e5e5e5", linecolor="#444444",
                     zerolinecolor="#cccccc")
    out.for_each_xaxis(lambda axis: _escape_axis_title(axis))
    out.for_each_yaxis(lambda axis: _escape_axis_title(axis))
    for annotation in out.layout.annotations:
        if isinstance(annotation.text, str):
            annotation.text = _literal(annotation.text)
        annotation.font.size = annotation.font.size or 15
    return out


def _legend_entries(fig: go.Figure) -> list[LegendEntry]:
    """The figure's legend, one entry a trace shown in it."""
    return [LegendEntry(t.legendgroup, getattr(getattr(t, "legendgrouptitle", None), "text", None) or None,
                        t.name or "") for t in fig.data if t.showlegend is not False]


def _legend_in_full(fig: go.Figure, *, width: int, height: int) -> None:
    """Every entry of the legend in the file, which cannot scroll it: a long legend (`legend.plan_legend`) in
    rows below the plot, the figure `height` px (without a legend below its plot) plus the rows' whole height in
    the file's 14 px font; a short one on the right, as Plotly puts it, in `height`."""
    entries = _legend_entries(fig)
    plot_width = max(200, width - 80)  # the plot's width in the image: the margins' default 80 px
    plan = plan_legend(entries, show=True, plot_width_px=plot_width)
    if not plan.below:
        fig.update_layout(height=height)
        return
    rows = below_height(entries, width_px=plot_width, font_px=14)
    fig.update_layout(legend={**plan.layout, "maxheight": rows + 20}, height=height + rows)


def _add_legend(fig: go.Figure, run_name: str | None) -> None:
    """A legend for a figure that has none. One run's small multiples (`run_figure`, titled with the run's
    name) get one entry, the run, toggling every subplot; anything else lists each distinct trace name once."""
    run_ids = {(t.meta or {}).get("run_id") if isinstance(t.meta, dict) else None for t in fig.data}
    if len(run_ids) == 1 and None not in run_ids and run_name:
        for trace in fig.data:
            trace.legendgroup = "run"
        fig.data[0].update(showlegend=True, name=_literal(run_name))
        return
    seen: set[str] = set()
    for trace in fig.data:
        if trace.name not in seen:
            trace.showlegend = True
            seen.add(trace.name)


def _literal(text: str) -> str:
    """`text` as plotly.js shows it literally: it renders <b>, <i>, <br>... as markup and decodes entities."""
    return html.escape(text, quote=False)


def _escape_axis_title(axis: Any) -> None:
    if isinstance(axis.title.text, str):
        axis.title.text = _literal(axis.title.text)



def export_figure(fig: go.Figure, fmt: str, *, title: str | None = None, width: int | None = None,
                  height: int | None = None, scale: float | None = None,
                  env: Mapping[str, str] | None = None) -> bytes:
    """`fig` (from `core.charts`) styled for export, as PNG/SVG/PDF bytes or an offline HTML page (UTF-8).
    `width` None: DEFAULT_WIDTH for images, the window's width for HTML. Raises `ExportUnavailable` for an
    image without a browser, ValueError for a bad format or size."""
    if fmt not in (*IMAGE_FORMATS, "html"):
        raise ValueError(f"fmt must be one of {', '.join(IMAGE_FORMATS)}, html; got {fmt!r}")
    styled = style_for_export(fig, title=title, width=width, height=height)
    if fmt == "html":
        page_title = title if title is not None else (fig.layout.title.text or "Lossboard chart")
        return figure_html(styled, title=page_title).encode("utf-8")
    return figure_image(styled, fmt, width=width or DEFAULT_WIDTH, height=height, scale=scale, env=env)


@dataclass(frozen=True)
class Download:
    """One download button of a page: its label, the file it gives and the call that makes the file.

    `make` runs only when the button is clicked (Streamlit's `download_button(data=callable)`), so a page that
    offers ten files renders as fast as one that offers none."""

    key: str  # what the file is, unique in one page's list: png, svg, pdf, html, csv, summary, ...
    label: str
    file_name: str
    mime: str
    make: Callable[[], bytes]
    needs_browser: bool = False  # an image: Kaleido over Chromium (see `image_export_problem`)


FIGURE_LABELS: dict[str, str] = {"png": "PNG", "svg": "SVG", "pdf": "PDF", "html": "HTML (interactive)"}


def figure_downloads(fig: go.Figure, *, title: str | None, name: str | None = None,
                     formats: Sequence[str] = ("png", "svg", "pdf", "html"), width: int | None = None,
                     height: int | None = None, png_scale: float | None = None) -> list[Download]:
    """Downloads of `fig` (from `core.charts`, as the page shows it): `export_figure` for each of `formats`.

    `title` goes on the figure (None: its own); files are named after `name` (default `title`). Images are
    `width` x `height` px (None: DEFAULT_WIDTH, the figure's own height), the PNG `png_scale` pixels per px
    (default 2); SVG and PDF are vector, drawn at width x height. The HTML page fills the browser window.
    Sizes are checked here, so a bad one raises ValueError before any button exists."""
    unknown = [f for f in formats if f not in FIGURE_LABELS]
    if unknown:
        raise ValueError(f"formats must be among {', '.join(FIGURE_LABELS)}; got {unknown[0]!r}")
    for label, value in (("width", width), ("height", height)):
        if value is not None:
            check_size(label, value)
    if png_scale is not None:
        check_scale(png_scale)
    stem = name if name is not None else (title or fig.layout.title.text or "chart")

    def maker(fmt: str) -> Callable[[], bytes]:
        if fmt == "html":
            return lambda: export_figure(fig, "html", title=title)
        scale = png_scale if fmt == "png" else None
        return lambda: export_figure(fig, fmt, title=title, width=width, height=height, scale=scale)

    return [Download(fmt, FIGURE_LABELS[fmt], safe_filename(stem, ext=EXTENSIONS[fmt]), MIME_TYPES[fmt],
                     maker(fmt), needs_browser=fmt in IMAGE_FORMATS) for fmt in formats]


SERIES_CSV_COLUMNS: tuple[str, ...] = ("run_id", "run_name", "key", "step", "epoch", "value", "wall_time")


def series_csv(store: Any, run_ids: Sequence[int], keys: Sequence[str] | None = None) -> str:
    """Every stored value of `keys` (None: all) for `run_ids`, full resolution, long format with the columns
    SERIES_CSV_COLUMNS, sorted by run_id, key, step. NaN as `NaN`; floats written exactly (repr).
    Raises the store's RunNotFound for an unknown id."""
    names = {int(rid): store.get_run(int(rid)).name for rid in run_ids}
    frame = store.metrics_frame(list(names), keys)
    frame.insert(1, "run_name", frame["run_id"].map(names))
    return frame.to_csv(index=False, na_rep="NaN", lineterminator="\n")


def series_parquet(store: Any, run_ids: Sequence[int], keys: Sequence[str] | None = None) -> bytes:
    """The same table as `series_csv` (columns SERIES_CSV_COLUMNS, every stored value) as Parquet bytes: typed
    columns (int64 steps and epochs, float64 values bit for bit, NaN and +-Inf included), the metric names
    dictionary-encoded, zstd-compressed. pyarrow comes with Streamlit."""
    import pyarrow as pa  # noqa: PLC0415 - only this export needs it
    import pyarrow.parquet as pq  # noqa: PLC0415

    names = {int(rid): store.get_run(int(rid)).name for rid in run_ids}
    frame = store.metrics_frame(list(names), keys)
    table = pa.table({
        "run_id": pa.array(frame["run_id"].to_numpy(), pa.int64()),
        "run_name": pa.array(frame["run_id"].map(names).to_numpy(dtype=object), pa.string()),
        "key": pa.array(frame["key"].to_numpy(dtype=object), pa.string()).dictionary_encode(),
        "step": pa.array(frame["step"].to_numpy(), pa.int64()),
        "epoch": pa.array(frame["epoch"].to_numpy(), pa.int64()),
        "value": pa.array(frame["value"].to_numpy(), pa.float64()),
        "wall_time": pa.array(frame["wall_time"].to_numpy(), pa.float64()),
    })
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def table_csv(df: pd.DataFrame) -> str:
    """A table (summary, config differences) as CSV with its index; lists as [a, b], a float NaN (a value a run
    measured) as `NaN`, None or NA (no value) empty."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or out[col].dtype.kind == "f":
            out[col] = out[col].astype(object).map(_csv_cell)
    return out.to_csv(index=True, na_rep="", lineterminator="\n")


def _csv_cell(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return v


_UNSAFE = re.compile(r"[^\w\-.()]+")  # \w is Unicode letters, digits and _


_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)  # Windows device names


MAX_FILENAME_BYTES = 120


def safe_filename(text: str, *, ext: str, tail: str = "", max_bytes: int = MAX_FILENAME_BYTES) -> str:
    """A file name made from `text` (a run name, a comparison title), then `tail` (what the file is: 'summary'),
    plus `.ext`.

    Letters (any script), digits and `-_.()` are kept; anything else (path separators, control characters,
    spaces, `<>:"|?*`) becomes `_`. No leading dot or dash, no trailing dot, not a Windows device name, at most
    `max_bytes` UTF-8 bytes in all, never empty ('export'). A name too long is cut in `text`, never in `tail`, so
    the files of one long title stay apart."""
    if not isinstance(ext, str) or not re.fullmatch(r"[A-Za-z0-9]{1,10}", ext):
        raise ValueError(f"ext must be 1-10 letters or digits, like 'png'; got {ext!r}")

    def clean(part: str) -> str:
        return re.sub(r"_+", "_", _UNSAFE.sub("_", unicodedata.normalize("NFKC", str(part)))).strip("._- ")
    stem, end = clean(text), clean(tail)[:40]
    end = f"_{end}" if end else ""
    budget = max_bytes - len(ext) - 1 - len(end.encode("utf-8"))
    while len(stem.encode("utf-8")) > budget:
        stem = stem[:-1]
    stem = (stem.rstrip("._- ") or ("" if end else "export")) + end
    stem = stem.strip("._- ") or "export"
    if _RESERVED.match(stem):
        stem = f"{stem}_"
    return f"{stem}.{ext.lower()}"
