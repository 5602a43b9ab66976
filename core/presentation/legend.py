"""Legends that stay readable with many runs: run names without the text they all share, and where the legend
goes and how tall it is.

A study's runs are named "bn-act-loss: batchnorm=true activation=elu loss=bce seed=2"; in a legend of 24 of them
the shared "bn-act-loss: " is noise that pushes the part that differs out of sight. `short_names` cuts the
longest prefix every name shares up to a word boundary, so the legend lists "batchnorm=true activation=elu ...",
and the caller shows the prefix once (the chart's title).

A legend on the right takes its width from the plot: with a dozen entries of 60 characters the plot becomes a
narrow box. `plan_legend` keeps a short legend on the right (Plotly's default, unchanged) and puts a long one
in rows below the plot, estimating its height so the chart can grow by that much instead of shrinking the plot.
Pure functions of strings; `core.presentation.charts` applies them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

# A shared prefix is cut only where it ends with one of these, so a word is never cut in half ("article-" of
# "article-example" and "article-fixed" stays). ": " ends with " ", and is listed for the reader.
SEPARATORS: tuple[str, ...] = (": ", " ")


def shared_prefix(names: Sequence[str]) -> str:
    """The longest text that every name starts with and that ends at a separator (`SEPARATORS`), leaving every
    name a rest that is not blank; "" for fewer than two different names (a lone tail of one name says less than
    the whole) or when there is none.

    "bn-act-loss: batchnorm=true seed=0", "bn-act-loss: batchnorm=false seed=0" -> "bn-act-loss: "."""
    names = [str(n) for n in names]
    if len(set(names)) < 2:
        return ""
    common = _common_start(names)
    ends = sorted({i + len(sep) for sep in SEPARATORS for i in _find_all(common, sep)}, reverse=True)
    for end in ends:
        prefix = common[:end]
        # every name keeps a rest with a letter: "run 7" of "run 0".."run 999" would read "#8 7" in a legend
        if prefix.strip() and all(any(c.isalpha() for c in name[end:]) for name in names):
            return prefix
    return ""


def short_names(names: Sequence[str]) -> tuple[str, list[str]]:
    """(the shared prefix, each name without it). Distinct names stay distinct (the same text is cut from
    each); a single name, or names that share no prefix, come back unchanged with prefix ""."""
    prefix = shared_prefix(names)
    return prefix, [str(n)[len(prefix):] for n in names]


def prefix_title(prefix: str) -> str:
    """The prefix as a title: without the separator or punctuation it ends with ("bn-act-loss: " ->
    "bn-act-loss", "lr x batchnorm on gaussian, " -> "lr x batchnorm on gaussian")."""
    return prefix.strip().rstrip(":,;·–-").rstrip()


def _common_start(names: Sequence[str]) -> str:
    first, last = min(names), max(names)  # the common start of all is that of the two furthest apart
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _find_all(text: str, sep: str) -> list[int]:
    out, i = [], text.find(sep)
    while i >= 0:
        out.append(i)
        i = text.find(sep, i + 1)
    return out


# ---------------------------------------------------------------------- placement and height
SIDE_MAX_ENTRIES = 8  # more legend entries than this go below the plot
SIDE_MAX_CHARS = 48  # and so does a legend whose longest entry is longer (it would take a third of the width)
MANY_MIN_HEIGHT = 600  # px of figure (before the legend's rows) once a chart shows many runs or entries
MAX_BELOW_HEIGHT = 320  # px: a legend below the plot never takes more; beyond this it scrolls
PLOT_WIDTH_PX = 1000  # what the rows are estimated for: Compare's plot in the wide layout on a laptop screen
CHAR_PX = 6.0  # Plotly's 12 px legend font (about 5.3 px a character), a little generous: it only sizes the chart
ITEM_HEIGHT_PX = 19  # Plotly: max(text height, 16) + 3
TEXT_GAP_PX = 40  # Plotly: the line sample and the gaps around it
ITEM_GAP_PX = 5
GROUP_GAP_PX = 10  # Plotly's default tracegroupgap
PADDING_PX = 10


class LegendEntry(NamedTuple):
    """One line of a legend: its legend group, the group's title (None without), the name shown."""

    group: str | None
    title: str | None
    name: str


