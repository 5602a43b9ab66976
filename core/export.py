"""Export: figures and data out of Lossboard as files, from the Compare page and from `python -m core export`.

- `style_for_export`: a copy of a `core.charts` figure in a light theme that does not depend on the browser's,
  with readable fonts, a title and a legend, and every text plotly.js would read as markup made literal.
- `figure_image`: PNG, SVG or PDF bytes from Kaleido over a local Chromium. All images share ONE browser,
  started on first use and stopped at exit; without a browser it raises `ExportUnavailable` saying what to
  install, and HTML and CSV still work.
- `figure_html`: an interactive page that works fully offline: plotly.js embedded, no MathJax, no URL plotly.js
  would fetch, and a Content-Security-Policy that forbids every network request.
- `series_csv` and `table_csv`: the stored values at full resolution (not the reduced points the chart draws)
  and the Compare tables. NaN is written as `NaN` (pandas reads it back as NaN), +-Inf as `inf`/`-inf`.
- `export_figure`: the one call behind a download button: style, then image bytes or an HTML page.
- `Download`, `figure_downloads` and `image_export_problem`: the download buttons of a page, each file made only
  when its button is clicked, and why image buttons cannot work here (None when they can).
- `safe_filename`: a file name from a run name or a comparison title.
- `add_export_parser` and `cmd_export`: the `export` subcommand; the report itself is in `core.report`.

Run names and notes are data, never markup: the HTML pages escape them, and figures escape them for plotly.js
(which would otherwise render `<b>` as bold and decode `&lt;`), so `<script>alert(1)</script>` shows as text.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import html
import importlib.util
import numbers
import os
import re
import threading
import time
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from core.config import ConfigError

__all__ = ["CSP", "DEFAULT_HEIGHT", "DEFAULT_SCALE", "DEFAULT_WIDTH", "EXTENSIONS", "Download", "ExportUnavailable",
           "FORMATS", "IMAGE_FORMATS", "MAX_FILENAME_BYTES", "MIME_TYPES", "OFFLINE_CONFIG", "SERIES_CSV_COLUMNS",
           "add_export_parser", "check_scale", "check_size", "cmd_export", "export_figure", "external_references",
           "figure_div", "figure_downloads", "figure_html", "figure_image", "find_browser", "html_page",
           "image_export_problem", "renderer_stats", "safe_filename", "series_csv", "stop_renderer",
           "style_for_export", "table_csv"]

IMAGE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
FORMATS: tuple[str, ...] = (*IMAGE_FORMATS, "html", "csv", "report")
EXTENSIONS: dict[str, str] = {"png": "png", "svg": "svg", "pdf": "pdf", "html": "html", "csv": "csv",
                              "report": "html"}
MIME_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf",
                              "html": "text/html", "csv": "text/csv", "report": "text/html"}
DEFAULT_WIDTH = 1000  # px; images are width * scale pixels wide
DEFAULT_HEIGHT = 500  # px, for figures that do not set their own height
DEFAULT_SCALE = {"png": 2.0, "svg": 1.0, "pdf": 1.0}  # PNG at 2x is crisp on slides; vector sizes stay as chosen
FONT_FAMILY = "Arial, 'Liberation Sans', 'DejaVu Sans', Helvetica, sans-serif"
INSTALL_HINT = ("On Debian/Ubuntu: `sudo apt-get install chromium`; elsewhere install Google Chrome, or run "
                "`plotly_get_chrome` (downloads a Chrome for Kaleido), or set BROWSER_PATH to the browser's "
                "executable. HTML and CSV export work without it.")
NO_BROWSER = "PNG, SVG and PDF export need Chromium or Google Chrome, and none was found{where}. " + INSTALL_HINT
NO_KALEIDO = "PNG, SVG and PDF export need the kaleido package: `pip install 'kaleido>=1,<2'`. HTML and CSV " \
             "export work without it."
# plotly.js config for offline pages: no Plotly logo link, no "send to cloud", and the one URL plotly.js would
# fetch (map topologies; scatter charts never need them) pointed next to the file instead of at the CDN.
OFFLINE_CONFIG: dict[str, Any] = {"displaylogo": False, "showSendToCloud": False, "plotlyServerURL": "",
                                  "topojsonURL": "./", "typesetMath": False, "responsive": True}
# Forbids every network request from the page; inline scripts and styles (plotly.js itself) still run.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
       "font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'")
START_TIMEOUT_S = 60.0  # launching Chromium
RENDER_TIMEOUT_S = 60.0  # one image


class ExportUnavailable(RuntimeError):
    """Image export cannot work on this machine (no browser, or no Kaleido); the message says what to install."""


# ---------------------------------------------------------------------- styling
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
    text = _literal(title) if title is not None else (_literal(own) if own else None)
    if out.data and not any(getattr(t, "showlegend", None) is not False for t in out.data):
        _add_legend(out, own)
    out.update_layout(
        template="plotly_white", paper_bgcolor="white", plot_bgcolor="white",
        font={"family": FONT_FAMILY, "size": 14, "color": "#222222"},
        title={"text": text, "font": {"size": 20}, "x": 0.02, "xanchor": "left"} if text else None,
        legend={"font": {"size": 14}, "bgcolor": "rgba(255,255,255,0.85)"}, showlegend=True,
    )
    if text:
        out.update_layout(margin={"t": max(70, out.layout.margin.t or 0)})
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


def check_size(name: str, value: Any, *, lo: float = 50, hi: float = 10000) -> int:
    """A width or height in px as an int in [lo, hi], or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a whole number of pixels from {lo:g} to {hi:g}; got {value!r}")
    return int(value)


