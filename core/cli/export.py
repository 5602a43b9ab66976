"""`python -m core export`: figures, CSV and the HTML report of chosen runs, as files; a study's tables for papers.

`--format table --study NAME [--table-format markdown|latex] [--judge NAME]` writes the study's ranking, effects
and interactions (mean ± 95% CI, n seeds; core.presentation.tables) instead of a chart.

The same figure function draws the Compare page and the export (core.presentation), so a file is what the page shows.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, TextIO

from core.analysis.judges import DEFAULT_JUDGE, JUDGES
from core.experiment.config import ConfigError
from core.presentation.export import (DEFAULT_WIDTH, EXTENSIONS, FORMATS, check_scale, check_size, export_figure,
                                      safe_filename, series_csv, series_parquet)
from core.presentation.tables import EXTENSIONS as TABLE_EXTENSIONS
from core.presentation.tables import TABLE_FORMATS, stored_study_tables


def add_export_parser(subparsers: Any) -> None:
    """Adds `export` to the CLI's subparsers (the settings are the Compare page's)."""
    p = subparsers.add_parser(
        "export", help="write a comparison chart (png, svg, pdf, html), its data (csv, parquet) or a report (html)",
        description="The chart the Compare page draws for these settings, as a file. --format csv and parquet "
                    "write the stored values at full resolution; report writes one HTML file with every chart and the "
                    "config-difference and summary tables.")
    p.add_argument("--runs", default=None, metavar="IDS",
                   help="run ids separated by commas: 3,7,12 (every format but table)")
    p.add_argument("--metric", dest="metrics", action="append", default=None, metavar="KEY",
                   help="metric key (repeat for several; default train_loss and val_loss)")
    p.add_argument("--format", default=None, metavar="FMT",
                   help=f"{'|'.join(FORMATS)}|table (default: from the suffix of --out; .md and .tex: table)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="--format table: the stored study (its name, or its id) whose ranking, effects and "
                        "interactions to write")
    p.add_argument("--table-format", default=None, metavar="KIND",
                   help=f"--format table: {'|'.join(TABLE_FORMATS)} (default: latex for a .tex --out, else markdown)")
    p.add_argument("--judge", default=DEFAULT_JUDGE, metavar="NAME",
                   help=f"--format table: what the study is judged on: {', '.join(JUDGES)} (default {DEFAULT_JUDGE})")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="file to write, or an existing folder (the file is then named after the title); - prints "
                        "a text format (csv, svg, html, report, table: give --format) to standard output")
    p.add_argument("--smoothing", type=float, default=0.0, metavar="W", help="TensorBoard smoothing weight, [0, 1)")
    p.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    p.add_argument("--x", default="step", metavar="AXIS", help="step|epoch|time")
    p.add_argument("--group-by", action="append", default=[], metavar="FIELD",
                   help="config field: one mean line and band per group (repeat for several); a study's runs are "
                        "grouped by its varied fields unless told otherwise, as on the Compare page")
    p.add_argument("--no-group", action="store_true", help="draw every run, even a study's, as its own line")
    p.add_argument("--color-by", default=None, metavar="FIELD", help="config field that sets the colour")
    p.add_argument("--dash-by", default=None, metavar="FIELD", help="config field that sets the line dash")
    p.add_argument("--band", default="std", metavar="KIND", help="band around a group's mean: std|minmax|ci95")
    p.add_argument("--layout", default="overlay", metavar="LAYOUT",
                   help="overlay (one chart) or metric (one chart per metric)")
    p.add_argument("--width", type=int, default=None, metavar="PX",
                   help=f"images: default {DEFAULT_WIDTH}; html: the window's width")
    p.add_argument("--height", type=int, default=None, metavar="PX", help="default: the chart's own")
    p.add_argument("--scale", type=float, default=None, metavar="S",
                   help="image pixels per px (default 2 for png, 1 for svg and pdf)")
    p.add_argument("--title", default=None, help="title (default: the metrics and the runs compared)")


STDOUT_FORMATS = ("csv", "svg", "html", "report")  # what --out - prints: text


def cmd_export(args: argparse.Namespace, store: Any, out: TextIO, err: TextIO) -> int:
    """Writes the export and one line saying where. Bad input raises ConfigError naming the option (nothing is
    written); when images cannot be made here it prints one line and returns 1."""
    suffix = Path(args.out).suffix.lower().lstrip(".")
    fmt = args.format or ("html" if suffix == "htm" else suffix if suffix in EXTENSIONS.values() else
                          "table" if suffix in TABLE_EXTENSIONS.values() else None)
    if fmt == "table":
        if args.runs:
            raise ConfigError("runs", "--format table writes a study's tables (--study NAME); it takes no --runs")
        return _export_tables(args, store, suffix, out)
    for flag, given in (("study", args.study), ("table-format", args.table_format),
                        ("judge", args.judge != DEFAULT_JUDGE)):
        if given:  # an option of --format table alone: silently ignored, it would look as if it had been used
            raise ConfigError(flag, f"--{flag} is for --format table (a study's tables); this export is "
                                    f"{fmt or 'a chart'}")
    if fmt not in FORMATS:
        got = repr(args.format) if args.format else (f"the file suffix {'.' + suffix!r}" if suffix else
                                                     f"{args.out!r}, which has no suffix")
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)}, table; got {got}")
    for flag in _not_applied(args, fmt, suffix):
        err.write(f"note: --{flag} does not apply to --format {fmt} ({WHAT[fmt]}); it is for "
                  f"{', '.join(APPLIES[flag])}, and was not used\n")
    stdout = args.out == "-"
    if stdout and fmt not in STDOUT_FORMATS:
        raise ConfigError("out", f"- (standard output) takes the text formats {', '.join(STDOUT_FORMATS)}; {fmt} is "
                                 "binary: give a file name")
    if not args.runs:
        raise ConfigError("runs", f"--format {fmt} needs --runs (run ids separated by commas: 3,7,12)")
    if args.layout not in ("overlay", "metric"):
        raise ConfigError("layout", f"must be one of overlay, metric; got {args.layout!r}")
    for name in ("width", "height"):
        if getattr(args, name) is not None:
            _config_check(name, check_size, name, getattr(args, name))
    if args.scale is not None:
        _config_check("scale", check_scale, args.scale)

    from core.presentation import report  # noqa: PLC0415 - the charts (scipy) load only for this command

    runs = report.load_runs(store, args.runs)
    metrics = report.check_metrics(store, runs, args.metrics)
    lacking = [r.id for r in runs if not set(metrics) & set(store.metric_keys(r.id))]
    if lacking:  # named in the default title, absent from the chart and the data: said, not left to be noticed
        err.write(f"note: run{'s' if len(lacking) > 1 else ''} {', '.join(f'#{i}' for i in lacking)} "
                  f"{'have' if len(lacking) > 1 else 'has'} no {' or '.join(metrics)}: nothing of "
                  f"{'them' if len(lacking) > 1 else 'it'} is drawn or written\n")
    group_by = args.group_by
    if not group_by and not args.no_group:  # as Compare shows a study's runs: a mean line and band per variant
        from core.presentation import selection  # noqa: PLC0415

        group_by = selection.default_group_by(runs, selection.study_fields(store, runs))
    settings = report.check_settings(runs, x=args.x, smoothing=args.smoothing, log_y=args.log_y,
                                     group_by=group_by, color_by=args.color_by, dash_by=args.dash_by,
                                     band=args.band)
    title = args.title if args.title is not None else report.comparison_title(runs, metrics)
    path = None if stdout else _target(args.out, title, EXTENSIONS[fmt])
    ids = [r.id for r in runs]

    if fmt == "csv":
        data = series_csv(store, ids, metrics).encode("utf-8")
    elif fmt == "parquet":
        data = series_parquet(store, ids, metrics)
    elif fmt == "report":
        data = report.report_html(store, ids, metrics=metrics, title=title, **settings).encode("utf-8")
    else:
        fig = report.build_comparison(store, runs, metrics=metrics, layout=args.layout, **settings)
        try:
            data = export_figure(fig, fmt, title=title, width=args.width, height=args.height, scale=args.scale)
        except RuntimeError as exc:  # ExportUnavailable, or a render that timed out
            err.write(f"error: {exc}\n")
            return 1
    if path is None:
        out.write(data.decode("utf-8"))
        return 0
    _write(path, data)
    out.write(f"wrote {path} ({fmt}, {len(data):,} bytes)\n")
    return 0


def _export_tables(args: argparse.Namespace, store: Any, suffix: str, out: TextIO) -> int:
    """--format table: the study's ranking, effects and interactions as Markdown or LaTeX (core.presentation.tables),
    to --out (a file, a folder, or - for standard output)."""
    kind = args.table_format or ("latex" if suffix == "tex" else "markdown")
    if kind not in TABLE_FORMATS:
        raise ConfigError("table-format", f"must be one of {', '.join(TABLE_FORMATS)}; got {kind!r}")
    if args.judge not in JUDGES:
        raise ConfigError("judge", f"must be one of {', '.join(JUDGES)}; got {args.judge!r}")
    if not args.study:
        raise ConfigError("study", "--format table needs --study NAME (a stored study's name or id)")
    try:
        name, text = stored_study_tables(store, args.study, judge=args.judge, table_format=kind)
    except ValueError as exc:
        raise ConfigError("study", str(exc)) from None
    if args.out == "-":
        out.write(text)
        return 0
    path = _target(args.out, f"{name} {args.judge}", TABLE_EXTENSIONS[kind])
    data = text.encode("utf-8")
    _write(path, data)
    out.write(f"wrote {path} (table, {kind}, {len(data):,} bytes)\n")
    return 0


# The chart's options and the formats that use them. Given to another format they are said to be unused (a CSV
# "smoothed" at 0.9 holds the stored values), not refused: a script may pass one set of options to every format.
DRAWN = ("png", "svg", "pdf", "html", "report")
APPLIES = {"smoothing": DRAWN, "log-y": DRAWN, "x": DRAWN, "group-by": DRAWN, "no-group": DRAWN, "color-by": DRAWN,
           "dash-by": DRAWN, "band": DRAWN, "layout": DRAWN[:4], "width": DRAWN[:4], "height": DRAWN[:4],
           "scale": DRAWN[:3]}
WHAT = {"csv": "the stored values as they are", "parquet": "the stored values as they are",
        "html": "an interactive chart", "report": "one page of every chart"}  # an image takes every option


def _not_applied(args: argparse.Namespace, fmt: str, suffix: str) -> list[str]:
    """The options given that `fmt` does not use; ConfigError for --group-by with --no-group, and for a --format
    that contradicts the suffix of --out (a CSV in x.png)."""
    if args.group_by and args.no_group:
        raise ConfigError("group-by", "--group-by and --no-group contradict each other: give one")
    known = {*EXTENSIONS.values(), "htm", *TABLE_EXTENSIONS.values()}
    if args.format and suffix in known and suffix not in (EXTENSIONS[fmt], "htm" if EXTENSIONS[fmt] == "html"
                                                          else None):
        raise ConfigError("format", f"--format {fmt} would write {args.out!r}, whose suffix says "
                                    f"{'.' + suffix}: give a matching --out (or drop --format)")
    given = {"smoothing": args.smoothing != 0.0, "log-y": args.log_y, "x": args.x != "step",
             "group-by": bool(args.group_by), "no-group": args.no_group, "color-by": args.color_by is not None,
             "dash-by": args.dash_by is not None, "band": args.band != "std", "layout": args.layout != "overlay",
             "width": args.width is not None, "height": args.height is not None, "scale": args.scale is not None}
    return [flag for flag, formats in APPLIES.items() if given[flag] and fmt not in formats]


def _config_check(field: str, check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except ValueError as exc:
        raise ConfigError(field, str(exc)) from None


def _target(given: str, title: str, ext: str) -> Path:
    """The file to write: `given`, or a safe name from `title` inside it when it is a folder ("figures/", with its
    trailing slash, must be one); a symbolic link is followed to the file it names."""
    out = Path(given)
    if given.endswith(("/", os.sep)) and not out.is_dir():
        raise ConfigError("out", f"folder {given!r} does not exist")
    if out.is_dir():
        out = out / safe_filename(title, ext=ext)
    if out.is_symlink():  # write where it points: replacing the link would leave its file as it was
        out = Path(os.path.realpath(out))
    parent = out.parent
    if not parent.is_dir():
        raise ConfigError("out", f"folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ConfigError("out", f"cannot write to folder {str(parent)!r}")
    return out


def _write(path: Path, data: bytes) -> None:
    """Atomically: a failed export never leaves half a file, a reader never sees one. Into a pipe or a device
    (`--out /dev/stdout`, a FIFO), which a rename would replace, it writes straight through."""
    if path.exists() and not path.is_file():
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise ConfigError("out", f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError("out", f"cannot write {str(path)!r}: {exc.strerror or exc}") from None

