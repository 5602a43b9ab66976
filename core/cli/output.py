"""What the command line prints: JSON with NaN and Inf kept as data."""

from __future__ import annotations

import json
import math
from typing import Any, TextIO


def json_safe(value: Any) -> Any:
    """NaN and Inf are data: JSON has no literal for them, so they become the strings "NaN", "Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dump_json(obj: Any, out: TextIO) -> None:
    json.dump(json_safe(obj), out, indent=2, default=str, allow_nan=False)
    out.write("\n")
