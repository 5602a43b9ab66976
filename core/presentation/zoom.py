"""Zooming a chart into a range of steps, redrawn from the store at full resolution.

A chart is read sized to its width (`READ_POINTS` per curve, `core.store.metrics.read_traces`), so a long run
shows its shape, every extreme and every NaN, not every point. Dragging a box on the step axis (Plotly's box
selection, which Streamlit reports) or typing a range picks steps [first, last]; the page then reads that range
again, and a range holding fewer points than the budget comes back whole. These are the pure parts: what a
selection means, and how a zoom reads and labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, MutableMapping

READ_POINTS = 2000  # points per curve a chart reads: about 500 pixel columns, each its first, last, min and max
X_FIELDS = {"step": (), "epoch": ("epoch",), "time": ("wall_time",)}  # what each x axis reads besides step, value


def selected_steps(selection: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """The step range of a Plotly box selection as Streamlit reports it (`event.selection`, its "box" list of
    {"x": [x0, x1], ...}), widened to whole steps; None when there is no box with an x extent."""
    if not selection:
        return None
    boxes = selection.get("box") or []
    xs = [float(v) for box in boxes for v in (box.get("x") or []) if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(xs) < 2:
        return None
    first, last = math.floor(min(xs)), math.ceil(max(xs))
    return (first, last) if last > first else None


def check_range(first: Any, last: Any) -> tuple[int, int]:
    """A typed step range, as whole steps first < last; ValueError naming what is wrong."""
    try:
        a, b = int(first), int(last)
    except (TypeError, ValueError):
        raise ValueError(f"steps must be whole numbers; got {first!r} and {last!r}") from None
    if a < 0 or b <= a:
        raise ValueError(f"the range must go from a step >= 0 to a later one; got {a} to {b}")
    return a, b


def read_points(smoothing: float) -> int | None:
    """The points per curve to read: the chart's budget, or every point (None) when the curve is smoothed,
    since the EMA of a reduced curve is not the reduced EMA."""
    return None if smoothing else READ_POINTS


def zoom_caption(zoom: tuple[int, int] | None, *, reduced: bool) -> str:
    """What the chart shows, in a line under it."""
    if zoom is None:
        return ("The whole run" + (", each curve reduced to its shape: every extreme and every NaN/Inf kept. " if
                                   reduced else ", every point. ")
                + "Drag across the chart to zoom into steps; they are read again at full resolution.")
    return (f"Steps {zoom[0]:,} to {zoom[1]:,}" + (", still reduced: zoom further for every point." if reduced else
                                                   ", every point."))


@dataclass(frozen=True)
class ZoomKeys:
    """Where one chart's zoom lives in a page's session state: the step range (`steps`, None for the whole run),
    and a version that is part of the chart's key (`chart`_`version`), so that each applied zoom draws a fresh
    chart and the box that made it does not stick."""

    steps: str
    version: str
    chart: str

    def chart_key(self, state: Mapping[str, Any]) -> str:
        return f"{self.chart}_{state.get(self.version, 0)}"

    def current(self, state: MutableMapping[str, Any]) -> tuple[int, int] | None:
        """The steps to show: a box just dragged on the chart is applied first."""
        state.setdefault(self.version, 0)
        picked = selected_steps((state.get(self.chart_key(state)) or {}).get("selection"))
        if picked is not None:
            self.set(state, picked)
        return state.get(self.steps)

    def set(self, state: MutableMapping[str, Any], steps: tuple[int, int] | None) -> None:
        """Show `steps` (None: the whole run) on a fresh chart."""
        state[self.steps] = steps
        state[self.version] = state.get(self.version, 0) + 1


def zoomable(figure: Any, steps: tuple[int, int] | None) -> Any:
    """A step-axis figure where dragging selects a range of steps (horizontally), showing `steps` when zoomed."""
    figure.update_layout(dragmode="select", selectdirection="h")
    if steps is not None:
        figure.update_xaxes(range=[steps[0], steps[1]])
    return figure
