"""Lossboard's core: config, data, models, losses, diagnostics, training, the run store and the command line."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
