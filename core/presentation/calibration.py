"""The reliability curve of a run's validation predictions: a pure function from the stored summary to a figure.

The trainer stores the last epoch's curve in the summary as `calibration` (per non-empty probability bin: the
mean predicted probability, the share of positives, the number of samples) beside `final_val_ece`. A calibrated
model's points lie on the diagonal; points below it are over-confident positives, above it under-confident ones.
"""

from __future__ import annotations

from typing import Any, Mapping

import plotly.graph_objects as go


def calibration_data(summary: Mapping[str, Any]) -> dict[str, list[float]] | None:
    """The summary's reliability curve, or None when the run has none (older runs, no finished epoch)."""
    curve = summary.get("calibration")
    if not isinstance(curve, Mapping):
        return None
    columns = [curve.get(k) for k in ("predicted", "observed", "count")]
    if not all(isinstance(col, list) for col in columns) or not columns[0] or len({len(col) for col in columns}) != 1:
        return None
    return {"predicted": list(columns[0]), "observed": list(columns[1]), "count": list(columns[2])}


def calibration_figure(summary: Mapping[str, Any], *, title: str | None = None) -> go.Figure | None:
    """The reliability curve with the diagonal of perfect calibration, marker size by the bin's samples; None
    without a curve."""
    data = calibration_data(summary)
    if data is None:
        return None
    ece = summary.get("final_val_ece")
    largest = max(data["count"]) or 1
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line={"dash": "dot", "color": "#888888"}, hoverinfo="skip",
                             meta={"kind": "diagonal"}))
    fig.add_trace(go.Scatter(
        x=data["predicted"], y=data["observed"], mode="lines+markers", name="validation",
        marker={"size": [6 + 14 * (n / largest) ** 0.5 for n in data["count"]]},
        customdata=data["count"], meta={"kind": "reliability"},
        hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>%{customdata} samples<extra></extra>"))
    text = title or "Reliability on validation" + (f" (ECE {ece:.3f})" if isinstance(ece, (int, float)) else "")
    fig.update_layout(title=text, xaxis_title="mean predicted probability", yaxis_title="share of positives",
                      xaxis={"range": [0, 1]}, yaxis={"range": [0, 1], "scaleanchor": "x"}, height=380,
                      margin={"l": 50, "r": 20, "t": 50, "b": 50}, showlegend=False)
    return fig
