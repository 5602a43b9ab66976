"""The comparison behind every export, and the report: one self-contained HTML file with every chart of a
comparison (all metrics overlaid, then one chart per metric), the config differences, the summary table and the
runs with their notes. `comparison_downloads` and `run_downloads` are the download buttons of the Compare page
and of one run's view.

Figures come from `core.charts.comparison_figure` with the Compare page's settings (the keyword names of
`SETTINGS`) and tables from `core.views`, so a file shows what the page shows. Input is checked here and a bad
value raises `ConfigError` naming it, so the command line reports it as one line.
"""

from __future__ import annotations

import html
import json
import math
import numbers
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from core.analysis.findings import findings
from core.experiment.config import ConfigError, field_names
from core.presentation import charts, formatting, legend, run_tables, selection, urls
from core.presentation.export import (MIME_TYPES, Download, figure_div, figure_downloads, html_page, safe_filename,
                                      series_csv, series_parquet, style_for_export, table_csv)
from core.store import Run, RunNotFound

# The Compare page's chart settings that a report and an export take, with their defaults.
SETTINGS: dict[str, Any] = {"x": "step", "smoothing": 0.0, "log_y": False, "color_by": None, "dash_by": None,
                            "group_by": (), "band": "std", "robust_y": False, "max_points": 2000}
MAX_TITLE_RUNS = 3  # runs named in a default title; the rest are counted

_STYLE = """
h1{font-size:26px;margin:0 0 4px} h2{font-size:20px;margin:32px 0 8px;border-bottom:1px solid #ddd}
p.meta{color:#555;margin:0 0 16px} figure{margin:0 0 24px} figcaption{font-weight:bold;margin:8px 0}
.table{overflow-x:auto} table{border-collapse:collapse;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;white-space:pre-wrap}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
"""


# ---------------------------------------------------------------------- checked input
def load_runs(store: Any, run_ids: str | Sequence[int]) -> list[Run]:
    """The runs, in the order given ("3,7,12" or a list of ids); ConfigError("runs") for a bad or unknown id."""
    if isinstance(run_ids, str):
        try:
            ids = urls.parse_run_ids(run_ids)
        except urls.SelectionError as exc:  # the hint, as a command line writes it
            raise ConfigError("runs", str(exc).replace("e.g. ?runs=", "e.g. --runs ")) from None
    else:
        ids = list(dict.fromkeys(int(i) for i in run_ids))
    if not ids:
        raise ConfigError("runs", "give at least one run id, e.g. --runs 3,7,12")
    runs = []
    for run_id in ids:
        try:
            runs.append(store.get_run(run_id))
        except RunNotFound:
            raise ConfigError("runs", f"no run with id {run_id}") from None
    return runs


def check_metrics(store: Any, runs: Sequence[Run], metrics: Sequence[str] | None) -> list[str]:
    """`metrics` (default: train_loss and val_loss when there), each logged by at least one of `runs`."""
    available = run_tables.metric_options(store.metric_keys_for([run.id for run in runs]))
    if not available:
        raise ConfigError("metric", f"runs {_ids(runs)} have no metrics yet")
    chosen = list(dict.fromkeys(metrics)) if metrics else run_tables.default_metrics(available)
    for metric in chosen:
        if metric not in available:
            shown = ", ".join(available[:40]) + (", ..." if len(available) > 40 else "")
            raise ConfigError("metric", f"runs {_ids(runs)} have no metric {metric!r}; they have: {shown}")
    return chosen


