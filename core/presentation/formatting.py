"""Values as the dashboard shows them: config values, durations, statuses, run labels, and text made literal
for markdown. Pure functions, shared by every page's tables and pickers."""

from __future__ import annotations

import math
import re
from typing import Any


from core.analysis.effects import format_value as study_value
from core.experiment.config import GROUPS
from core.store import Run


# Plain Unicode symbols, not emoji: they render in table cells with any font (DejaVu has them all).
STATUS_ICONS: dict[str, str] = {"running": "↻", "finished": "✓", "diverged": "↯", "failed": "✗", "cancelled": "■",
                                "interrupted": "⚠"}


def format_value(value: Any) -> str:
    """A config value as one short string for tables and filters (booleans as True/False)."""
    return study_value(value, cli=False)


def format_duration(seconds: float | None) -> str:
    """'0.8 s', '42 s', '3 min 05 s', '2 h 04 min'; '–' when unknown."""
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def status_label(status: str) -> str:
    """The status with its icon, e.g. '✓ finished'."""
    return f"{STATUS_ICONS.get(status, '•')} {status}"


def run_label(run: Run) -> str:
    """How a run is named in pickers and legends: '#12 mlp-bn-logits'."""
    return f"#{run.id} {run.name}"


def as_float(value: Any) -> float:
    """A summary value as a float for a table column; missing or non-numeric is NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def escape_markdown(text: str) -> str:
    """`text` shown literally by st.markdown in the middle of a line: the characters markdown (and Streamlit's
    LaTeX and colour syntax) could read as markup anywhere are escaped."""
    return re.sub(r"([\\`*_\[\]<>|~$:])", r"\\\1", text)


def form_order() -> list[str]:
    return [name for names in GROUPS.values() for name in names]


def natural_key(text: str) -> tuple:
    """A sort key that orders "run 2" before "run 10" (ASCII digits only: int() refuses "²")."""
    return tuple((0, int(p), "") if p.isascii() and p.isdigit() else (1, 0, p)
                 for p in re.split(r"([0-9]+)", str(text)) if p)
