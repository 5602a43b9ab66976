"""What a finding is, and the small helpers the rules share (`findings` for symptoms, `causes` for root causes)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

SEVERITIES = ("problem", "warning", "info", "good")
# Smallest logit whose sigmoid rounds to exactly 1 (see core.training.diagnostics.saturation_logits).
SATURATES_AT = {"float32": 16.6, "float64": 36.7, "float16": 8.3, "bfloat16": 6.25}


@dataclass(frozen=True)
class Finding:
    severity: str  # one of SEVERITIES
    title: str  # one sentence, with the number
    detail: str  # why it happens and what to try, with the evidence
    cause: str = ""  # the root cause in a few words ("unscaled inputs"); "" for a symptom with no cause named
    fix: dict[str, Any] | None = None  # the config change that removes the cause, e.g. {"standardize": True}

    def to_dict(self) -> dict[str, Any]:
        """What `show --json` prints: severity, title, detail, cause, fix."""
        return {"severity": self.severity, "title": self.title, "detail": self.detail, "cause": self.cause,
                "fix": dict(self.fix) if self.fix else None}


def num(summary: Mapping[str, Any], key: str) -> float | None:
    """A finite number from the summary, or None (missing, NaN, Inf, not a number)."""
    value = summary.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.01 else f"{100 * x:.2g}%"


def layer_medians(summary: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Per layer, the summary's `median_<prefix>/<layer>` values, in forward order (fc0, bn0, fc1, ..., out)."""
    found = {k.split("/", 1)[1]: v for k, v in summary.items()
             if k.startswith(f"median_{prefix}/") and isinstance(v, (int, float)) and math.isfinite(v)}
    return dict(sorted(found.items(), key=lambda kv: _layer_order(kv[0])))


def _layer_order(name: str) -> tuple[int, int]:
    if name == "out":
        return (1_000_000, 0)
    digits = "".join(c for c in name if c in "0123456789")
    return (int(digits) if digits else 0, 0 if name.startswith("fc") else 1)