def check_settings(runs: Sequence[Run], **settings: Any) -> dict[str, Any]:
    """The chart settings with defaults filled in; ConfigError naming the setting and what is allowed."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(unknown[0], f"is not a chart setting; allowed: {', '.join(SETTINGS)}")
    out = {**SETTINGS, **settings}
    _choice("x", out["x"], charts.X_OPTIONS)
    _choice("band", out["band"], charts.BAND_KINDS)
    smoothing = out["smoothing"]
    if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) or not 0 <= smoothing < 1:
        raise ConfigError("smoothing", f"must be a number in [0, 1) (0 is off, 0.6 is TensorBoard's default); "
                                       f"got {smoothing!r}")
    for flag in ("log_y", "robust_y"):
        if not isinstance(out[flag], bool):
            raise ConfigError(flag, f"must be true or false; got {out[flag]!r}")
    if isinstance(out["max_points"], bool) or not isinstance(out["max_points"], int) or out["max_points"] < 4:
        raise ConfigError("max_points", f"must be a whole number >= 4; got {out['max_points']!r}")
    group_by = [out["group_by"]] if isinstance(out["group_by"], str) else list(out["group_by"] or ())
    for name, value in [*(("group_by", g) for g in group_by), ("color_by", out["color_by"]),
                        ("dash_by", out["dash_by"])]:
        if value is not None and value not in field_names():
            raise ConfigError(name, f"must be a config field, one of {', '.join(field_names())}; got {value!r}")
    out["group_by"] = tuple(group_by)
    out["smoothing"] = float(smoothing)
    return out


def _choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)}; got {value!r}")


def _ids(runs: Sequence[Run]) -> str:
    return ", ".join(str(r.id) for r in runs)


# ---------------------------------------------------------------------- the comparison
def build_comparison(store: Any, runs: Sequence[Run], *, metrics: Sequence[str], layout: str = "overlay",
                     title: str | None = None, **settings: Any) -> go.Figure:
    """The Compare page's figure for `runs`: `charts.comparison_figure` over the stored series, the legend's
    names without the prefix they share (`selection.legend_runs`), which titles the chart unless `title`."""
    series = store.metrics_frame([r.id for r in runs], list(metrics))
    frame, prefix = selection.legend_runs(runs)
    return charts.comparison_figure(series, frame, metrics=list(metrics), layout=layout,
                                    title=title if title is not None else legend.prefix_title(prefix) or None,
                                    diverged=run_tables.diverged_ids(runs), **check_settings(runs, **settings))


def comparison_title(runs: Sequence[Run], metrics: Sequence[str] = ()) -> str:
    """'a vs b vs c'; more runs: what their names share and how many ('bn-act-loss (24 runs)'), else 'a, b, c
    and 4 more'; after the metrics when given: 'val_loss: a vs b'."""
    names = [r.name for r in runs]
    if len(names) <= MAX_TITLE_RUNS:
        text = " vs ".join(names)
    elif shared := legend.prefix_title(legend.shared_prefix(names)):
        text = f"{shared} ({len(names)} runs)"
    else:
        text = f"{', '.join(names[:MAX_TITLE_RUNS])} and {len(names) - MAX_TITLE_RUNS} more"
    return f"{', '.join(metrics)}: {text}" if metrics else text


