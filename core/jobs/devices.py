"""Whether a device a config asks for (cuda, mps) exists on this machine, without importing torch here.

The dashboard's server never imports torch (a contract in pyproject.toml), yet the Studies page must refuse a
study on a device this machine lacks before anything is stored. So the question goes to a fresh interpreter,
which answers with the trainer's own `resolve_device`: about a second, and only for an explicit cuda or mps.
"""

from __future__ import annotations

import subprocess
import sys

from core import PROJECT_ROOT
from core.experiment.config import ConfigError

_PROBE = """
import sys
from core.training.trainer import resolve_device
try:
    resolve_device(sys.argv[1])
except RuntimeError as exc:
    print(exc)
    sys.exit(3)
"""
MISSING = 3  # the probe's exit code for a device that is absent


def check_device(name: str, *, python: str = sys.executable, timeout_s: float = 120.0) -> None:
    """Raise a ConfigError on `device` when `name` is not available here; "auto" and "cpu" always are."""
    if name in ("auto", "cpu"):
        return
    try:
        proc = subprocess.run([python, "-c", _PROBE, name], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError("device", f"could not check whether {name!r} is available: {exc}") from None
    if proc.returncode == MISSING:
        raise ConfigError("device", proc.stdout.strip())
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError("device", f"could not check whether {name!r} is available: {last}")