def check_scale(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.1 <= float(value) <= 10:
        raise ValueError(f"scale must be a number from 0.1 to 10; got {value!r}")
    return float(value)


# ---------------------------------------------------------------------- images (Kaleido over Chromium)
def find_browser(env: Mapping[str, str] | None = None) -> str | None:
    """The Chromium/Chrome that image export will use, or None.

    `BROWSER_PATH` in `env` wins (None when it is not an executable file); otherwise choreographer's own search:
    a Chrome downloaded by `plotly_get_chrome`, then chromium/chrome on PATH and in the usual places."""
    env = os.environ if env is None else env
    override = env.get("BROWSER_PATH")
    if override:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
    try:
        from choreographer.browsers.chromium import Chromium  # noqa: PLC0415 - kaleido's dependency, optional
    except ImportError:
        return None
    return Chromium.find_browser(skip_local=False)


def figure_image(fig: go.Figure, fmt: str, *, width: int = DEFAULT_WIDTH, height: int | None = None,
                 scale: float | None = None, env: Mapping[str, str] | None = None) -> bytes:
    """The figure as PNG, SVG or PDF bytes, `width` x `height` px (height: the figure's own, else
    DEFAULT_HEIGHT) times `scale` (default: 2 for PNG, 1 for SVG and PDF, whose page is then width x height px,
    i.e. 0.75 pt per px in a PDF). Raises `ExportUnavailable` without a browser or Kaleido."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(IMAGE_FORMATS)}; got {fmt!r}")
    width = check_size("width", width)
    height = check_size("height", height if height is not None else (fig.layout.height or DEFAULT_HEIGHT))
    scale = check_scale(DEFAULT_SCALE[fmt] if scale is None else scale)
    env = os.environ if env is None else env
    browser = find_browser(env)
    if browser is None:
        raise ExportUnavailable(_no_browser(env))
    opts = {"format": fmt, "width": width, "height": height, "scale": scale}
    return _render(browser, fig.to_dict(), opts)


def _no_browser(env: Mapping[str, str]) -> str:
    override = env.get("BROWSER_PATH")
    return NO_BROWSER.format(where=f" (BROWSER_PATH={override!r} is not an executable file)" if override else "")


class _Renderer:
    """One Kaleido (one Chromium, one tab) on an event loop in a daemon thread; renders are sent to it."""

    def __init__(self, browser: str) -> None:
        self.browser = browser
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lossboard-kaleido", daemon=True)
        self._kaleido: Any = None
        self._thread.start()
        try:
            self._call(self._open(), START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    async def _open(self) -> None:
        import kaleido  # noqa: PLC0415 - only image export needs it

        # mathjax=False: Kaleido would otherwise load MathJax from a CDN for every page.
        self._kaleido = kaleido.Kaleido(n=1, timeout=RENDER_TIMEOUT_S, mathjax=False, path=self.browser)
        await self._kaleido.open()

    def _call(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _close(self) -> None:
        if self._kaleido is not None:
            kaleido, self._kaleido = self._kaleido, None
            await kaleido.close()

    async def _cancel_pending(self) -> None:  # choreographer's watchdog and readers, so the loop closes cleanly
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def render(self, fig: dict[str, Any], opts: dict[str, Any]) -> bytes:
        return self._call(self._kaleido.calc_fig(fig, opts=opts), RENDER_TIMEOUT_S + 5)

    def stop(self) -> None:
        for step in (self._close, self._cancel_pending):
            try:
                self._call(step(), 15)
            except Exception:  # noqa: BLE001 - a dead browser cannot be closed twice; the thread goes anyway
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        if not self._thread.is_alive():
            self._loop.close()


_lock = threading.Lock()  # Streamlit serves sessions from several threads; one render at a time
_renderer: _Renderer | None = None
_stats = {"starts": 0, "renders": 0, "start_s": 0.0, "last_render_s": 0.0}


def _render(browser: str, fig: dict[str, Any], opts: dict[str, Any]) -> bytes:
    global _renderer
    with _lock:
        for attempt in (1, 2):  # a browser that died (killed, crashed) is restarted once
            if _renderer is not None and _renderer.browser != browser:
                _renderer.stop()
                _renderer = None
            if _renderer is None:
                start = time.perf_counter()
                try:
                    _renderer = _Renderer(browser)
                except ImportError:
                    raise ExportUnavailable("image export needs the kaleido package: "
                                            "`pip install 'kaleido>=1,<2'`") from None
                except Exception as exc:
                    raise ExportUnavailable(f"starting the browser {browser} for image export failed "
                                            f"({_reason(exc)}). {INSTALL_HINT}") from exc
                _stats["starts"] += 1
                _stats["start_s"] = time.perf_counter() - start
            try:
                start = time.perf_counter()
                data = _renderer.render(fig, opts)
            except Exception as exc:
                _renderer.stop()
                _renderer = None
                if isinstance(exc, TimeoutError):
                    raise RuntimeError(f"rendering the {opts['format']} took over {RENDER_TIMEOUT_S:g} s; "
                                       f"try fewer runs or a smaller max_points") from None
                if attempt == 2:
                    raise
                continue
            _stats["renders"] += 1
            _stats["last_render_s"] = time.perf_counter() - start
            return data
    raise AssertionError("unreachable")


def _reason(exc: BaseException) -> str:
    """The first line of an error; choreographer packs its message into a tuple of sentences."""
    first = exc.args[0] if exc.args else ""
    if isinstance(first, tuple):
        first = first[0] if first else ""
    return str(first).strip().rstrip(".") or type(exc).__name__


def stop_renderer() -> None:
    """Stop the shared browser (it starts again on the next image). Runs at interpreter exit."""
    global _renderer
    with _lock:
        if _renderer is not None:
            _renderer.stop()
            _renderer = None


def renderer_stats() -> dict[str, float]:
    """Browser starts and renders so far, the last start's and the last render's seconds."""
    return dict(_stats)


atexit.register(stop_renderer)


# ---------------------------------------------------------------------- offline HTML
def figure_div(fig: go.Figure, *, div_id: str | None = None) -> str:
    """The figure as a <div> and its inline script, for a page that already holds plotly.js."""
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, include_mathjax=False, config=OFFLINE_CONFIG,
                       default_width="100%", default_height=f"{fig.layout.height or DEFAULT_HEIGHT}px",
                       div_id=div_id, validate=False)


def html_page(title: str, body: str, *, style: str = "") -> str:
    """A self-contained page: plotly.js inline in <head>, no external reference, network forbidden by CSP.
    `body` must already be escaped HTML; `title` is escaped here."""
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="Lossboard">\n<title>{html.escape(title)}</title>\n'
            f'<style>body{{background:#fff;color:#222;font-family:{FONT_FAMILY};margin:24px}}{style}</style>\n'
            f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n{body}\n</body>\n</html>\n')
    found = external_references(page)
    if found:  # a guard on this module, not on user input: names are escaped, so only code could add one
        raise RuntimeError(f"the exported page would load {found[0]!r}; export must work offline")
    return page


def figure_html(fig: go.Figure, *, title: str) -> str:
    """One figure as an interactive HTML page that works offline (the page's <title> is `title`)."""
    return html_page(title, figure_div(fig))


_URL_ATTRS = {"src", "href", "action", "formaction", "data", "poster", "srcset", "background", "xlink:href",
              "manifest", "cite", "ping"}
_EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//|^\s*(?:https?|ftp|wss?):", re.IGNORECASE)
_CSS_URL = re.compile(r"""url\(\s*['"]?\s*((?:https?:)?//[^'")\s]*)|@import\s+['"]?((?:https?:)?//[^'";\s]*)""",
                      re.IGNORECASE)


class _ReferenceFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if value and name in _URL_ATTRS and any(_EXTERNAL.match(v) for v in value.split(",")):
                self.found.append(value)
            if value and name == "style":
                self.found.extend(m.group(1) or m.group(2) for m in _CSS_URL.finditer(value))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found.extend(m.group(1) or m.group(2) for m in _CSS_URL.finditer(data))


def external_references(page: str) -> list[str]:
    """URLs of other hosts that `page` would load: src/href-like attributes of any tag and CSS url()/@import.
    Script bodies are not searched (plotly.js holds map-tile URLs that scatter charts never load)."""
    finder = _ReferenceFinder()
    finder.feed(page)
    finder.close()
    return finder.found


# ---------------------------------------------------------------------- one call for a download button
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


# ---------------------------------------------------------------------- download buttons
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


def image_export_problem(env: Mapping[str, str] | None = None) -> str | None:
    """Why PNG, SVG and PDF cannot be made on this machine, saying what to install; None when they can.

    Cheap enough for every page run: it looks for the browser and the kaleido package, starting neither."""
    env = os.environ if env is None else env
    if find_browser(env) is None:
        return _no_browser(env)
    if importlib.util.find_spec("kaleido") is None:
        return NO_KALEIDO
    return None


# ---------------------------------------------------------------------- CSV
SERIES_CSV_COLUMNS: tuple[str, ...] = ("run_id", "run_name", "key", "step", "epoch", "value", "wall_time")


def series_csv(store: Any, run_ids: Sequence[int], keys: Sequence[str] | None = None) -> str:
    """Every stored value of `keys` (None: all) for `run_ids`, full resolution, long format with the columns
    SERIES_CSV_COLUMNS, sorted by run_id, key, step. NaN as `NaN`; floats written exactly (repr).
    Raises the store's RunNotFound for an unknown id."""
    names = {int(rid): store.get_run(int(rid)).name for rid in run_ids}
    frame = store.metrics_frame(list(names), keys)
    frame.insert(1, "run_name", frame["run_id"].map(names))
    return frame.to_csv(index=False, na_rep="NaN", lineterminator="\n")


def table_csv(df: pd.DataFrame) -> str:
    """A table (summary, config differences) as CSV with its index; lists as [a, b], NaN as `NaN`."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: "[" + ", ".join(map(str, v)) + "]" if isinstance(v, (list, tuple))
                                    else v)
    return out.to_csv(index=True, na_rep="NaN", lineterminator="\n")


# ---------------------------------------------------------------------- file names
_UNSAFE = re.compile(r"[^\w\-.()]+")  # \w is Unicode letters, digits and _
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)  # Windows device names
MAX_FILENAME_BYTES = 120


def safe_filename(text: str, *, ext: str, max_bytes: int = MAX_FILENAME_BYTES) -> str:
    """A file name made from `text` (a run name, a comparison title) plus `.ext`.

    Letters (any script), digits and `-_.()` are kept; anything else (path separators, control characters,
    spaces, `<>:"|?*`) becomes `_`. No leading dot or dash, no trailing dot, not a Windows device name, at most
    `max_bytes` UTF-8 bytes in all, never empty ('export')."""
    if not isinstance(ext, str) or not re.fullmatch(r"[A-Za-z0-9]{1,10}", ext):
        raise ValueError(f"ext must be 1-10 letters or digits, like 'png'; got {ext!r}")
    stem = _UNSAFE.sub("_", unicodedata.normalize("NFKC", str(text)))
    stem = re.sub(r"_+", "_", stem).strip("._- ")
    budget = max_bytes - len(ext) - 1
    while len(stem.encode("utf-8")) > budget:
        stem = stem[:-1]
    stem = stem.rstrip("._- ") or "export"
    if _RESERVED.match(stem):
        stem = f"{stem}_"
    return f"{stem}.{ext.lower()}"


# ---------------------------------------------------------------------- the `export` command
def add_export_parser(subparsers: Any) -> None:
    """Adds `export` to the CLI's subparsers (the settings are the Compare page's)."""
    p = subparsers.add_parser(
        "export", help="write a comparison chart (png, svg, pdf, html), its data (csv) or a report (html)",
        description="The chart the Compare page draws for these settings, as a file. --format csv writes the "
                    "stored values at full resolution; report writes one HTML file with every chart and the "
                    "config-difference and summary tables.")
    p.add_argument("--runs", required=True, metavar="IDS", help="run ids separated by commas: 3,7,12")
    p.add_argument("--metric", dest="metrics", action="append", default=None, metavar="KEY",
                   help="metric key (repeat for several; default train_loss and val_loss)")
    p.add_argument("--format", default=None, metavar="FMT",
                   help=f"{'|'.join(FORMATS)} (default: from the suffix of --out)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="file to write, or an existing folder (the file is then named after the title)")
    p.add_argument("--smoothing", type=float, default=0.0, metavar="W", help="TensorBoard smoothing weight, [0, 1)")
    p.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    p.add_argument("--x", default="step", metavar="AXIS", help="step|epoch|time")
    p.add_argument("--group-by", action="append", default=[], metavar="FIELD",
                   help="config field: one mean line and band per group (repeat for several)")
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


def cmd_export(args: argparse.Namespace, store: Any, out: TextIO, err: TextIO) -> int:
    """Writes the export and one line saying where. Bad input raises ConfigError naming the option (nothing is
    written); when images cannot be made here it prints one line and returns 1."""
    suffix = Path(args.out).suffix.lower().lstrip(".")
    fmt = args.format or ("html" if suffix == "htm" else suffix if suffix in EXTENSIONS.values() else None)
    if fmt not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)}; got {args.format or args.out!r}")
    if args.layout not in ("overlay", "metric"):
        raise ConfigError("layout", f"must be one of overlay, metric; got {args.layout!r}")
    for name in ("width", "height"):
        if getattr(args, name) is not None:
            _config_check(name, check_size, name, getattr(args, name))
    if args.scale is not None:
        _config_check("scale", check_scale, args.scale)

    from core import report  # noqa: PLC0415 - the charts (scipy) load only for this command

    runs = report.load_runs(store, args.runs)
    metrics = report.check_metrics(store, runs, args.metrics)
    settings = report.check_settings(runs, x=args.x, smoothing=args.smoothing, log_y=args.log_y,
                                     group_by=args.group_by, color_by=args.color_by, dash_by=args.dash_by,
                                     band=args.band)
    title = args.title if args.title is not None else report.comparison_title(runs, metrics)
    path = _target(Path(args.out), title, EXTENSIONS[fmt])
    ids = [r.id for r in runs]

    if fmt == "csv":
        data = series_csv(store, ids, metrics).encode("utf-8")
    elif fmt == "report":
        data = report.report_html(store, ids, metrics=metrics, title=title, **settings).encode("utf-8")
    else:
        fig = report.build_comparison(store, runs, metrics=metrics, layout=args.layout, **settings)
        try:
            data = export_figure(fig, fmt, title=title, width=args.width, height=args.height, scale=args.scale)
        except RuntimeError as exc:  # ExportUnavailable, or a render that timed out
            err.write(f"error: {exc}\n")
            return 1
    _write(path, data)
    out.write(f"wrote {path} ({fmt}, {len(data):,} bytes)\n")
    return 0


def _config_check(field: str, check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except ValueError as exc:
        raise ConfigError(field, str(exc)) from None


def _target(out: Path, title: str, ext: str) -> Path:
    """The file to write: `out`, or a safe name from `title` inside `out` when it is a folder."""
    if out.is_dir():
        out = out / safe_filename(title, ext=ext)
    parent = out.parent
    if not parent.is_dir():
        raise ConfigError("out", f"folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ConfigError("out", f"cannot write to folder {str(parent)!r}")
    return out


def _write(path: Path, data: bytes) -> None:
    """Atomically: a failed export never leaves half a file, a reader never sees one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError("out", f"cannot write {str(path)!r}: {exc.strerror or exc}") from None

