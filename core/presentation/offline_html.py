"""Interactive HTML that works fully offline: plotly.js embedded, no MathJax, no URL plotly.js would fetch, and a
Content-Security-Policy that forbids every network request; `external_references` finds any that slipped in.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from core.presentation.images import DEFAULT_HEIGHT

FONT_FAMILY = "Arial, 'Liberation Sans', 'DejaVu Sans', Helvetica, sans-serif"


# plotly.js config for offline pages: no Plotly logo link, no "send to cloud", and the one URL plotly.js would
# fetch (map topologies; scatter charts never need them) pointed next to the file instead of at the CDN.
OFFLINE_CONFIG: dict[str, Any] = {"displaylogo": False, "showSendToCloud": False, "plotlyServerURL": "",
                                  "topojsonURL": "./", "typesetMath": False, "responsive": True}


# Forbids every network request from the page; inline scripts and styles (plotly.js itself) still run.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
       "font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'")


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