# ---------------------------------------------------------------------- the report
def report_html(store: Any, run_ids: str | Sequence[int], *, metrics: Sequence[str] | None = None,
                title: str | None = None, generated_at: datetime | None = None, **settings: Any) -> str:
    """One self-contained, offline HTML file: every chart (all metrics overlaid when there are several, then one
    per metric), the config differences, the summary table and the runs with tags and notes. Named `title`
    (default `comparison_title`); `settings` are the Compare page's (see SETTINGS). All text is escaped."""
    runs = load_runs(store, run_ids)
    metrics = check_metrics(store, runs, metrics)
    settings = check_settings(runs, **settings)
    title = comparison_title(runs) if title is None else title
    generated_at = generated_at or datetime.now(timezone.utc)
    series = store.metrics_frame([r.id for r in runs], metrics)
    frame = run_tables.chart_runs(runs)
    diverged = run_tables.diverged_ids(runs)

    figures: list[tuple[str, go.Figure]] = []
    if len(metrics) > 1:
        figures.append(("All metrics", charts.comparison_figure(series, frame, metrics=metrics, diverged=diverged,
                                                                **settings)))
    figures += [(m, charts.comparison_figure(series, frame, metrics=[m], diverged=diverged, **settings))
                for m in metrics]

    esc = html.escape
    parts = [f"<h1>{esc(title)}</h1>",
             f'<p class="meta">{esc(_describe(runs, metrics, settings, generated_at))}</p>',
             '<section id="charts">\n<h2>Charts</h2>']
    for i, (caption, fig) in enumerate(figures):
        parts.append(f'<figure class="chart" id="chart-{i}" data-metric="{esc(caption)}">'
                     f"<figcaption>{esc(caption)}</figcaption>\n{figure_div(style_for_export(fig))}</figure>")
    parts.append("</section>")
    summary = run_tables.summary_table(runs).rename(columns={"duration_s": "duration", **run_tables.SUMMARY_METRICS})
    sections = [("config-differences", "Config differences", run_tables.config_differences(runs),
                 "" if len(runs) < 2 or run_tables.varying_fields(runs) else "Every run has the same config."),
                ("summary", "Summary", summary, ""),
                ("runs", "Runs", run_tables.edit_frame(runs), "")]
    # the summary's numbers as the Compare page shows them: 40.6%, 1.73e+06, "–" where a run has none
    shown = {label: (lambda v, key=key: run_tables.summary_cell(key, v)) for key, label in
             run_tables.SUMMARY_METRICS.items()}
    for anchor, heading, table, note in sections:
        formats = {"duration": formatting.format_duration, **(shown if anchor == "summary" else {})}
        parts.append(f'<section id="{anchor}">\n<h2>{heading}</h2>' + (f"<p>{esc(note)}</p>" if note else "")
                     + f'\n<div class="table">{table_html(table, formats=formats)}'
                       f"</div>\n</section>")
    parts.append(findings_html(runs))
    return html_page(title, "\n".join(parts), style=_STYLE)


def findings_html(runs: Sequence[Run]) -> str:
    """The report's findings section: per run, each finding with its severity, cause and fix, causes first."""
    esc = html.escape
    items = []
    for run in runs:
        found = findings(run)
        rows = "".join(
            f'<li class="finding {esc(f.severity)}"><strong>[{esc(f.severity)}] {esc(f.title)}</strong>'
            + (f"<br>{esc(f.detail)}" if f.detail else "")
            + (f"<br><em>cause:</em> {esc(f.cause)}" if f.cause else "")
            + (f" · <em>fix:</em> <code>{esc(json.dumps(f.fix))}</code>" if f.fix else "") + "</li>"
            for f in found) or "<li>Nothing to report.</li>"
        items.append(f"<h3>{esc(formatting.run_label(run))}</h3>\n<ul>{rows}</ul>")
    return '<section id="findings">\n<h2>Findings</h2>\n' + "\n".join(items) + "\n</section>"


def _describe(runs: Sequence[Run], metrics: Sequence[str], settings: dict[str, Any], when: datetime) -> str:
    shown = [f"x: {settings['x']}", f"smoothing {settings['smoothing']:g}" if settings["smoothing"] else None,
             "log y" if settings["log_y"] else None,
             f"grouped by {', '.join(settings['group_by'])} ({settings['band']} band)" if settings["group_by"]
             else None,
             f"colour by {settings['color_by']}" if settings["color_by"] else None,
             f"dash by {settings['dash_by']}" if settings["dash_by"] else None]
    return (f"{len(runs)} runs ({_ids(runs)}) · metrics: {', '.join(metrics)} · "
            + " · ".join(s for s in shown if s) + f" · made by Lossboard on {when:%Y-%m-%d %H:%M} UTC")