@dataclass(frozen=True)
class LegendPlan:
    """Where the legend goes: `below` the plot in rows (else Plotly's default, on the right), the `height_px` it
    adds to the figure, and `layout`, the figure's `layout.legend` (empty: Plotly's default)."""

    show: bool
    below: bool
    height_px: int
    layout: dict[str, Any] = field(default_factory=dict)


def plan_legend(entries: Sequence[LegendEntry], *, show: bool = True,
                plot_width_px: int = PLOT_WIDTH_PX) -> LegendPlan:
    """The legend for these entries (in legend order). Up to `SIDE_MAX_ENTRIES` entries of at most
    `SIDE_MAX_CHARS` characters stay on the right, where a short list is easiest to read; more go below the plot,
    horizontally (the plot keeps its width), anchored to the bottom of the figure so Plotly reserves its room,
    at most `MAX_BELOW_HEIGHT` px tall (it scrolls beyond). Entries with group titles stay grouped (one column of
    entries under each title); without titles the order is "normal", so Plotly lays the entries out in a grid
    of equal columns. `show=False`: no legend and no height."""
    if not show or not entries:
        return LegendPlan(show=show, below=False, height_px=0)
    longest = max(len(e.name) for e in entries)
    if len(entries) <= SIDE_MAX_ENTRIES and longest <= SIDE_MAX_CHARS:
        return LegendPlan(show=True, below=False, height_px=0)
    grouped = any(e.title for e in entries)
    height = min(_rows_height(entries, grouped, plot_width_px), MAX_BELOW_HEIGHT)
    layout: dict[str, Any] = {"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yanchor": "bottom",
                              "yref": "container", "maxheight": MAX_BELOW_HEIGHT}
    if not grouped:
        layout["traceorder"] = "normal"
    return LegendPlan(show=True, below=True, height_px=height, layout=layout)


def below_height(entries: Sequence[LegendEntry], *, width_px: int, font_px: float = 12) -> int:
    """The whole height, in px, of these entries laid out in rows below a plot `width_px` wide, in a `font_px`
    legend font: what a file, which cannot scroll its legend, must make room for (`plan_legend` caps it)."""
    if not entries:
        return 0
    return _rows_height(entries, any(e.title for e in entries), width_px, font_px / 12)


def _item_width(text: str, scale: float = 1.0) -> float:
    return TEXT_GAP_PX + CHAR_PX * scale * len(text)


def _rows_height(entries: Sequence[LegendEntry], grouped: bool, width: int, scale: float = 1.0) -> int:
    """Plotly's horizontal layout, estimated (`scale`: the font's size over Plotly's 12 px). Grouped: each group
    is a block (its title over its entries, one per line), blocks flow left to right and wrap. Not grouped: a
    grid whose column is the widest entry."""
    item_height = ITEM_HEIGHT_PX * max(1.0, scale)
    if not grouped:
        column = max(_item_width(e.name, scale) for e in entries) + ITEM_GAP_PX
        per_row = max(1, int(width // column))
        rows = math.ceil(len(entries) / per_row)
        return int(rows * item_height + 2 * PADDING_PX)
    blocks: dict[Any, list[LegendEntry]] = {}
    for entry in entries:
        blocks.setdefault(entry.group if entry.group is not None else ("entry", entry.name), []).append(entry)
    height, line_height, x = 0.0, 0.0, 0.0
    for members in blocks.values():
        title = members[0].title
        block_width = max([_item_width(e.name, scale) for e in members]
                          + ([CHAR_PX * scale * len(title)] if title else []))
        block_height = item_height * (len(members) + (1 if title else 0))
        if x > 0 and x + block_width + ITEM_GAP_PX > width:
            height += line_height + GROUP_GAP_PX
            x, line_height = 0.0, 0.0
        x += block_width + ITEM_GAP_PX
        line_height = max(line_height, block_height)
    return int(height + line_height + 2 * PADDING_PX)
