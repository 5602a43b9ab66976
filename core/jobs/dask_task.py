"""The task a Dask worker runs: claim a cell of a study (or a group of cells, trained as one population) from the
store and train it.

This module is sent to the workers by value (cloudpickle), so a plain `dask worker` started in the project
folder needs nothing installed but Lossboard's requirements: the task puts the worker's folder on `sys.path`
before it imports `core`. Keep it free of `core` imports at module level.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_STORES: dict[str, Any] = {}  # one Store (engine and pool) per database, for the life of the worker process


def run_cell(url: str, study_id: int, timeout_s: float, max_cells: int = 1) -> list[dict[str, Any]]:
    """Claim a cell of study `study_id` in the store at `url` and train it in this worker, or with `max_cells`
    above 1 up to that many cells that can share a model, trained as one population; empty when no cell could be
    claimed. Returns each cell's run id, its status, the cell's state afterwards and the host."""
    here = os.getcwd()
    if here not in sys.path and os.path.isdir(os.path.join(here, "core")):
        sys.path.insert(0, here)
    import torch  # noqa: PLC0415

    from core.jobs.cells import claim_and_train  # noqa: PLC0415
    from core.store import Store  # noqa: PLC0415

    torch.set_num_threads(1)  # one core per worker thread: start workers with --nthreads 1 --nworkers CORES
    store = _STORES.get(url)
    if store is None:
        store = _STORES[url] = Store(url)
    return [{"run_id": r.run_id, "status": r.status, "state": r.state, "host": r.host}
            for r in claim_and_train(store, study_id=study_id, timeout_s=timeout_s, max_cells=max_cells)]
