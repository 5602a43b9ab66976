"""The fix a run's findings propose, without importing torch (the dashboard asks it before launching a proof)."""

from __future__ import annotations

from typing import Any

from core.analysis.findings import findings
from core.experiment.config import ConfigError
from core.store import Store


def proposed_fix(store: Store, run_id: int) -> tuple[str, dict[str, Any]]:
    """The cause and fix of the run's first finding that proposes one (causes come first); ConfigError if none."""
    for finding in findings(store.get_run(run_id)):
        if finding.fix:
            return finding.cause, dict(finding.fix)
    raise ConfigError("run", f"no finding of run {run_id} proposes a fix; `python -m core show {run_id}` lists them")