# ---------------------------------------------------------------------- the pages' download buttons
def comparison_downloads(store: Any, runs: Sequence[Run], *, figure: go.Figure, metrics: Sequence[str],
                         settings: Mapping[str, Any], width: int | None = None, height: int | None = None,
                         png_scale: float | None = None) -> list[Download]:
    """What Compare offers, each file made only when its button is clicked: `figure` (the chart as the page
    shows it, drawn with `settings`, the keywords it gave `charts.comparison_figure`) as PNG, SVG, PDF and
    interactive HTML, titled `comparison_title(runs, metrics)`; the stored values of `metrics` at full
    resolution (CSV and Parquet); the summary and config-difference tables (CSV); and the report of these runs with
    the same chart settings. Figure and data are named after the title, the tables and the report after the runs.
    Bad settings or sizes raise here (ValueError, ConfigError), before any button exists."""
    runs = list(runs)
    ids, metrics = [r.id for r in runs], list(metrics)
    title, name = comparison_title(runs, metrics), comparison_title(runs)
    report_settings = check_settings(runs, **{k: v for k, v in settings.items() if k in SETTINGS})
    csv = MIME_TYPES["csv"]
    return [
        *figure_downloads(figure, title=title, width=width, height=height, png_scale=png_scale),
        Download("csv", "Data (CSV)", safe_filename(title, ext="csv"), csv,
                 lambda: series_csv(store, ids, metrics).encode("utf-8")),
        Download("parquet", "Data (Parquet)", safe_filename(title, ext="parquet"), MIME_TYPES["parquet"],
                 lambda: series_parquet(store, ids, metrics)),
        Download("summary", "Summary (CSV)", safe_filename(name, tail="summary", ext="csv"), csv,
                 lambda: table_csv(run_tables.summary_table(runs, for_file=True)).encode("utf-8")),
        Download("differences", "Config differences (CSV)", safe_filename(name, tail="config differences", ext="csv"),
                 csv, lambda: table_csv(run_tables.config_differences(runs)).encode("utf-8")),
        Download("report", "Report (HTML)", safe_filename(name, tail="report", ext="html"), MIME_TYPES["report"],
                 lambda: report_html(store, ids, metrics=metrics, title=name, **report_settings).encode("utf-8")),
    ]


def run_downloads(store: Any, run: Run, *, figure: go.Figure) -> list[Download]:
    """One run's view: its small multiples (`charts.run_figure`, as shown) as PNG, SVG, PDF and interactive HTML,
    every metric it logged at full resolution (CSV and Parquet), and its report (`report_html` of this run: its
    loss curves, summary, config and findings); files named after `formatting.run_label(run)`."""
    name = formatting.run_label(run)
    return [*figure_downloads(figure, title=None, name=name),
            Download("csv", "Data (CSV)", safe_filename(name, ext="csv"), MIME_TYPES["csv"],
                     lambda: series_csv(store, [run.id]).encode("utf-8")),
            Download("parquet", "Data (Parquet)", safe_filename(name, ext="parquet"), MIME_TYPES["parquet"],
                     lambda: series_parquet(store, [run.id])),
            Download("report", "Report (HTML)", safe_filename(name, tail="report", ext="html"), MIME_TYPES["report"],
                     lambda: report_html(store, [run.id], title=name).encode("utf-8"))]


def table_html(df: pd.DataFrame, *, formats: dict[str, Callable[[Any], str]] | None = None) -> str:
    """`df` as an HTML table with its index, every header and cell escaped; numbers right-aligned."""
    formats = formats or {}
    esc = html.escape
    head = "".join(f"<th>{esc(str(c))}</th>" for c in [df.index.name or "", *df.columns])
    rows = []
    for index, row in zip(df.index, df.itertuples(index=False)):
        cells = [f"<th>{esc(_cell(index))}</th>"]
        for col, value in zip(df.columns, row):
            text = formats[col](value) if col in formats else _cell(value)
            numeric = isinstance(value, numbers.Number) and not isinstance(value, bool)
            cells.append(f'<td class="num">{esc(text)}</td>' if numeric else f"<td>{esc(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, pd.Timestamp):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)
